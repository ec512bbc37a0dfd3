"""Signal processing for consolegw: the TTY/TDD modem (numpy only)."""

from gateway.dsp.tty import (
    BAUD_45,
    BAUD_50,
    TtyChar,
    TtyDecoder,
    TtyDetected,
    TtyEncoder,
    TtyEnded,
    TtyEvent,
)

__all__ = [
    "BAUD_45",
    "BAUD_50",
    "TtyChar",
    "TtyDecoder",
    "TtyDetected",
    "TtyEncoder",
    "TtyEnded",
    "TtyEvent",
]
