"""Where recordings go: compressed audio files and their SQLite index, owned by one thread.

The event loop never touches the disk for a recording: `RecordingStore` queues each
operation (begin, audio, note, end) and a writer thread encodes, writes and indexes. The
queue is bounded by seconds of audio; when the disk cannot keep up, audio is dropped (and
counted in the record's `dropped_s`), never the PTT path or the capture made to wait.

Crash safety: a record's row is committed before its first sample is written, with status
`recording`; its file is flushed every `flush_s` (a Ogg/Opus or FLAC file is then playable
up to that point). At the next open, every row still `recording` is repaired: its duration
read from what the file holds, its checksum computed, its status `incomplete`. Nothing
recorded before is touched.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import math
import os
import queue
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import soundfile as sf
from numpy.typing import NDArray

from gateway.events import parse_timestamp
from gateway.recorder import oggopus

log = logging.getLogger(__name__)

Direction = Literal["rx", "tx"]
AudioFormat = Literal["opus", "flac"]
Status = Literal["recording", "complete", "incomplete"]

OPUS_RATES = oggopus.OPUS_RATES

WRITER_CACHE_KIB = 256
"""The writer's page cache (SQLite's default is 2,000 KiB): it touches the newest rows."""
"""The input rates libsndfile's Opus encoder takes."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS recordings (
    id INTEGER PRIMARY KEY,
    channel TEXT NOT NULL,
    direction TEXT NOT NULL,
    start REAL NOT NULL,
    end REAL,
    duration_s REAL NOT NULL DEFAULT 0,
    samplerate INTEGER NOT NULL,
    level_dbfs REAL,
    requested_by TEXT,
    transaction_id TEXT,
    faults TEXT NOT NULL DEFAULT '',
    tty_text TEXT NOT NULL DEFAULT '',
    path TEXT NOT NULL,
    bytes INTEGER NOT NULL DEFAULT 0,
    sha256 TEXT,
    status TEXT NOT NULL,
    split_from INTEGER,
    dropped_s REAL NOT NULL DEFAULT 0,
    units TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS recordings_channel_start ON recordings (channel, start);
CREATE INDEX IF NOT EXISTS recordings_start ON recordings (start);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value REAL NOT NULL);
"""

# Text search over a million records must not read them all: a trigram index of the
# searchable text (a search of 3 characters or more uses it; the LIKE then confirms).
_FTS_SCHEMA = """
CREATE VIRTUAL TABLE recordings_fts USING fts5(
    tty_text, requested_by, faults, content='recordings', content_rowid='id',
    tokenize='trigram'
);
CREATE TRIGGER recordings_fts_insert AFTER INSERT ON recordings BEGIN
    INSERT INTO recordings_fts (rowid, tty_text, requested_by, faults)
    VALUES (new.id, new.tty_text, new.requested_by, new.faults);
END;
CREATE TRIGGER recordings_fts_delete AFTER DELETE ON recordings BEGIN
    INSERT INTO recordings_fts (recordings_fts, rowid, tty_text, requested_by, faults)
    VALUES ('delete', old.id, old.tty_text, old.requested_by, old.faults);
END;
CREATE TRIGGER recordings_fts_update AFTER UPDATE OF tty_text, requested_by, faults
ON recordings BEGIN
    INSERT INTO recordings_fts (recordings_fts, rowid, tty_text, requested_by, faults)
    VALUES ('delete', old.id, old.tty_text, old.requested_by, old.faults);
    INSERT INTO recordings_fts (rowid, tty_text, requested_by, faults)
    VALUES (new.id, new.tty_text, new.requested_by, new.faults);
END;
INSERT INTO recordings_fts (recordings_fts) VALUES ('rebuild');
"""


def _create_schema(db: sqlite3.Connection) -> None:
    db.executescript(_SCHEMA)
    columns = {row[1] for row in db.execute("PRAGMA table_info(recordings)")}
    if "units" not in columns:  # an index made before unit IDs were kept
        db.execute("ALTER TABLE recordings ADD COLUMN units TEXT NOT NULL DEFAULT ''")
        db.commit()
    has_fts = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'recordings_fts'"
    ).fetchone()
    if not has_fts:
        db.executescript("BEGIN;" + _FTS_SCHEMA + "COMMIT;")


_COLUMNS = (
    "id",
    "channel",
    "direction",
    "start",
    "end",
    "duration_s",
    "samplerate",
    "level_dbfs",
    "requested_by",
    "transaction_id",
    "faults",
    "tty_text",
    "path",
    "bytes",
    "sha256",
    "status",
    "split_from",
    "dropped_s",
    "units",
)


@dataclass(frozen=True, slots=True)
class Recording:
    """One record of the index."""

    id: int
    channel: str
    direction: Direction
    start: float
    end: float | None
    duration_s: float
    samplerate: int
    level_dbfs: float | None
    requested_by: str | None
    transaction_id: str | None
    faults: tuple[str, ...]
    tty_text: str
    path: str
    bytes: int
    sha256: str | None
    status: Status
    split_from: int | None
    dropped_s: float
    units: tuple[str, ...] = ()
    """Radios that identified themselves during the record (MDC-1200 unit IDs)."""

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Recording:
        values = dict(zip(_COLUMNS, row, strict=True))
        faults = str(values["faults"] or "")
        values["faults"] = tuple(f for f in faults.split(",") if f)
        values["units"] = tuple(u for u in str(values["units"] or "").split(",") if u)
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Query:
    """Which records: all filters optional, newest first."""

    channel: str | None = None
    direction: Direction | None = None
    since: float | None = None
    """Records that end at or after this (epoch seconds)."""
    until: float | None = None
    """Records that start before this."""
    text: str | None = None
    """In the TTY transcript, the requester or a fault code (case-insensitive)."""
    limit: int = 100
    unit: str | None = None
    """Records during which this unit identified itself (4 hex digits)."""

    @classmethod
    def of_text(
        cls,
        *,
        channel: str | None,
        direction: Direction | None,
        since: str | None,
        until: str | None,
        text: str | None,
        limit: int,
        naive_is_local: bool,
        names: tuple[str, str] = ("since", "until"),
        unit: str | None = None,
    ) -> Query:
        """A query from the RFC 3339 times a person or CAD typed (`naive_is_local`: a time
        without a zone is the console's); ValueError naming the filter that is wrong, by
        `names` for since and until."""
        times: list[float | None] = []
        for value, name in zip((since, until), names, strict=True):
            try:
                times.append(
                    None if value is None else parse_timestamp(value, naive_is_local=naive_is_local)
                )
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return cls(channel, direction, times[0], times[1], text, limit, unit)

    def __post_init__(self) -> None:
        # SQLite's LIKE reads a pattern up to a NUL: "A\0B" would find every "A".
        if self.text is not None and "\x00" in self.text:
            raise ValueError("the search text must not contain NUL characters")
        if self.text is not None and not self.text.isascii():
            try:
                self.text.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(
                    "the search text is not valid Unicode (a lone surrogate)"
                ) from None
        if not 1 <= self.limit <= 10_000:
            raise ValueError(f"limit must be 1..10000, got {self.limit}")
        if self.unit is not None and not re.fullmatch(r"[0-9A-Fa-f]{4}", self.unit):
            raise ValueError(f"unit must be 4 hex digits (an MDC-1200 unit ID), got {self.unit!r}")


@dataclass(slots=True)
class _Open:
    """A record being written (writer thread only)."""

    record_id: int
    path: Path
    file: AudioSink | None
    samplerate: int
    frames: int = 0
    sumsq: float = 0.0
    last_flush: float = field(default_factory=time.monotonic)
    dropped_frames: int = 0


@dataclass(frozen=True, slots=True)
class Begin:
    handle: int
    channel: str
    direction: Direction
    start: float
    samplerate: int
    requested_by: str | None = None
    transaction_id: str | None = None
    split_from: int | None = None


@dataclass(frozen=True, slots=True)
class _Audio:
    handle: int
    pcm: NDArray[np.int16]
    samplerate: int


@dataclass(frozen=True, slots=True)
class _Note:
    handle: int
    fault: str | None = None
    tty_text: str | None = None
    requested_by: str | None = None
    transaction_id: str | None = None
    unit: str | None = None


@dataclass(frozen=True, slots=True)
class _End:
    handle: int
    end: float


@dataclass(frozen=True, slots=True)
class _Stop:
    pass


@dataclass(frozen=True, slots=True)
class Saved:
    """A record finished (for the `recording.saved` event)."""

    recording: Recording


_Op = Begin | _Audio | _Note | _End | _Stop


class RecordingStore:
    """Recordings of every channel under one folder, with one index. Call from one loop."""

    def __init__(
        self,
        *,
        folder: Path,
        audio_format: AudioFormat = "opus",
        opus_bitrate: int = oggopus.DEFAULT_BITRATE,
        flush_s: float = 1.0,
        queue_s: float = 30.0,
        max_age_days: float = 0.0,
        quota_bytes: int = 0,
        low_disk_bytes: int = 0,
        on_saved: Callable[[Saved], None] | None = None,
        on_low_disk: Callable[[bool, str], None] | None = None,
        max_record_s: float | None = None,
    ) -> None:
        self.folder = folder
        self.index_path = folder / "index.sqlite"
        self._format: AudioFormat = audio_format
        self._opus_bitrate = opus_bitrate
        self._flush_s = flush_s
        self._queue_s = queue_s
        self._max_age_s = max_age_days * 86400.0
        self._quota = quota_bytes
        self._low_disk = low_disk_bytes
        self._on_saved = on_saved
        self._on_low_disk = on_low_disk
        self._max_record_s = max_record_s
        """The longest span a record can have (pre-roll, max_s, hang): kept in the index,
        so a time query reads only the records that start near its window."""
        self._ops: queue.SimpleQueue[_Op] = queue.SimpleQueue()
        self._queued_s = 0.0  # seconds of audio in _ops (approximate; under _lock)
        self._lock = threading.Lock()
        self._next_handle = 0
        self._thread: threading.Thread | None = None
        self._ids: dict[int, int] = {}
        """Handle -> record id of the recent records (writer thread): what a split names."""
        self._total_bytes = 0
        """The files' bytes the index holds (writer thread), for the quota."""
        self._loop_call: Callable[[Callable[[], None]], None] | None = None
        self.dropped_s = 0.0
        """Audio dropped because the disk did not keep up, since the start."""
        self.repaired: list[Recording] = []
        """Records a crash left open, repaired at open()."""

    # -- lifecycle -------------------------------------------------------------------------

    def open(self, call_soon: Callable[[Callable[[], None]], None] | None = None) -> None:
        """Create the folder and index, repair what a crash left, start the writer.

        `call_soon` hands the writer's callbacks to the event loop (call_soon_threadsafe).
        """
        self._loop_call = call_soon
        self.folder.mkdir(parents=True, exist_ok=True)
        db = self._connect()
        # The writer's connection lives as long as the daemon; queries open their own.
        db.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
        _create_schema(db)
        if self._max_record_s is not None:
            _note_max_span(db, self._max_record_s)
        self.repaired = _repair(db)
        if self.repaired:  # one line for the crash, however many channels were recording
            log.warning(
                "%d recording(s) cut by a crash, kept up to their last flush: %s (in %s)",
                len(self.repaired),
                ", ".join(
                    f"{r.id} ({r.channel} {r.direction}, {r.duration_s:.1f} s)"
                    for r in self.repaired
                ),
                self.folder,
            )
        self._thread = threading.Thread(
            target=self._writer_main, args=(db,), name="recorder", daemon=True
        )
        self._thread.start()

    @property
    def opened(self) -> bool:
        return self._thread is not None

    def close(self) -> None:
        """Finish every open record, stop the writer (blocks: a shutdown step)."""
        if self._thread is None:
            return
        self._ops.put(_Stop())
        self._thread.join()
        self._thread = None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.index_path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        return db

    # -- the event loop's side (never blocks) ------------------------------------------------

    def begin(
        self,
        *,
        channel: str,
        direction: Direction,
        start: float,
        samplerate: int,
        requested_by: str | None = None,
        transaction_id: str | None = None,
        split_from: int | None = None,
    ) -> int:
        """A new record from `start` (epoch seconds); returns its handle. `split_from`: the
        handle of the record this one continues (split at the maximum length)."""
        self._next_handle += 1
        self._ops.put(
            Begin(
                self._next_handle,
                channel,
                direction,
                start,
                samplerate,
                requested_by,
                transaction_id,
                split_from,
            )
        )
        return self._next_handle

    def audio(self, handle: int, pcm: NDArray[np.int16], samplerate: int) -> bool:
        """Queue samples for a record; False (and counted) when the queue is full."""
        seconds = len(pcm) / samplerate
        with self._lock:
            if self._queued_s + seconds > self._queue_s:
                self.dropped_s += seconds
                return False
            self._queued_s += seconds
        self._ops.put(_Audio(handle, pcm, samplerate))
        return True

    def note(
        self,
        handle: int,
        *,
        fault: str | None = None,
        tty_text: str | None = None,
        requested_by: str | None = None,
        transaction_id: str | None = None,
        unit: str | None = None,
    ) -> None:
        """Add a fault raised during the record, TTY text, who keyed it, or a unit ID."""
        if tty_text is not None:
            tty_text = tty_text.replace("\x00", "")  # never searchable (see Query)
            # A lone surrogate (JSON from CAD can carry "\ud800") cannot be stored as UTF-8.
            tty_text = tty_text.encode("utf-8", "replace").decode("utf-8")
        self._ops.put(_Note(handle, fault, tty_text, requested_by, transaction_id, unit))

    def end(self, handle: int, end: float) -> None:
        self._ops.put(_End(handle, end))

    # -- reading (any thread; a connection per call, as readers do beside the writer) ------

    def query(self, q: Query) -> list[Recording]:
        where: list[str] = []
        args: list[Any] = []
        if q.channel is not None:
            where.append("channel = ?")
            args.append(q.channel)
        if q.direction is not None:
            where.append("direction = ?")
            args.append(q.direction)
        if q.since is not None:
            where.append("COALESCE(end, start + duration_s) >= ?")
            args.append(q.since)
        if q.until is not None:
            where.append("start < ?")
            args.append(q.until)
        if q.unit is not None:
            where.append("(',' || units || ',') LIKE ?")
            args.append(f"%,{q.unit.upper()},%")
        if q.text:
            where.append(
                "(tty_text LIKE ? ESCAPE '\\' OR requested_by LIKE ? ESCAPE '\\' "
                "OR faults LIKE ? ESCAPE '\\')"
            )
            literal = q.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            args.extend([f"%{literal}%"] * 3)
            if len(q.text) >= 3:  # the trigram index narrows; the LIKE above decides
                where.append(
                    "id IN (SELECT rowid FROM recordings_fts WHERE recordings_fts MATCH ?)"
                )
                args.append('"' + q.text.replace('"', '""') + '"')
        sql = f"SELECT {', '.join(_COLUMNS)} FROM recordings"
        args.append(q.limit)
        with contextlib.closing(self._connect()) as db:
            if q.since is not None and (span := _max_span(db)) is not None:
                # No record spans more than this: the start index bounds the scan below.
                where.append("start >= ?")
                args.insert(len(args) - 1, q.since - span - 1.0)
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += " ORDER BY start DESC, id DESC LIMIT ?"
            return [Recording.from_row(row) for row in db.execute(sql, args)]

    def channels(self) -> list[tuple[str, float]]:
        """Each channel in the index with the start of its newest record, by name.

        Walks the (channel, start) index one channel at a time: a few lookups per channel,
        not a scan of a million rows."""
        found: list[tuple[str, float]] = []
        with contextlib.closing(self._connect()) as db:
            row = db.execute("SELECT MIN(channel) FROM recordings").fetchone()
            while row is not None and row[0] is not None:
                channel = str(row[0])
                (last,) = db.execute(
                    "SELECT MAX(start) FROM recordings WHERE channel = ?", (channel,)
                ).fetchone()
                found.append((channel, float(last)))
                row = db.execute(
                    "SELECT MIN(channel) FROM recordings WHERE channel > ?", (channel,)
                ).fetchone()
        return found

    def get(self, record_id: int) -> Recording | None:
        sql = f"SELECT {', '.join(_COLUMNS)} FROM recordings WHERE id = ?"
        with contextlib.closing(self._connect()) as db:
            row = db.execute(sql, (record_id,)).fetchone()
        return Recording.from_row(row) if row else None

    # -- the writer thread ------------------------------------------------------------------

    def _writer_main(self, db: sqlite3.Connection) -> None:
        open_records: dict[int, _Open] = {}
        last_retention = 0.0
        low = False
        failures = 0
        (total,) = db.execute("SELECT COALESCE(SUM(bytes), 0) FROM recordings").fetchone()
        self._total_bytes = int(total)
        try:
            while True:
                try:
                    op = self._ops.get(timeout=self._flush_s)
                except queue.Empty:
                    op = None
                if isinstance(op, _Stop):
                    break
                try:
                    if op is not None:
                        self._apply(db, open_records, op)
                    now = time.monotonic()
                    for rec in open_records.values():
                        if rec.file is not None and now - rec.last_flush >= self._flush_s:
                            rec.file.flush()
                            rec.last_flush = now
                    # After each record (cheap: the oldest rows, through the start index),
                    # and once a minute for the age limit and the disk.
                    if now - last_retention >= 60.0 or isinstance(op, _End):
                        last_retention = now
                        self._retention(db)
                        low = self._check_disk(low)
                except Exception:
                    # One bad operation (a full disk, a broken file) must not end the
                    # recording of every channel: said, counted, and the next one tried.
                    failures += 1
                    if failures == 1 or failures % 1000 == 0:
                        log.exception("recorder: failure %d of the writer; it goes on", failures)
        finally:
            for handle in list(open_records):
                with contextlib.suppress(Exception):
                    self._finish(db, open_records.pop(handle), time.time())
            db.close()

    def _apply(self, db: sqlite3.Connection, records: dict[int, _Open], op: _Op) -> None:
        if isinstance(op, Begin):
            records[op.handle] = self._start(db, op)
        elif isinstance(op, _Audio):
            with self._lock:
                self._queued_s -= len(op.pcm) / op.samplerate
            rec = records.get(op.handle)
            if rec is not None:
                self._write(rec, op.pcm)
        elif isinstance(op, _Note):
            rec = records.get(op.handle)
            if rec is not None:
                _note(db, rec.record_id, op)
        elif isinstance(op, _End):
            rec = records.pop(op.handle, None)
            if rec is not None:
                saved = self._finish(db, rec, op.end)
                if saved is not None and self._on_saved is not None:
                    self._call(self._on_saved, Saved(saved))

    def _start(self, db: sqlite3.Connection, op: Begin) -> _Open:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(op.start))
        millis = int((op.start % 1) * 1000)
        day = time.strftime("%Y-%m-%d", time.gmtime(op.start))
        suffix = ".opus" if self._format == "opus" else ".flac"
        path = self.folder / op.channel / day / f"{op.channel}-{stamp}{millis:03d}Z-{op.direction}"
        path = path.with_suffix(suffix)
        cur = db.execute(
            "INSERT INTO recordings (channel, direction, start, samplerate, requested_by, "
            "transaction_id, path, status, split_from) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                op.channel,
                op.direction,
                op.start,
                op.samplerate,
                op.requested_by,
                op.transaction_id,
                str(path),
                "recording",
                None if op.split_from is None else self._ids.get(op.split_from),
            ),
        )
        record_id = int(cur.lastrowid or 0)
        self._ids[op.handle] = record_id
        while len(self._ids) > 1000:  # a split names a record begun moments ago
            del self._ids[next(iter(self._ids))]
        if path.exists():  # never over another record's file (a clock set back)
            path = path.with_name(f"{path.stem}-{record_id}{suffix}")
            db.execute("UPDATE recordings SET path = ? WHERE id = ?", (str(path), record_id))
        comments = {
            "CONSOLEGW_RECORD": str(record_id),
            "CONSOLEGW_CHANNEL": op.channel,
            "CONSOLEGW_DIRECTION": op.direction,
            "CONSOLEGW_START": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(op.start))
            + f".{millis:03d}Z",
        }
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            file = _open_audio(
                path,
                op.samplerate,
                self._format,
                opus_bitrate=self._opus_bitrate,
                comments=comments,
            )
        except (*_AUDIO_ERRORS, ValueError) as exc:
            log.error("recorder: cannot create %s: %s", path, exc)
            file = None
        return _Open(record_id, path, file, op.samplerate)

    def _write(self, rec: _Open, pcm: NDArray[np.int16]) -> None:
        if rec.file is None:
            rec.dropped_frames += len(pcm)
            return
        try:
            rec.file.write(pcm)
        except _AUDIO_ERRORS as exc:
            log.error("recorder: writing %s failed: %s; the rest is dropped", rec.path, exc)
            with contextlib.suppress(Exception):
                rec.file.close()
            rec.file = None
            rec.dropped_frames += len(pcm)
            return
        rec.frames += len(pcm)
        x = pcm.astype(np.float64)
        rec.sumsq += float(np.dot(x, x))

    def _finish(self, db: sqlite3.Connection, rec: _Open, end: float) -> Recording | None:
        if rec.file is not None:
            with contextlib.suppress(Exception):
                rec.file.close()
        size, digest = _file_facts(rec.path)
        level = (
            round(20 * math.log10(math.sqrt(rec.sumsq / rec.frames) / 32768.0 + 1e-12), 2)
            if rec.frames and rec.sumsq > 0
            else None
        )
        self._total_bytes += size
        db.execute(
            "UPDATE recordings SET end = ?, duration_s = ?, level_dbfs = ?, bytes = ?, "
            "sha256 = ?, status = 'complete', dropped_s = dropped_s + ? WHERE id = ?",
            (
                end,
                round(rec.frames / rec.samplerate, 3),
                level,
                size,
                digest,
                round(rec.dropped_frames / rec.samplerate, 3),
                rec.record_id,
            ),
        )
        return _get(db, rec.record_id)

    def _retention(self, db: sqlite3.Connection) -> None:
        """Oldest first: past the age limit, or while over the quota. Never a record being
        written (its row is `recording`; its bytes count once it is finished). Reads the
        oldest rows through the index on start, not the whole table."""
        oldest = (
            "SELECT id, path, bytes FROM recordings WHERE status != 'recording' {} "
            "ORDER BY start LIMIT 10000"
        )
        doomed: dict[int, tuple[str, int]] = {}
        if self._max_age_s > 0:
            cutoff = time.time() - self._max_age_s
            for rid, path, size in db.execute(oldest.format("AND start < ?"), (cutoff,)):
                doomed[rid] = (path, int(size))
        if self._quota > 0:
            excess = self._total_bytes - sum(size for _, size in doomed.values()) - self._quota
            if excess > 0:
                for rid, path, size in db.execute(oldest.format("")):
                    if excess <= 0:
                        break
                    if rid not in doomed:
                        doomed[rid] = (path, int(size))
                        excess -= int(size)
        for rid, (path, size) in doomed.items():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            db.execute("DELETE FROM recordings WHERE id = ?", (rid,))
            self._total_bytes -= size
        if doomed:
            log.info("recorder: %d old recordings removed (retention)", len(doomed))

    def _check_disk(self, low: bool) -> bool:
        if self._low_disk <= 0 or self._on_low_disk is None:
            return low
        try:
            st = os.statvfs(self.folder)
        except OSError:
            return low
        free = st.f_bavail * st.f_frsize
        now_low = free < self._low_disk
        if now_low != low:
            message = (
                f"{free / 1e6:.0f} MB free on the recordings' disk ({self.folder}), "
                f"below recorder.low_disk_mb ({self._low_disk / 1e6:.0f})"
                if now_low
                else f"{free / 1e6:.0f} MB free on the recordings' disk again"
            )
            self._call(self._on_low_disk, now_low, message)
        return now_low

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            if self._loop_call is not None:
                self._loop_call(lambda: fn(*args))
            else:
                fn(*args)
        except Exception:  # (a loop that is closing): the record is saved all the same
            log.exception("recorder: a callback failed")


class AudioSink(Protocol):
    """An open record's file: libsndfile's SoundFile or the Ogg/Opus writer."""

    def write(self, data: NDArray[np.int16]) -> Any: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


_AUDIO_ERRORS = (OSError, sf.LibsndfileError, oggopus.OpusError)


@functools.cache  # once per process, not per record
def _tell_fallback(missing: str) -> None:
    log.warning("recorder: %s; Ogg/Opus through libsndfile instead (about twice the CPU)", missing)


def _open_audio(
    path: Path,
    samplerate: int,
    audio_format: AudioFormat,
    *,
    opus_bitrate: int = oggopus.DEFAULT_BITRATE,
    comments: dict[str, str] | None = None,
) -> AudioSink:
    if audio_format == "opus":
        if samplerate not in OPUS_RATES:
            raise ValueError(f"Opus takes {OPUS_RATES} Hz, not {samplerate}")
        missing = oggopus.available()
        if missing is None:
            file = path.open("xb")
            try:
                return oggopus.OggOpusWriter(
                    file, samplerate, bitrate=opus_bitrate, comments=comments
                )
            except BaseException:
                file.close()
                raise
        _tell_fallback(missing)
        opus: AudioSink = sf.SoundFile(
            path, mode="w", samplerate=samplerate, channels=1, format="OGG", subtype="OPUS"
        )
        return opus
    flac: AudioSink = sf.SoundFile(
        path, mode="w", samplerate=samplerate, channels=1, format="FLAC", subtype="PCM_16"
    )
    return flac


def _add_once(db: sqlite3.Connection, record_id: int, column: str, value: str) -> None:
    """Append `value` to a comma-separated list column (faults, units) unless it is in."""
    assert column in ("faults", "units")  # a column name, never input
    row = db.execute(f"SELECT {column} FROM recordings WHERE id = ?", (record_id,)).fetchone()
    values = [v for v in str(row[0] or "").split(",") if v]
    if value not in values:
        values.append(value)
        db.execute(
            f"UPDATE recordings SET {column} = ? WHERE id = ?", (",".join(values), record_id)
        )


def _note(db: sqlite3.Connection, record_id: int, op: _Note) -> None:
    for column, value in (("faults", op.fault), ("units", op.unit)):
        if value:
            _add_once(db, record_id, column, value)
    if op.tty_text:
        db.execute(
            "UPDATE recordings SET tty_text = tty_text || ? WHERE id = ?",
            (op.tty_text, record_id),
        )
    if op.requested_by is not None or op.transaction_id is not None:
        db.execute(
            "UPDATE recordings SET requested_by = COALESCE(?, requested_by), "
            "transaction_id = COALESCE(?, transaction_id) WHERE id = ?",
            (op.requested_by, op.transaction_id, record_id),
        )


def _note_max_span(db: sqlite3.Connection, span: float) -> None:
    """Keep the longest span any record in the index can have (never lowered: records
    made under a longer max_s stay). An index from before this was kept is measured once."""
    if _max_span(db) is None:
        (longest,) = db.execute(
            "SELECT MAX(COALESCE(end, start + duration_s) - start) FROM recordings"
        ).fetchone()
        span = max(span, float(longest or 0.0))
    db.execute(
        "INSERT INTO meta (key, value) VALUES ('max_record_s', ?) "
        "ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)",
        (span,),
    )


def _max_span(db: sqlite3.Connection) -> float | None:
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'max_record_s'").fetchone()
    except sqlite3.OperationalError:  # an index older than the meta table
        return None
    return None if row is None else float(row[0])


def _get(db: sqlite3.Connection, record_id: int) -> Recording | None:
    sql = f"SELECT {', '.join(_COLUMNS)} FROM recordings WHERE id = ?"
    row = db.execute(sql, (record_id,)).fetchone()
    return Recording.from_row(row) if row else None


def _file_facts(path: Path) -> tuple[int, str | None]:
    """Size and SHA-256 of a file (0, None when it does not exist)."""
    digest = hashlib.sha256()
    size = 0
    try:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 16), b""):
                digest.update(block)
                size += len(block)
    except OSError:
        return 0, None
    return size, digest.hexdigest()


def _playable_seconds(path: Path) -> float:
    """How much of a file a player reads (a file cut by a crash: up to its last flush)."""
    try:
        with sf.SoundFile(path) as f:
            rate = float(f.samplerate)
            if f.frames > 0:
                return float(f.frames) / rate
            # A stream cut short may not know its length: count what decodes.
            frames = sum(len(block) for block in f.blocks(blocksize=8192))
            return frames / rate
    except (OSError, sf.LibsndfileError, RuntimeError):
        return 0.0


def _repair(db: sqlite3.Connection) -> list[Recording]:
    """Rows a crash left `recording`: duration from the file, checksum, `incomplete`."""
    rows = db.execute("SELECT id, path, start FROM recordings WHERE status = 'recording'")
    repaired = []
    for record_id, path, start in rows.fetchall():
        seconds = _playable_seconds(Path(path))
        size, digest = _file_facts(Path(path))
        db.execute(
            "UPDATE recordings SET status = 'incomplete', duration_s = ?, end = ?, bytes = ?, "
            "sha256 = ? WHERE id = ?",
            (round(seconds, 3), start + seconds, size, digest, record_id),
        )
        rec = _get(db, record_id)
        if rec is not None:
            repaired.append(rec)
    return repaired
