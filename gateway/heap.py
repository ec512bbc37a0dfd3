"""Giving freed heap back to the system, on glibc.

Measured in a 30-minute soak (bench/soak.py): the daemon's RSS crept by 7 to 13 MB an hour
with the Python heap flat, and `malloc_trim(0)` called into the running daemon took it back
to its level after warm-up. The creep was memory already freed, kept by glibc's allocator
(the audio, recorder and outbox threads each free into arenas that it returns to the
system only from their top). So the daemon trims once a minute: RSS then shows what it
uses, and a technician watching it for a leak sees a flat line. A trim takes about 5 ms
(37 ms after heavy fragmentation), in a worker thread. Without malloc_trim (musl) nothing
is done.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

TRIM_EVERY_S = 60.0


def heap_trimmer() -> Callable[[], int] | None:
    """glibc's malloc_trim(0), or None where the C library has none."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def call() -> int:
        return int(trim(0))

    return call


async def trim_heap_forever(trim: Callable[[], int], every_s: float = TRIM_EVERY_S) -> None:
    """Trim every `every_s`, in a worker thread (it walks every arena: a few ms that the
    event loop must not wait on)."""
    while True:
        await asyncio.sleep(every_s)
        await asyncio.to_thread(trim)
