"""`kind = "serial"`: PTT on RTS/DTR, COS on CTS/DSR/CD/RI, over a local port or RFC 2217."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import field_validator

from drivers.radio import RadioInterface
from gateway.radios.base import RadioKind, RadioSectionBase

if TYPE_CHECKING:
    from gateway.config import Config


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


def _symlinks(folder: str) -> dict[str, list[str]]:
    """realpath -> the stable names udev made for it (/dev/serial/by-id/...)."""
    names: dict[str, list[str]] = {}
    with contextlib.suppress(OSError):
        for entry in sorted(Path(folder).iterdir()):
            names.setdefault(os.path.realpath(entry), []).append(str(entry))
    return names


def list_serial_ports(config: Config | None, notes: list[str]) -> list[dict[str, Any]]:
    """Local serial ports with their stable names, and the configured ports that are missing
    (diag's inventory; pyserial is imported only here)."""
    from serial.tools import list_ports

    by_id = _symlinks("/dev/serial/by-id")
    by_path = _symlinks("/dev/serial/by-path")
    used: dict[str, list[str]] = {}
    configured: dict[str, list[str]] = {}
    for channel_id, section in (config.channels if config else {}).items():
        if isinstance(section.radio, SerialRadioSection):
            url = section.radio.url
            configured.setdefault(url, []).append(channel_id)
            if "://" not in url:
                used.setdefault(os.path.realpath(url), []).append(channel_id)
    ports: list[dict[str, Any]] = []
    seen: set[str] = set()
    for port in sorted(list_ports.comports(), key=lambda p: p.device):
        real = os.path.realpath(port.device)
        seen.add(real)
        ports.append(
            {
                "device": port.device,
                "by_id": by_id.get(real, []),
                "by_path": by_path.get(real, []),
                "description": port.description if port.description != "n/a" else "",
                "usb": f"{port.vid:04x}:{port.pid:04x}" if port.vid is not None else None,
                "usb_location": port.location,
                "serial_number": port.serial_number,
                "channels": used.get(real, []),
                "present": True,
            }
        )
    for url, channels in sorted(configured.items()):
        remote = "://" in url
        if not remote and os.path.realpath(url) in seen:
            continue
        ports.append(
            {
                "device": url,
                "by_id": [],
                "by_path": [],
                "description": "remote port (RFC 2217)" if remote else "NOT FOUND on this machine",
                "usb": None,
                "usb_location": None,
                "serial_number": None,
                "channels": channels,
                "present": remote,
            }
        )
    return ports


KIND = RadioKind(
    name="serial",
    section=SerialRadioSection,
    factory=_radio,
    has_cos=lambda section: section.cos is not None,
    claims=lambda section: ("url", f"serial port {_port(section)}"),
    inventory=list_serial_ports,
    inventory_key="serial_ports",
)
