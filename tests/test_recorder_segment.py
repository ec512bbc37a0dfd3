"""Records cut from a channel's triggers and audio, on a real store (files and index)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from gateway.recorder.segment import ChannelSegmenter, SegmentConfig
from gateway.recorder.store import Query, Recording, RecordingStore

SR = 8000
BLOCK = 160  # 20 ms
T0 = 1_800_000_000.0


class Channel:
    """A channel's audio in 20 ms blocks on a timeline of its own (no sleeping)."""

    def __init__(self, tmp: Path, *, has_cos: bool = True, **cfg: float) -> None:
        self.store = RecordingStore(folder=tmp / "rec")
        self.store.open()
        self.now = T0
        self.seg = ChannelSegmenter(
            channel_id="fire",
            samplerate=SR,
            store=self.store,
            config=SegmentConfig(**cfg),
            has_cos=lambda: has_cos,
            clock=lambda: self.now,
        )
        self.n = 0

    def run(self, seconds: float, *, loud: bool = False) -> None:
        for _ in range(round(seconds * SR / BLOCK)):
            t = (self.n + np.arange(BLOCK)) / SR
            x = (0.3 if loud else 0.001) * np.sin(2 * np.pi * 500 * t)
            self.n += BLOCK
            self.now += BLOCK / SR
            self.seg.audio(x.astype(np.float32), self.now, active=loud)

    def records(self) -> list[Recording]:
        self.seg.close(self.now)
        self.store.close()
        return sorted(self.store.query(Query()), key=lambda r: r.start)


def test_a_receive_with_pre_roll_and_hang(tmp_path: Path) -> None:
    ch = Channel(tmp_path, pre_roll_s=1.0, hang_s=2.0)
    ch.run(5.0)
    ch.seg.cos(True)  # at T0 + 5
    ch.run(3.0, loud=True)
    ch.seg.cos(False)  # at T0 + 8
    ch.run(5.0)
    (rec,) = ch.records()
    assert rec.direction == "rx" and rec.status == "complete"
    assert rec.start == pytest.approx(T0 + 4.0, abs=0.03)
    assert rec.end == pytest.approx(T0 + 10.0, abs=0.03)
    assert rec.duration_s == pytest.approx(6.0, abs=0.03)
    data, _ = sf.read(rec.path)
    assert len(data) / SR == pytest.approx(6.0, abs=0.05)


def test_a_carrier_back_within_the_hang_continues_the_record(tmp_path: Path) -> None:
    ch = Channel(tmp_path, pre_roll_s=0.5, hang_s=2.0)
    ch.run(1.0)
    for _ in range(3):  # over, over, over: the hang bridges the gaps
        ch.seg.cos(True)
        ch.run(2.0, loud=True)
        ch.seg.cos(False)
        ch.run(1.0)
    ch.run(3.0)
    (rec,) = ch.records()
    assert rec.duration_s == pytest.approx(0.5 + 9.0 - 1.0 + 2.0, abs=0.05)


def test_ptt_over_a_receive_splits_by_direction_with_the_requester(tmp_path: Path) -> None:
    ch = Channel(tmp_path, pre_roll_s=0.5, hang_s=1.0)
    ch.run(1.0)
    ch.seg.cos(True)
    ch.run(2.0, loud=True)
    ch.seg.ptt(True, requested_by="cad-7")
    ch.seg.note_fault("cos_stuck")
    ch.run(2.0, loud=True)
    ch.seg.cos(False)
    ch.seg.ptt(False)
    ch.run(2.0)
    rx, tx = ch.records()
    assert (rx.direction, tx.direction) == ("rx", "tx")
    assert rx.end == pytest.approx(tx.start, abs=1e-6)
    assert tx.requested_by == "cad-7" and rx.requested_by is None
    assert tx.faults == ("cos_stuck",) and rx.faults == ()
    assert tx.duration_s == pytest.approx(3.0, abs=0.05)  # 2 s keyed + 1 s hang


def test_a_carrier_still_there_when_ptt_ends_is_a_receive_from_then(tmp_path: Path) -> None:
    ch = Channel(tmp_path, pre_roll_s=1.0, hang_s=0.5)
    ch.run(2.0)
    ch.seg.ptt(True, requested_by="cad-1")
    ch.run(1.0, loud=True)
    ch.seg.cos(True)  # the other station answers before the console unkeys
    ch.run(0.5, loud=True)
    ch.seg.ptt(False)
    ch.run(1.0, loud=True)
    ch.seg.cos(False)
    ch.run(1.0)
    tx, rx = ch.records()
    assert (tx.direction, rx.direction) == ("tx", "rx")
    assert rx.start == pytest.approx(tx.end, abs=1e-6)  # its pre-roll stops at the tx


def test_without_cos_the_audio_activity_decides(tmp_path: Path) -> None:
    ch = Channel(tmp_path, has_cos=False, pre_roll_s=1.0, hang_s=1.0)
    ch.seg.cos(True)  # a COS the channel does not have wired is ignored
    ch.run(3.0)
    ch.run(2.0, loud=True)
    ch.run(3.0)
    (rec,) = ch.records()
    assert rec.start == pytest.approx(T0 + 2.0, abs=0.03)
    assert rec.duration_s == pytest.approx(4.0, abs=0.05)


def test_a_long_transmission_is_split_and_the_parts_name_the_first(tmp_path: Path) -> None:
    ch = Channel(tmp_path, pre_roll_s=0.0, hang_s=0.5, max_s=3.0)
    ch.seg.ptt(True, requested_by="stuck")
    ch.run(7.0, loud=True)
    ch.seg.ptt(False)
    ch.run(1.0)
    parts = ch.records()
    assert [p.duration_s for p in parts] == pytest.approx([3.0, 3.0, 1.5], abs=0.01)
    assert parts[0].split_from is None
    assert [p.split_from for p in parts[1:]] == [parts[0].id, parts[0].id]
    assert all(p.requested_by == "stuck" for p in parts)
    for a, b in itertools.pairwise(parts):
        assert a.end == pytest.approx(b.start, abs=1e-6)  # no audio lost at a split


def test_tty_text_goes_to_the_record_it_was_heard_in(tmp_path: Path) -> None:
    ch = Channel(tmp_path, pre_roll_s=0.2, hang_s=0.5)
    ch.seg.note_tty("LOST ")  # no record open: nothing to note
    ch.seg.cos(True)
    ch.run(1.0, loud=True)
    ch.seg.note_tty("HELLO 911 ")
    ch.seg.note_tty("GA")
    ch.seg.cos(False)
    ch.run(1.0)
    (rec,) = ch.records()
    assert rec.tty_text == "HELLO 911 GA"
