"""`kind = "cm108"`: a CM108/CM119 USB sound chip, PTT on a GPIO, COS on a HID input bit."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from drivers.radio import RadioInterface
from gateway.radios.base import RadioKind, RadioSectionBase

if TYPE_CHECKING:
    from gateway.config import Config


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


def _usb_string(dev: Any, attribute: str) -> str | None:
    try:
        value = getattr(dev, attribute)
    except Exception:  # unreadable without permission; not worth failing the listing
        return None
    return str(value) if value else None


def _has_hid_interface(dev: Any) -> bool:
    from drivers.cm108 import HID_INTERFACE

    try:
        for configuration in dev:
            for interface in configuration:
                if interface.bInterfaceNumber == HID_INTERFACE and interface.bInterfaceClass == 3:
                    return True
    except Exception:
        return False
    return False


def _cm108_sections(config: Config | None) -> dict[str, Cm108RadioSection]:
    return {
        channel_id: section.radio
        for channel_id, section in (config.channels if config else {}).items()
        if isinstance(section.radio, Cm108RadioSection)
    }


def list_usb_interfaces(config: Config | None, notes: list[str]) -> list[dict[str, Any]]:
    """CM108-family USB devices (C-Media and any vendor/product the config names), from
    libusb and from every simulator backend the config uses (diag's inventory; pyusb is
    imported only here)."""
    import usb.core
    import usb.util

    from drivers.cm108 import C_MEDIA_VENDOR_ID, KNOWN_PRODUCT_IDS

    sections = _cm108_sections(config)
    backends: list[tuple[str, Any]] = [("libusb", None)]
    for url in sorted({s.usb_backend for s in sections.values() if s.usb_backend}):
        from drivers.usb_loopback import RemoteBackend

        backends.append((url, RemoteBackend.from_url(url)))
    vendors = {C_MEDIA_VENDOR_ID} | {s.vendor_id for s in sections.values()}
    found: list[dict[str, Any]] = []
    for name, backend in backends:
        try:
            devices = list(usb.core.find(find_all=True, backend=backend))
        except usb.core.NoBackendError:
            notes.append("USB: libusb not found, real USB devices not listed (libusb-1.0-0)")
            continue
        except (usb.core.USBError, OSError, ValueError) as exc:
            notes.append(f"USB ({name}): cannot list devices: {exc}")
            devices = []
        for dev in devices:
            if dev.idVendor not in vendors:
                continue
            ports = getattr(dev, "port_numbers", None)
            path = f"{dev.bus}-{'.'.join(str(p) for p in ports)}" if ports else None
            serial = _usb_string(dev, "serial_number")
            entry = {
                "backend": name,
                "usb": f"{dev.idVendor:04x}:{dev.idProduct:04x}",
                "model": KNOWN_PRODUCT_IDS.get(dev.idProduct, "unknown C-Media device")
                if dev.idVendor == C_MEDIA_VENDOR_ID
                else "configured id",
                "port_path": path,
                "serial_number": serial,
                "product": _usb_string(dev, "product"),
                "hid_interface": _has_hid_interface(dev),
                "channels": [
                    channel_id
                    for channel_id, s in sections.items()
                    if _usb_matches(s, dev.idVendor, dev.idProduct, serial, path, name)
                ],
            }
            with contextlib.suppress(Exception):
                usb.util.dispose_resources(dev)
            found.append(entry)
        if backend is not None:
            with contextlib.suppress(Exception):
                backend.close()
    for channel_id in sections:
        if not any(channel_id in entry["channels"] for entry in found):
            notes.append(f"USB: channel {channel_id}: no matching CM108 interface found")
    return found


def _usb_matches(  # noqa: PLR0917 - one USB device's identity against one config section
    section: Cm108RadioSection,
    vendor: int,
    product: int,
    serial: str | None,
    path: str | None,
    backend: str,
) -> bool:
    from drivers.cm108 import KNOWN_PRODUCT_IDS

    if (section.usb_backend or "libusb") != backend or vendor != section.vendor_id:
        return False
    if section.product_id is not None and product != section.product_id:
        return False
    if section.product_id is None and product not in KNOWN_PRODUCT_IDS:
        return False
    if section.serial is not None and serial != section.serial:
        return False
    return section.port_path is None or path == section.port_path


KIND = RadioKind(
    name="cm108",
    section=Cm108RadioSection,
    factory=_radio,
    has_cos=lambda section: True,  # a HID input bit is always there to read
    inventory=list_usb_interfaces,
    inventory_key="usb_interfaces",
)
