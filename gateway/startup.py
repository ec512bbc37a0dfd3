"""A start in a few log lines: each device's first open is gathered into one line.

A console restarted by systemd (after a crash, a `kill -9`, a power cut) would otherwise log
a line for every radio, module and sound card as it opens; a technician reading the journal
wants "everything came up" or "all but these", once. The owner of a device (channel, IO
module, audio device) logs its first open as usual, marked with `startup_open(...)`; while the
start is under way, `StartupSummary` holds those records back and logs one line when every
expected device has opened, or when the start window ends, naming what has not. Failures
are never held back: they are logged by their owners as they happen. Outside the daemon
(no summary installed), the marked lines are logged as they are.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

STARTUP_OPEN = "consolegw_startup_open"
"""The LogRecord attribute that marks a device's first open: the device's name."""
STARTUP_DETAIL = "consolegw_startup_detail"
"""What the summary says of that device (its description)."""

START_WINDOW_S = 10.0
"""How long a start may take before the summary names the devices that are not open yet."""


def startup_open(device: str, detail: str) -> dict[str, str]:
    """The `extra=` of a device's first open line: `device` as the summary names it."""
    return {STARTUP_OPEN: device, STARTUP_DETAIL: detail}


class StartupSummary(logging.Filter):
    """Installed on the root logger's handlers for the start of a run."""

    def __init__(self, expected: Iterable[str], logger: logging.Logger) -> None:
        super().__init__()
        self._expected = list(dict.fromkeys(expected))
        self._log = logger
        self._opened: dict[str, str] = {}
        self._level = logging.INFO
        self._handlers: list[logging.Handler] = []
        self.done = not self._expected

    def install(self) -> None:
        if self.done:
            return
        self._handlers = list(logging.getLogger().handlers)
        for handler in self._handlers:
            handler.addFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "consolegw_startup_seen", False):
            return False  # held back already, by this filter on another handler
        device = getattr(record, STARTUP_OPEN, None)
        if self.done or not isinstance(device, str) or device not in self._expected:
            return True
        if device in self._opened:
            return True  # opened again within the window (after a loss): news
        record.consolegw_startup_seen = True
        self._opened[device] = str(getattr(record, STARTUP_DETAIL, "open"))
        self._level = max(self._level, record.levelno)
        if len(self._opened) == len(self._expected):
            self.finish()
        return False

    def uninstall(self) -> None:
        """At the end of the run. (Not in `finish`, which may run inside this filter, before
        the other handlers have seen the record it holds back.)"""
        for handler in self._handlers:
            handler.removeFilter(self)
        self._handlers = []

    def finish(self) -> None:
        """The start is over: the one line; from now on every record passes."""
        if self.done:
            return
        self.done = True
        opened = "; ".join(f"{device}: {detail}" for device, detail in self._opened.items())
        missing = [device for device in self._expected if device not in self._opened]
        total = len(self._expected)
        if not missing:
            self._log.log(self._level, "all %d devices open: %s", total, opened)
            return
        self._log.log(
            max(self._level, logging.WARNING),
            "%d of %d devices open%s; not open yet: %s (each says why in its own line)",
            len(self._opened),
            total,
            f": {opened}" if opened else "",
            ", ".join(missing),
        )
