"""gateway/heap.py on this machine's glibc: memory freed but kept by the allocator goes
back to the system on a trim, and the daemon's trimming task calls it off the loop."""

from __future__ import annotations

import asyncio
import ctypes
import threading

from bench.procfs import vm_rss_kb
from gateway.heap import heap_trimmer, trim_heap_forever


def _rss_kb() -> int:
    import os

    rss = vm_rss_kb(os.getpid())
    assert rss is not None
    return rss


def test_freed_heap_kept_by_glibc_goes_back_on_a_trim() -> None:
    trim = heap_trimmer()
    assert trim is not None  # Debian's glibc has malloc_trim
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    blocks: list[int] = []

    def fragment() -> None:
        # 60 MB of 2 kB blocks in a worker thread's arena, as the audio and recorder threads
        # allocate; every block but the last is freed. The last pins the arena's top, so
        # glibc cannot give the freed memory back on its own.
        for _ in range(30_000):
            p = libc.malloc(2048)
            libc.memset(p, 1, 2048)
            blocks.append(p)
        for p in blocks[:-1]:
            libc.free(p)

    worker = threading.Thread(target=fragment)
    worker.start()
    worker.join()
    kept = _rss_kb()
    trim()
    after = _rss_kb()
    libc.free(blocks[-1])
    assert kept - after > 30_000, (kept, after)  # most of the 60 MB came back


def test_the_daemon_trims_periodically_off_the_event_loop() -> None:
    threads: list[str] = []

    def trim() -> int:
        threads.append(threading.current_thread().name)
        return 1

    async def main() -> None:
        task = asyncio.create_task(trim_heap_forever(trim, every_s=0.05))
        await asyncio.sleep(0.4)
        task.cancel()

    asyncio.run(main())
    assert len(threads) >= 3
    assert threading.main_thread().name not in threads
