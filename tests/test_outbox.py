"""The durable outbox on a real SQLite file."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.outbox import Outbox
from tests.mqtt_tools import ROOT


def make(path: Path, max_events: int = 1000, fsync: bool = False) -> Outbox:
    box = Outbox(path=path, max_events=max_events, fsync=fsync)
    box.open()
    return box


async def test_append_commits_and_fetches_in_order(tmp_path: Path) -> None:
    box = make(tmp_path / "o.db")
    seqs = [box.append("t/a", lambda s: f"e{s}".encode()) for _ in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    await box.flushed()
    rows = box.fetch_after(0, 100)
    assert [r.seq for r in rows] == seqs
    assert rows[2].payload == b"e3"
    assert [r.seq for r in box.fetch_after(3, 100)] == [4, 5]
    assert box.depth == 5
    box.close()


async def test_ack_deletes_and_duplicates_are_harmless(tmp_path: Path) -> None:
    box = make(tmp_path / "o.db")
    for _ in range(4):
        box.append("t", lambda s: b"x")
    await box.flushed()
    box.ack(2)
    box.ack(2)  # a resend after reconnect can be acknowledged twice
    box.ack(3)
    await box.flushed()
    assert [r.seq for r in box.fetch_after(0, 10)] == [1, 4]
    assert box.depth == 2
    box.close()


async def test_seq_and_rows_survive_reopen(tmp_path: Path) -> None:
    box = make(tmp_path / "o.db")
    for _ in range(3):
        box.append("t", lambda s: str(s).encode())
    await box.flushed()
    box.ack(1)
    await box.flushed()
    # Simulate a crash: no close(), just a new process opening the same file.
    again = make(tmp_path / "o.db")
    assert [r.seq for r in again.fetch_after(0, 10)] == [2, 3]
    assert again.append("t", lambda s: b"y") == 4
    assert again.depth == 2
    again.close()


CRASHER = """
import asyncio, sys
from pathlib import Path
from gateway.outbox import Outbox

async def main():
    box = Outbox(path=Path(sys.argv[1]), max_events=10**6, fsync=True)
    box.open()
    for _ in range(20):
        box.append("t", lambda s: str(s).encode())
    await box.flushed()
    print("committed", flush=True)  # from here on the parent may kill us at any moment
    while True:
        for _ in range(50):
            box.append("t", lambda s: str(s).encode())
        await asyncio.sleep(0)

asyncio.run(main())
"""


def test_sigkill_mid_stream_leaves_contiguous_seqs(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASHER, str(path)], stdout=subprocess.PIPE, cwd=ROOT
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"committed"
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    async def reopen() -> None:
        again = make(path)
        rows = again.fetch_after(0, 10**7)
        assert len(rows) >= 20, "what the crasher saw committed is still there"
        assert [r.seq for r in rows] == list(range(1, len(rows) + 1)), "no gap, no duplicate"
        assert all(r.payload == str(r.seq).encode() for r in rows)
        assert again.last_seq == len(rows), "seq continues after the last committed event"
        assert again.append("t", lambda s: b"next") == len(rows) + 1
        again.close()

    asyncio.run(reopen())


async def test_session_counter_persists(tmp_path: Path) -> None:
    box = make(tmp_path / "o.db")
    assert await box.next_session() == 1
    assert await box.next_session() == 2
    box.close()
    assert await make(tmp_path / "o.db").next_session() == 3


async def test_bound_drops_oldest_plain_events_but_keeps_alarms(tmp_path: Path) -> None:
    changes: list[bool] = []
    box = make(tmp_path / "o.db", max_events=100)
    box.on_full_change = changes.append
    for i in range(150):
        box.append("t", lambda s: b"x", keep=(i % 10 == 0))
    await box.flushed()
    rows = box.fetch_after(0, 1000)
    kept = {r.seq for r in rows}
    assert len(rows) == 100
    assert all(seq in kept for seq in range(1, 151, 10)), "alarm events are never dropped"
    assert box.dropped == 50 and box.full and changes == [True]
    # Alarms arriving at a full outbox push out plain events, then go in beyond the bound.
    for _ in range(120):
        box.append("t", lambda s: b"alarm", keep=True)
    await box.flushed()
    assert box.depth == 15 + 120
    assert box.dropped == 50 + 85
    for row in box.fetch_after(0, 1000):
        box.ack(row.seq)
    await box.flushed()
    assert box.depth == 0 and not box.full and changes == [True, False]
    box.close()
    assert make(tmp_path / "o.db", max_events=100).dropped == 135


async def test_wal_mode_and_wait_for_rows(tmp_path: Path) -> None:
    box = make(tmp_path / "o.db")
    waiter = asyncio.create_task(box.wait_for_rows())
    await box.flushed()
    assert not waiter.done()
    box.append("t", lambda s: b"x")
    await asyncio.wait_for(waiter, 1)
    mode = sqlite3.connect(tmp_path / "o.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    box.close()


def test_rejects_nonsense_bound(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_events"):
        Outbox(path=tmp_path / "o.db", max_events=0)


def _sqlite_memory_used() -> int:
    """SQLite's own count of the bytes it holds, in this process (its page caches)."""
    lib = ctypes.CDLL(ctypes.util.find_library("sqlite3") or "libsqlite3.so.0")
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    return int(lib.sqlite3_memory_used())


async def test_a_long_life_holds_a_bounded_page_cache(tmp_path: Path) -> None:
    """Months of events turn over every page of the file; what SQLite keeps in memory for
    the writer and the reader stays at their small caches (the default is 2 MB each)."""
    box = make(tmp_path / "o.db", max_events=20_000)
    before = _sqlite_memory_used()
    payload = bytes(range(256)) * 4  # 1 kB: 8 MB of rows go through both connections
    seq = 0
    for _ in range(8):
        for _ in range(1000):
            seq = box.append("t", lambda s: payload)
        await box.flushed()
        rows = box.fetch_after(seq - 1000, 1000)
        assert len(rows) == 1000
        for row in rows:
            box.ack(row.seq)
        await box.flushed()
    grown = _sqlite_memory_used() - before
    assert box.depth == 0
    box.close()
    # Measured: 2,780 kB with SQLite's default caches, 360 kB with ours.
    assert grown < 1024 * 1024, f"SQLite holds {grown // 1024} kB more"
