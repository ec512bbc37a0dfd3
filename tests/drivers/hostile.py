"""What the hostile-peer tests watch besides the driver's own answers: anything that escaped.

A driver boundary is total when nothing a peer sends shows up as an uncaught exception in a
thread, an exception handed to the event loop's handler ("Task exception was never
retrieved", "Fatal error: protocol.data_received() call failed"), or a logged traceback.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, settings


@dataclass
class Escapes:
    """What escaped while `watch_escapes` was active."""

    thread_errors: list[str] = field(default_factory=list)
    loop_errors: list[str] = field(default_factory=list)
    tracebacks: list[str] = field(default_factory=list)
    records: list[logging.LogRecord] = field(default_factory=list)

    def check(self) -> None:
        assert not self.thread_errors, f"uncaught in a thread: {self.thread_errors}"
        assert not self.loop_errors, f"handed to the loop's exception handler: {self.loop_errors}"
        assert not self.tracebacks, f"logged with a traceback: {self.tracebacks}"

    def messages(self, logger: str) -> list[str]:
        return [r.getMessage() for r in self.records if r.name == logger]


class _Collector(logging.Handler):
    def __init__(self, escapes: Escapes) -> None:
        super().__init__(logging.DEBUG)
        self._escapes = escapes

    def emit(self, record: logging.LogRecord) -> None:
        self._escapes.records.append(record)
        if record.exc_info is not None and record.exc_info[0] is not None:
            self._escapes.tracebacks.append(f"{record.name}: {record.getMessage()}")


@contextmanager
def watch_escapes(
    loggers: tuple[str, ...] = ("drivers", "gateway", "asyncio"),
) -> Iterator[Escapes]:
    """Collect thread exceptions and log records (with their tracebacks) while active.
    Call `watch_loop` from inside the event loop to collect its exceptions too."""
    escapes = Escapes()
    previous_hook = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        name = args.thread.name if args.thread is not None else "?"
        escapes.thread_errors.append(f"{name}: {args.exc_type.__name__}: {args.exc_value}")

    threading.excepthook = hook
    handler = _Collector(escapes)
    saved: list[tuple[logging.Logger, int]] = []
    for name in loggers:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        logger.addHandler(handler)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
    try:
        yield escapes
    finally:
        threading.excepthook = previous_hook
        for logger, level in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)


def watch_loop(escapes: Escapes) -> None:
    """Record whatever reaches the running loop's exception handler."""

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        escapes.loop_errors.append(f"{context.get('message')}: {context.get('exception')!r}")

    asyncio.get_running_loop().set_exception_handler(handler)


def hostile_settings(max_examples: int) -> settings:
    """Hypothesis settings for a property that runs a real driver against a peer: no deadline
    (a loaded 2-core machine), no example database, a count sized for the whole file."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],  # no slow "explain" phase
    )
