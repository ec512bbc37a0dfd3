"""Durable outbox: every event is committed to SQLite before it is published, and deleted
only once the broker has acknowledged it (PUBACK).

A writer thread owns all writes. The event loop only appends to a list, so an fsync (or a
slow disk) never delays a PTT command or a time-out timer. Everything appended while the
writer was busy goes into its next transaction (group commit), so an fsync per commit stays
affordable at thousands of events per second. Rows become visible to the publisher only
after their commit, so a crash can lose only events nobody has seen, and the sequence number
(kept in the same transaction) continues where the last commit left off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    keep INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('seq', 0), ('session', 0), ('dropped', 0);
"""
_RETRY_S = 1.0
_SESSION_COMMIT_S = 2.0


CACHE_KIB = 256
"""Page cache per connection (SQLite's default is 2,000 KiB): the rows in flight are the
newest pages, and the rest is in the kernel's file cache anyway."""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    seq: int
    topic: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class _Pending:
    seq: int
    topic: str
    payload: bytes
    keep: bool


@dataclass(frozen=True, slots=True)
class _Commit:
    last_seq: int
    dropped_total: int
    depth: int


class Outbox:
    """SQLite-backed queue of events awaiting PUBACK. Call from one event loop only."""

    def __init__(self, *, path: Path, max_events: int, fsync: bool = True) -> None:
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self._path = path
        self._max_events = max_events
        self._fsync = fsync
        self._reader: sqlite3.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._cond = threading.Condition()
        # Shared with the writer thread, under _cond:
        self._pending: list[_Pending] = []
        self._acked: list[int] = []
        self._session_update: int | None = None  # a session number to commit
        self._stopping = False
        self._busy = False  # the writer holds a batch it has not committed yet
        # Event-loop side:
        self._seq = 0
        self._committed_seq = 0
        self._depth = 0
        self._dropped = 0
        self._session = 0
        self._full = False
        self._new_rows = asyncio.Event()
        self._progress = asyncio.Event()
        self.on_full_change: Callable[[bool], None] | None = None
        """Called (after the commit that changed it) when the outbox fills or drains."""

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> None:
        """Open (creating if needed) and start the writer. Call from the event loop."""
        self._loop = asyncio.get_running_loop()
        self._path.parent.mkdir(parents=True, exist_ok=True)
        writer = self._connect()
        writer.executescript(_SCHEMA)
        self._seq = self._committed_seq = _meta(writer, "seq")
        self._dropped = _meta(writer, "dropped")
        self._session = _meta(writer, "session")
        (self._depth,) = writer.execute("SELECT COUNT(*) FROM outbox").fetchone()
        self._full = self._depth >= self._max_events
        self._reader = self._connect()
        self._stopping = False
        self._thread = threading.Thread(
            target=self._writer_main,
            args=(writer, self._depth, self._dropped),
            name="outbox-writer",
            daemon=True,
        )
        self._thread.start()
        if self._depth:
            log.info("outbox holds %d unpublished events; sending them first", self._depth)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={'FULL' if self._fsync else 'NORMAL'}")
        db.execute("PRAGMA busy_timeout=5000")
        # The connections live as long as the daemon: SQLite's default 2 MB page cache each
        # fills over hours as the file's pages turn over, and reads as memory growth.
        db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        return db

    def close(self) -> None:
        """Commit what is pending, stop the writer and close. Blocks (a shutdown step)."""
        if self._thread is None:
            return
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join()
        self._thread = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    # -- properties ------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Committed events not yet acknowledged by the broker."""
        return self._depth

    @property
    def full(self) -> bool:
        return self._full

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def max_events(self) -> int:
        return self._max_events

    @property
    def last_seq(self) -> int:
        return self._seq

    @property
    def session(self) -> int:
        """The last committed connection counter (0 before the first connection)."""
        return self._session

    # -- writing ---------------------------------------------------------------------------

    async def next_session(self) -> int:
        """Increment and return the persistent connection counter, once it is committed
        (by the writer thread, so its fsync stays off the event loop). If the disk cannot
        take it in time, the number is returned anyway: connecting matters more."""
        self._session += 1
        with self._cond:
            self._session_update = self._session
            self._cond.notify()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_SESSION_COMMIT_S):
                await self.flushed()
        return self._session

    def append(self, topic: str, build: Callable[[int], bytes], *, keep: bool = False) -> int:
        """Queue an event; `build(seq)` makes its payload. Returns the sequence number.

        `keep` marks events never dropped when the outbox is full (alarms, faults).
        """
        self._seq += 1
        item = _Pending(self._seq, topic, build(self._seq), keep)
        with self._cond:
            self._pending.append(item)
            self._cond.notify()
        return self._seq

    def ack(self, seq: int) -> None:
        """The broker acknowledged `seq`; delete it in the next commit."""
        with self._cond:
            self._acked.append(seq)
            self._cond.notify()

    async def flushed(self) -> None:
        """Wait until everything appended or acknowledged so far is committed."""
        target = self._seq
        while True:
            self._progress.clear()  # before the check: a commit landing after it wakes us
            with self._cond:
                idle = not self._has_work() and not self._busy
            if self._committed_seq >= target and idle:
                return
            await self._progress.wait()

    # -- the writer thread -----------------------------------------------------------------

    def _has_work(self) -> bool:
        """Anything queued for the writer (call with _cond held)."""
        return bool(self._pending or self._acked or self._session_update is not None)

    def _writer_main(self, db: sqlite3.Connection, depth: int, dropped: int) -> None:
        failing = False
        while True:
            with self._cond:
                while not self._has_work() and not self._stopping:
                    self._cond.wait()
                pending, self._pending = self._pending, []
                acked, self._acked = self._acked, []
                session, self._session_update = self._session_update, None
                stopping = self._stopping
                work = bool(pending or acked or session is not None)
                self._busy = work
            if work:
                try:
                    commit = self._write(
                        db, pending, acked, session=session, depth=depth, dropped_total=dropped
                    )
                except sqlite3.Error as exc:
                    # Disk full or I/O error: keep everything in memory and try again.
                    if not failing:
                        log.error("OUTBOX CANNOT WRITE %s: %s; retrying", self._path, exc)
                        failing = True
                    with self._cond:
                        self._pending[:0] = pending
                        self._acked[:0] = acked
                        if self._session_update is None:
                            self._session_update = session
                        self._busy = False
                        self._cond.wait(_RETRY_S)
                    continue
                if failing:
                    log.warning("outbox writes again")
                    failing = False
                depth, dropped = commit.depth, commit.dropped_total
                with self._cond:
                    self._busy = False
                self._notify(commit)
            if stopping:
                with self._cond:
                    if not self._has_work():
                        break
        db.close()

    def _write(
        self,
        db: sqlite3.Connection,
        pending: list[_Pending],
        acked: list[int],
        *,
        session: int | None,
        depth: int,
        dropped_total: int,
    ) -> _Commit:
        db.execute("BEGIN IMMEDIATE")
        try:
            deleted = inserted = dropped = 0
            if acked:
                # rowcount sums over executemany; a seq acknowledged twice deletes once.
                deleted = db.executemany(
                    "DELETE FROM outbox WHERE seq = ?", [(s,) for s in acked]
                ).rowcount
            if pending:
                inserted = db.executemany(
                    "INSERT INTO outbox (seq, topic, payload, keep) VALUES (?, ?, ?, ?)",
                    [(p.seq, p.topic, p.payload, int(p.keep)) for p in pending],
                ).rowcount
                db.execute("UPDATE meta SET value = ? WHERE key = 'seq'", (pending[-1].seq,))
            if session is not None:
                db.execute("UPDATE meta SET value = ? WHERE key = 'session'", (session,))
            depth += inserted - deleted
            excess = depth - self._max_events
            if excess > 0:
                # Drop the oldest droppable events beyond the bound; alarms and faults stay.
                dropped = max(
                    db.execute(
                        "DELETE FROM outbox WHERE seq IN "
                        "(SELECT seq FROM outbox WHERE keep = 0 ORDER BY seq LIMIT ?)",
                        (excess,),
                    ).rowcount,
                    0,
                )
                if dropped:
                    dropped_total += dropped
                    db.execute("UPDATE meta SET value = ? WHERE key = 'dropped'", (dropped_total,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        last = pending[-1].seq if pending else 0
        return _Commit(last, dropped_total, depth - dropped)

    def _notify(self, commit: _Commit) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop stopped: nothing waits any more
            loop.call_soon_threadsafe(self._on_commit, commit)

    # -- back on the event loop ------------------------------------------------------------

    def _on_commit(self, commit: _Commit) -> None:
        self._depth = commit.depth
        self._dropped = commit.dropped_total
        if commit.last_seq:
            self._committed_seq = max(self._committed_seq, commit.last_seq)
            self._new_rows.set()
        self._progress.set()
        full = self._depth >= self._max_events
        if full != self._full:
            self._full = full
            if full:
                log.error(
                    "OUTBOX FULL: %d events wait for the broker; oldest non-alarm events are "
                    "now dropped (alarm and fault events are kept)",
                    self._depth,
                )
            else:
                log.warning(
                    "outbox below its bound again (%d events); %d non-alarm events were dropped",
                    self._depth,
                    self._dropped,
                )
            if self.on_full_change is not None:
                self.on_full_change(full)

    # -- reading ---------------------------------------------------------------------------

    def fetch_after(self, seq: int, limit: int) -> list[OutboxRow]:
        """Committed events with a sequence number above `seq`, oldest first."""
        rows = self._require_reader().execute(
            "SELECT seq, topic, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, limit),
        )
        return [OutboxRow(s, t, bytes(p)) for s, t, p in rows]

    async def wait_for_rows(self) -> None:
        """Wait until a commit adds rows (returns at once if one did since the last call)."""
        await self._new_rows.wait()
        self._new_rows.clear()

    async def wait_empty(self) -> None:
        """Wait until every committed event has been acknowledged and nothing is pending."""
        while True:
            await self.flushed()
            self._progress.clear()
            if self._depth == 0:
                return
            await self._progress.wait()

    def _require_reader(self) -> sqlite3.Connection:
        if self._reader is None:
            raise RuntimeError("outbox is not open")
        return self._reader


def _meta(db: sqlite3.Connection, key: str) -> int:
    (value,) = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return int(value)
