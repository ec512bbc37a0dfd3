"""Stopping on SIGTERM or SIGINT without a deadlock.

A Python signal handler runs in the main thread between two bytecodes, even inside another
run of itself: a second SIGTERM (the kernel's pdeathsig and a parent's, or two Ctrl-C) can
interrupt the first handler while it holds the lock inside threading.Event.set(), and a
handler that calls set() again then waits on that lock for ever (seen: the simulator never
stopping after its demo was killed). So the handler only sets a flag, and the main loop,
which polls, passes it on to the Event the threads wait on."""

from __future__ import annotations

import signal
import threading
from types import FrameType


class SignalStop:
    """Installs SIGTERM and SIGINT handlers that ask `event` to be set by `poll()`."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event
        self.asked = False
        signal.signal(signal.SIGTERM, self._handler)
        signal.signal(signal.SIGINT, self._handler)

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.asked = True  # no lock, no I/O: safe however often and wherever it runs

    def poll(self) -> bool:
        """Whether to stop; sets the event once a signal asked. Call from the main loop."""
        if self.asked and not self.event.is_set():
            self.event.set()
        return self.event.is_set()
