"""`kind = "cm108"`: a CM108/CM119 USB sound chip, PTT on a GPIO, COS on a HID input bit."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from drivers.radio import RadioInterface
from gateway.radios.base import RadioKind, RadioSectionBase


class Cm108RadioSection(RadioSectionBase):
    kind: Literal["cm108"]
    vendor_id: int = Field(default=0x0D8C, ge=0, le=0xFFFF)
    product_id: int | None = Field(default=None, ge=0, le=0xFFFF)
    """Needed when vendor_id is not C-Media's (whose CM1xx product ids are known)."""
    serial: str | None = Field(default=None, min_length=1)
    port_path: str | None = Field(default=None, pattern=r"^\d+-\d+(\.\d+)*$")
    """USB port path as in /sys/bus/usb/devices, e.g. 1-1.4: stable across reboots."""
    ptt_gpio: int = Field(default=3, ge=1, le=8)
    ptt_invert: bool = False
    cos_bit: int = 1
    """HID input bit carrying COS: 0 VOLUP, 1 VOLDN (most boards), 4 HOOK, 8-15 GPIO1-8."""
    cos_invert: bool = False
    ptt_sense_gpio: int | None = Field(default=None, ge=1, le=8)
    """A GPIO wired (as input) to the keyed line: gives a true PTT read-back."""
    ptt_sense_invert: bool = False
    usb_backend: str | None = Field(default=None, pattern=r"^sim://[^:/]+:\d+$")
    """Simulator only: sim://host:port forwards USB transfers to hw_sim."""

    @field_validator("cos_bit")
    @classmethod
    def _cos_bit(cls, value: int) -> int:
        if value not in (0, 1, 4, *range(8, 16)):
            raise ValueError("must be 0 (VOLUP), 1 (VOLDN), 4 (HOOK) or 8-15 (GPIO1-8)")
        return value

    @model_validator(mode="after")
    def _sense_differs(self) -> Cm108RadioSection:
        # The driver refuses the same combinations: refused here, check-config tells.
        if self.ptt_sense_gpio == self.ptt_gpio:
            raise ValueError("ptt_sense_gpio must differ from ptt_gpio")
        if self.product_id is None and self.vendor_id != 0x0D8C:
            raise ValueError("product_id is required when vendor_id is not C-Media's (0x0d8c)")
        cos_gpio = self.cos_bit - 7 if self.cos_bit >= 8 else None
        if cos_gpio == self.ptt_gpio:
            raise ValueError(f"cos_bit {self.cos_bit} is GPIO{cos_gpio}, the PTT output")
        if cos_gpio is not None and cos_gpio == self.ptt_sense_gpio:
            raise ValueError(f"cos_bit {self.cos_bit} is GPIO{cos_gpio}, the ptt_sense_gpio")
        return self


def _radio(section: Cm108RadioSection) -> RadioInterface:
    from drivers.cm108 import CM108Radio

    backend = None
    if section.usb_backend is not None:
        # USB over loopback (hw_sim's simulated CM108s): a transport, like rfc2217://.
        from drivers.usb_loopback import RemoteBackend

        backend = RemoteBackend.from_url(section.usb_backend)
    return CM108Radio(
        vendor_id=section.vendor_id,
        product_id=section.product_id,
        serial_number=section.serial,
        port_path=section.port_path,
        ptt_gpio=section.ptt_gpio,
        ptt_invert=section.ptt_invert,
        cos_bit=section.cos_bit,
        cos_invert=section.cos_invert,
        ptt_sense_gpio=section.ptt_sense_gpio,
        ptt_sense_invert=section.ptt_sense_invert,
        backend=backend,
    )


KIND = RadioKind(
    name="cm108",
    section=Cm108RadioSection,
    factory=_radio,
    has_cos=lambda section: True,  # a HID input bit is always there to read
)
