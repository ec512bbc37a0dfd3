"""The interface every radio-line driver (serial RTS/DTR, CM108 GPIO) offers the gateway.

A radio interface keys a transmitter (PTT) and reports the receiver's carrier (COS).
Drivers report raw levels with polarity already applied; debouncing, time-out timers and
fault logic belong to the gateway's channel monitor, which is the same for every backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class RadioLines:
    """One reading of a radio interface."""

    cos: bool | None
    """Carrier present (polarity applied, not debounced); None when the hardware has not
    reported it: an RFC 2217 server that has sent no modem state yet, or no COS line."""
    ptt: bool | None
    """PTT as read back from the hardware, or None where the hardware cannot read it back."""


class RadioInterface(Protocol):
    """A radio interface. All methods may be called from one asyncio task at a time."""

    @property
    def description(self) -> str:
        """Where the device is, for logs and diagnostics (URL, USB path)."""
        ...

    @property
    def can_read_back_ptt(self) -> bool:
        """True when `read_lines().ptt` reflects the hardware rather than our last command."""
        ...

    async def open(self) -> None:
        """Open the device and drive PTT to the unkeyed level before anything else.

        Raises DeviceUnavailable when it cannot be opened.
        """
        ...

    async def close(self) -> None:
        """Unkey (best effort) and close. Never raises; safe to call twice."""
        ...

    async def set_ptt(self, keyed: bool) -> None:
        """Drive the PTT output. Raises DeviceLost when the device is gone."""
        ...

    async def read_lines(self) -> RadioLines:
        """Read COS and the PTT read-back. Raises DeviceLost when the device is gone.

        COS is None until the hardware has reported the line: never a guessed `False`.
        """
        ...
