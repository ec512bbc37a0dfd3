"""Durable outbox: every event is committed to SQLite before it is published, and deleted
only once the broker has acknowledged it (PUBACK).

Events appended during one event-loop tick are committed together (group commit), so an
fsync per commit stays affordable at thousands of events per second. Nothing is handed to
the publisher before its commit, so a crash can lose only events no one has seen, and the
sequence number (kept in the same transaction) continues where the last commit left it.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
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


@dataclass(frozen=True, slots=True)
class OutboxRow:
    seq: int
    topic: str
    payload: bytes


@dataclass(slots=True)
class _Pending:
    seq: int
    topic: str
    payload: bytes
    keep: bool


class Outbox:
    """SQLite-backed queue of events awaiting PUBACK. Use from one event loop only."""

    def __init__(self, *, path: Path, max_events: int, fsync: bool = True) -> None:
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self._path = path
        self._max_events = max_events
        self._fsync = fsync
        self._db: sqlite3.Connection | None = None
        self._seq = 0
        self._depth = 0
        self._dropped = 0
        self._pending: list[_Pending] = []
        self._acked: list[int] = []
        self._flush_scheduled = False
        self._new_rows = asyncio.Event()
        self._empty = asyncio.Event()
        self._full = False
        self.on_full_change: Callable[[bool], None] | None = None
        """Called (after the commit that changed it) when the outbox fills or drains."""

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self._path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={'FULL' if self._fsync else 'NORMAL'}")
        db.executescript(_SCHEMA)
        self._db = db
        self._seq = self._meta("seq")
        self._dropped = self._meta("dropped")
        (self._depth,) = db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        self._full = self._depth >= self._max_events
        if self._depth:
            log.info("outbox holds %d unpublished events; sending them first", self._depth)

    def close(self) -> None:
        if self._db is None:
            return
        self.flush()
        self._db.close()
        self._db = None

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

    # -- writing ---------------------------------------------------------------------------

    def next_session(self) -> int:
        """Increment and return the persistent connection counter (committed at once)."""
        db = self._require_db()
        (session,) = db.execute(
            "UPDATE meta SET value = value + 1 WHERE key = 'session' RETURNING value"
        ).fetchone()
        return int(session)

    def append(self, topic: str, build: Callable[[int], bytes], *, keep: bool = False) -> int:
        """Queue an event; `build(seq)` makes its payload. Returns the sequence number.

        The commit happens on the next loop iteration together with everything else
        appended meanwhile. `keep` marks events never dropped when the outbox is full
        (alarms, faults).
        """
        self._seq += 1
        self._pending.append(_Pending(self._seq, topic, build(self._seq), keep))
        self._schedule_flush()
        return self._seq

    def ack(self, seq: int) -> None:
        """The broker acknowledged `seq`; delete it at the next commit."""
        self._acked.append(seq)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Commit pending appends and acks in one transaction."""
        self._flush_scheduled = False
        if self._db is None or (not self._pending and not self._acked):
            return
        pending, self._pending = self._pending, []
        acked, self._acked = self._acked, []
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            deleted = inserted = 0
            if acked:
                # rowcount sums over executemany; a seq acked twice deletes once.
                deleted = db.executemany(
                    "DELETE FROM outbox WHERE seq = ?", [(s,) for s in acked]
                ).rowcount
            if pending:
                inserted = db.executemany(
                    "INSERT INTO outbox (seq, topic, payload, keep) VALUES (?, ?, ?, ?)",
                    [(p.seq, p.topic, p.payload, int(p.keep)) for p in pending],
                ).rowcount
                db.execute("UPDATE meta SET value = ? WHERE key = 'seq'", (self._seq,))
            depth = self._depth + inserted - deleted
            dropped = self._enforce_bound(db, depth)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._depth = depth - dropped
        if self._depth == 0:
            self._empty.set()
        else:
            self._empty.clear()
        if pending:
            self._new_rows.set()
        self._update_full()

    def _enforce_bound(self, db: sqlite3.Connection, depth: int) -> int:
        # Drop the oldest droppable events beyond the bound; alarm/fault events stay.
        excess = depth - self._max_events
        if excess <= 0:
            return 0
        cursor = db.execute(
            "DELETE FROM outbox WHERE seq IN "
            "(SELECT seq FROM outbox WHERE keep = 0 ORDER BY seq LIMIT ?)",
            (excess,),
        )
        dropped = max(cursor.rowcount, 0)
        if dropped:
            self._dropped += dropped
            db.execute("UPDATE meta SET value = ? WHERE key = 'dropped'", (self._dropped,))
        return dropped

    def _update_full(self) -> None:
        full = self._depth >= self._max_events
        if full == self._full:
            return
        self._full = full
        if full:
            log.error(
                "OUTBOX FULL: %d events wait for the broker; oldest non-alarm events are now "
                "dropped (alarm and fault events are kept)",
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
        rows = self._require_db().execute(
            "SELECT seq, topic, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, limit),
        )
        return [OutboxRow(s, t, bytes(p)) for s, t, p in rows]

    async def wait_for_rows(self) -> None:
        """Wait until a commit adds rows (returns at once if one did since the last call)."""
        await self._new_rows.wait()
        self._new_rows.clear()

    async def wait_empty(self) -> None:
        """Wait until every committed event has been acknowledged."""
        if self._depth == 0 and not self._pending:
            return
        await self._empty.wait()

    # -- helpers ---------------------------------------------------------------------------

    def _meta(self, key: str) -> int:
        (value,) = (
            self._require_db().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        )
        return int(value)

    def _require_db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("outbox is not open")
        return self._db
