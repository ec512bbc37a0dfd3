"""One channel's transmissions cut into records: received (COS, or audio activity where the
channel has no COS or its COS is not known) and transmitted (PTT), with pre-roll, a hang
time and a maximum length.

Time is the audio's: each block comes with the wall-clock time of its last sample, and the
COS and PTT changes with the wall-clock time they were seen; a record starts `pre_roll_s`
before its trigger (from a short delay line of the channel's own audio) and ends when the
audio reaches the trigger's end plus `hang_s`. A trigger back within the hang time continues
the record. A change of direction (PTT keyed over a receive) ends the record and starts one
in the new direction. A record longer than `max_s` is split; the next part names the first.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from gateway.recorder.store import Direction, RecordingStore

_BATCH_S = 0.25
"""Samples go to the store in batches this long (a crash loses this much more at most)."""


@dataclass(frozen=True, slots=True)
class SegmentConfig:
    pre_roll_s: float = 1.0
    hang_s: float = 2.0
    max_s: float = 600.0


@dataclass(slots=True)
class _Record:
    handle: int
    direction: Direction
    start: float
    written_until: float  # wall time of the last sample written
    first_handle: int  # the record a split continues (itself if none)


class ChannelSegmenter:
    """Feeds one channel's records to the store. Call from the event loop."""

    def __init__(
        self,
        *,
        channel_id: str,
        samplerate: int,
        store: RecordingStore,
        config: SegmentConfig,
        has_cos: Callable[[], bool],
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`has_cos`: whether the channel's carrier is known now (wired, and its radio
        interface online and reporting); while not, the audio's activity decides."""
        self.channel_id = channel_id
        self._sr = samplerate
        self._store = store
        self._cfg = config
        self._has_cos = has_cos
        self._clock = clock
        self._delay: deque[tuple[NDArray[np.int16], float]] = deque()
        self._delay_frames = 0
        self._cos = False
        self._active = False
        self._ptt = False
        self._requested_by: str | None = None
        self._record: _Record | None = None
        self._hang_until: float | None = None
        self._last_end = 0.0  # a pre-roll never reaches into the record before
        self._batch: list[NDArray[np.int16]] = []  # samples of the open record not yet queued
        self._batch_frames = 0

    @property
    def recording(self) -> Direction | None:
        return self._record.direction if self._record is not None else None

    @property
    def handle(self) -> int | None:
        return self._record.handle if self._record is not None else None

    def _wanted(self) -> Direction | None:
        if self._ptt:
            return "tx"
        if self._cos if self._has_cos() else self._active:
            return "rx"
        return None

    # -- triggers --------------------------------------------------------------------------

    def ptt(self, keyed: bool, requested_by: str | None = None, at: float | None = None) -> None:
        if keyed:
            self._requested_by = requested_by
        self._ptt = keyed
        self._changed(self._clock() if at is None else at)

    def cos(self, on: bool, at: float | None = None) -> None:
        self._cos = on
        self._changed(self._clock() if at is None else at)

    def note_fault(self, fault: str) -> None:
        if self._record is not None:
            self._store.note(self._record.handle, fault=fault)

    def note_unit(self, unit: str) -> None:
        if self._record is not None:
            self._store.note(self._record.handle, unit=unit)

    def note_tty(self, text: str) -> None:
        if self._record is not None:
            self._store.note(self._record.handle, tty_text=text)

    def _changed(self, now: float) -> None:
        wanted = self._wanted()
        rec = self._record
        if wanted is None:
            if rec is not None and self._hang_until is None:
                self._hang_until = now + self._cfg.hang_s
            return
        self._hang_until = None
        if rec is not None and rec.direction != wanted:
            self._end(now)
            rec = None
        if rec is None:
            self._begin(wanted, now - self._cfg.pre_roll_s, first=None)

    # -- audio -----------------------------------------------------------------------------

    def audio(self, samples: NDArray[np.float32], end_wall: float, *, active: bool) -> None:
        """A block of the channel's audio; `active`: the level meter hears something."""
        pcm = np.clip(np.rint(samples * 32767.0), -32768, 32767).astype(np.int16)
        self._keep(pcm, end_wall)
        if active != self._active:
            self._active = active
            if not self._has_cos():
                # The meter decides after its attack time: the pre-roll covers that.
                self._changed(end_wall - len(pcm) / self._sr)
        rec = self._record
        while rec is not None:
            limit = rec.start + self._cfg.max_s
            hang = self._hang_until
            if hang is not None and hang <= end_wall and hang <= limit:
                self._write_until(rec, hang)
                self._end(hang)
                return
            if limit > end_wall:
                self._write_until(rec, end_wall)
                return
            # Split at the maximum length, to the sample: the next part goes on from there.
            self._write_until(rec, limit)
            self._end(limit)
            self._begin(rec.direction, limit, first=rec.first_handle)
            self._hang_until = hang
            rec = self._record

    def close(self, now: float | None = None) -> None:
        """End the open record (the daemon stops)."""
        if self._record is not None:
            self._end(self._record.written_until if now is None else now)

    # -- records ---------------------------------------------------------------------------

    def _begin(self, direction: Direction, start: float, *, first: int | None) -> None:
        # The pre-roll cannot reach before the audio the delay line holds.
        held_from = self._delay[0][1] - len(self._delay[0][0]) / self._sr if self._delay else start
        start = max(start, held_from, self._last_end)
        handle = self._store.begin(
            channel=self.channel_id,
            direction=direction,
            start=start,
            samplerate=self._sr,
            requested_by=self._requested_by if direction == "tx" else None,
            transaction_id=self._requested_by if direction == "tx" else None,
            split_from=first,
        )
        self._record = _Record(handle, direction, start, start, first or handle)
        self._hang_until = None

    def _end(self, end: float) -> None:
        rec = self._record
        if rec is None:
            return
        end = max(end, rec.start)
        self._flush(rec)
        self._store.end(rec.handle, end)
        self._last_end = end
        self._record = None
        self._hang_until = None

    def _write_until(self, rec: _Record, until: float) -> None:
        """Write what the delay line holds between the record's last sample and `until`."""
        # From the newest block back to the last one written: one block a call, as a rule
        # (the whole delay line only for a pre-roll). This runs on the capture's path.
        pending = []
        for pcm, block_end in reversed(self._delay):
            if block_end <= rec.written_until:
                break
            pending.append((pcm, block_end))
        for pcm, block_end in reversed(pending):
            block_start = block_end - len(pcm) / self._sr
            if block_start >= until:
                break
            lo = max(0, round((rec.written_until - block_start) * self._sr))
            hi = min(len(pcm), round((until - block_start) * self._sr))
            if hi > lo:
                self._batch.append(pcm[lo:hi])
                self._batch_frames += hi - lo
        rec.written_until = max(rec.written_until, until)
        if self._batch_frames >= self._sr * _BATCH_S:
            self._flush(rec)

    def _flush(self, rec: _Record) -> None:
        """Hand the batched samples to the store: one operation per quarter second, not per
        20 ms block (the writer's work per operation is most of the recorder's CPU)."""
        if self._batch:
            pcm = self._batch[0] if len(self._batch) == 1 else np.concatenate(self._batch)
            self._store.audio(rec.handle, pcm, self._sr)
            self._batch, self._batch_frames = [], 0

    def _keep(self, pcm: NDArray[np.int16], end_wall: float) -> None:
        self._delay.append((pcm, end_wall))
        self._delay_frames += len(pcm)
        keep = int((self._cfg.pre_roll_s + 1.0) * self._sr)
        while self._delay and self._delay_frames - len(self._delay[0][0]) >= keep:
            old, _ = self._delay.popleft()
            self._delay_frames -= len(old)
