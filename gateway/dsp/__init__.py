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
    TtyRetract,
    final_text,
)
from gateway.dsp.tty_baudot import SHIFT_CONVENTIONS, ShiftConvention

__all__ = [
    "BAUD_45",
    "BAUD_50",
    "SHIFT_CONVENTIONS",
    "ShiftConvention",
    "TtyChar",
    "TtyDecoder",
    "TtyDetected",
    "TtyEncoder",
    "TtyEnded",
    "TtyEvent",
    "TtyRetract",
    "final_text",
]
