"""glibc's allocator set for a daemon that runs for months: few arenas, big blocks mapped.

Measured with bench/soak.py (30 minutes, three 9-minute daemon lives each): with glibc's
defaults the RSS grew 11 to 12 MB an hour while the Python heap stayed flat (tracemalloc)
and SQLite held under 1 MB. glibc gives each thread that allocates its own arena (up to
eight per core; the daemon has a dozen threads: audio callbacks, the outbox and recorder
writers, workers) and, once a large block has been freed, serves blocks of that size from
the arenas instead of mapping them (its mmap threshold rises by itself, up to 32 MB): the
recall snapshots written at each fault (seconds of audio) then leave holes that an arena
returns to the system only from its top. Two arenas and a fixed threshold of 128 kB (big
blocks mapped and unmapped, as before the first free) halved it: 5.2, 6.2 and 6.7 MB an
hour in the same soak (one run each way), the RSS 2 MB lower.

MALLOC_ARENA_MAX or MALLOC_MMAP_THRESHOLD_ in the environment (glibc's own tunables) win:
nothing is set then. On another C library (musl) nothing is done.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
"""mallopt's parameter numbers (glibc's malloc.h)."""

ARENA_MAX = 2
MMAP_THRESHOLD = 128 * 1024

_TUNABLES = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")


def tune_allocator() -> bool:
    """Set the arenas and the mmap threshold; True when done. Call it first, before any
    thread starts (an arena made before stays)."""
    if any(name in os.environ for name in _TUNABLES):
        log.debug("allocator: left as the environment sets it")
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(M_ARENA_MAX, ARENA_MAX)) and bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    log.debug("allocator: %d arenas, blocks of %d bytes and more mapped", ARENA_MAX, MMAP_THRESHOLD)
    return done
