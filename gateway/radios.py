"""Builds the radio driver a channel's config asks for. Backends are imported lazily,
so a console without USB radios never needs pyusb to work (python-can's pattern)."""

from __future__ import annotations

from drivers.radio import RadioInterface
from gateway.config import Cm108RadioSection, SerialRadioSection


def make_radio(section: SerialRadioSection | Cm108RadioSection) -> RadioInterface:
    if isinstance(section, SerialRadioSection):
        from drivers.serial_radio import SerialRadio

        return SerialRadio(
            url=section.url,
            ptt_lines=section.ptt,
            ptt_invert=section.ptt_invert,
            cos_line=section.cos,
            cos_invert=section.cos_invert,
        )
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
