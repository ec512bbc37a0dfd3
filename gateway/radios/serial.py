"""`kind = "serial"`: PTT on RTS/DTR, COS on CTS/DSR/CD/RI, over a local port or RFC 2217."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import field_validator

from drivers.radio import RadioInterface
from gateway.radios.base import RadioKind, RadioSectionBase


class SerialRadioSection(RadioSectionBase):
    kind: Literal["serial"]
    url: str
    """Device path, /dev/serial/by-id/... name, or rfc2217://host:port."""
    ptt: tuple[Literal["rts", "dtr"], ...] = ("rts",)
    ptt_invert: bool = False
    cos: Literal["cts", "dsr", "cd", "ri"] | None = "cts"
    cos_invert: bool = False

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.strip() or value != value.strip() or "\0" in value:
            raise ValueError("must be a device path or URL without spaces around it")
        return value

    @field_validator("ptt")
    @classmethod
    def _ptt_lines(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or len(set(value)) != len(value):
            raise ValueError('must name "rts", "dtr" or both, once each')
        return value


def _radio(section: SerialRadioSection) -> RadioInterface:
    from drivers.serial_radio import SerialRadio

    return SerialRadio(
        url=section.url,
        ptt_lines=section.ptt,
        ptt_invert=section.ptt_invert,
        cos_line=section.cos,
        cos_invert=section.cos_invert,
    )


def _port(section: SerialRadioSection) -> str:
    """One key for the spellings of one port: by-id links resolved, host names folded."""
    url = section.url
    if "://" in url:
        parts = urlsplit(url)
        return f"{parts.scheme.lower()}://{(parts.hostname or '').lower()}:{parts.port}"
    try:
        return str(Path(url).resolve())
    except (OSError, RuntimeError, ValueError):
        return url


KIND = RadioKind(
    name="serial",
    section=SerialRadioSection,
    factory=_radio,
    has_cos=lambda section: section.cos is not None,
    claims=lambda section: ("url", f"serial port {_port(section)}"),
)
