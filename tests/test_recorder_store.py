"""The recorder's store: real Ogg/Opus and FLAC files through libsndfile, a real SQLite
index, and a real `kill -9` of a process in the middle of a record."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from gateway.recorder.store import Query, Recording, RecordingStore, Saved
from tests.mqtt_tools import ROOT

SR = 8000


def tone(seconds: float, hz: float = 700.0, amplitude: float = 0.25) -> NDArray[np.int16]:
    t = np.arange(int(seconds * SR)) / SR
    return (amplitude * 32767 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def record(
    store: RecordingStore,
    channel: str,
    start: float,
    seconds: float,
    *,
    requested_by: str | None = None,
    transaction_id: str | None = None,
) -> int:
    handle = store.begin(
        channel=channel,
        direction="rx",
        start=start,
        samplerate=SR,
        requested_by=requested_by,
        transaction_id=transaction_id,
    )
    pcm = tone(seconds)
    for i in range(0, len(pcm), 160):  # 20 ms blocks, as a sound card gives them
        assert store.audio(handle, pcm[i : i + 160], SR)
    store.end(handle, start + seconds)
    return handle


def test_a_record_is_a_playable_file_and_an_indexed_row(tmp_path: Path) -> None:
    saved: list[Saved] = []
    store = RecordingStore(folder=tmp_path / "rec", on_saved=saved.append)
    store.open()
    start = time.time() - 10
    record(store, "fire", start, 3.0, requested_by="cad-1", transaction_id="tx-9")
    store.close()
    assert len(saved) == 1
    rec = saved[0].recording
    assert rec.status == "complete" and rec.channel == "fire" and rec.direction == "rx"
    assert rec.duration_s == pytest.approx(3.0, abs=0.01)
    assert rec.requested_by == "cad-1" and rec.transaction_id == "tx-9"
    assert rec.level_dbfs == pytest.approx(-15.1, abs=0.5)  # a 0.25 sine is -15 dBFS RMS
    path = Path(rec.path)
    assert path.suffix == ".opus" and path.is_relative_to(tmp_path / "rec" / "fire")
    data, rate = sf.read(path)
    assert rate == SR and len(data) / rate == pytest.approx(3.0, abs=0.05)
    assert rec.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert rec.bytes == path.stat().st_size
    # Speech-grade compression: a 3 s record is far smaller than its 48 kB of PCM.
    assert rec.bytes < 20_000


def test_same_start_twice_never_overwrites_a_file(tmp_path: Path) -> None:
    """Two records of one channel stamped alike (a clock set back): two files."""
    store = RecordingStore(folder=tmp_path)
    store.open()
    start = time.time()
    record(store, "fire", start, 1.0)
    record(store, "fire", start, 2.0)
    store.close()
    found = store.query(Query())
    assert len({r.path for r in found}) == 2
    assert sorted(round(len(sf.read(r.path)[0]) / SR, 1) for r in found) == [1.0, 2.0]


def test_without_libopus_opus_goes_through_libsndfile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """libopus and libogg cannot be taken off this machine for a test: their absence is
    forced here (the one stand-in); libsndfile then writes the records, said once."""
    from gateway.recorder import oggopus
    from gateway.recorder import store as store_module

    monkeypatch.setattr(oggopus, "available", lambda: "libopus not found (forced)")
    store_module._tell_fallback.cache_clear()
    store = RecordingStore(folder=tmp_path)
    store.open()
    with caplog.at_level("WARNING", logger="gateway.recorder.store"):
        record(store, "fire", time.time(), 1.0)
        record(store, "fire", time.time() + 5, 1.0)
        store.close()
    assert caplog.text.count("through libsndfile") == 1
    for rec in store.query(Query()):
        assert rec.status == "complete"
        data, rate = sf.read(rec.path)
        assert rate == SR and len(data) / rate == pytest.approx(1.0, abs=0.05)
    store_module._tell_fallback.cache_clear()


def test_flac_when_lossless_is_configured(tmp_path: Path) -> None:
    store = RecordingStore(folder=tmp_path, audio_format="flac")
    store.open()
    record(store, "ems", time.time(), 1.0)
    store.close()
    (rec,) = store.query(Query())
    data, _ = sf.read(rec.path, dtype="int16")
    assert np.array_equal(data, tone(1.0))  # lossless: every sample back


def test_notes_and_queries(tmp_path: Path) -> None:
    store = RecordingStore(folder=tmp_path)
    store.open()
    t0 = 1_800_000_000.0
    record(store, "fire", t0, 1.0)
    h = store.begin(channel="ems", direction="tx", start=t0 + 100, samplerate=SR)
    store.audio(h, tone(1.0), SR)
    store.note(h, fault="cos_stuck")
    store.note(h, fault="cos_stuck")  # once in the row
    store.note(h, tty_text="HELLO ")
    store.note(h, tty_text="911 GA", requested_by="console-3")
    store.end(h, t0 + 101)
    record(store, "fire", t0 + 200, 1.0)
    store.close()
    assert [r.start for r in store.query(Query())] == [t0 + 200, t0 + 100, t0]  # newest first
    (ems,) = store.query(Query(channel="ems"))
    assert ems.faults == ("cos_stuck",) and ems.tty_text == "HELLO 911 GA"
    assert ems.requested_by == "console-3" and ems.direction == "tx"
    assert store.query(Query(text="911"))[0].id == ems.id
    assert store.query(Query(text="cos_stuck"))[0].id == ems.id
    assert len(store.query(Query(channel="fire", since=t0 + 0.5))) == 2  # ends after t0 + 0.5
    assert len(store.query(Query(channel="fire", until=t0 + 150))) == 1
    assert len(store.query(Query(direction="tx"))) == 1
    assert len(store.query(Query(limit=1))) == 1
    assert store.get(ems.id) == ems and store.get(10_000) is None


def test_retention_by_quota_and_age_oldest_first(tmp_path: Path) -> None:
    store = RecordingStore(folder=tmp_path / "q", max_age_days=1.0)
    store.open()
    now = time.time()
    record(store, "fire", now - 3 * 86400, 1.0)  # past the age limit
    record(store, "fire", now - 60, 1.0)
    store.close()
    left = store.query(Query())
    assert [r.start for r in left] == [now - 60]
    sizes = left[0].bytes
    quota = RecordingStore(folder=tmp_path / "q", quota_bytes=int(sizes * 2.5))
    quota.open()
    for k in range(4):
        record(quota, "fire", now - 50 + k, 1.0)
    quota.close()
    kept = quota.query(Query())
    assert sum(r.bytes for r in kept) <= sizes * 2.5
    assert [r.start for r in kept] == [now - 47, now - 48]  # the newest two
    assert all(Path(r.path).exists() for r in kept)
    assert len(list((tmp_path / "q").rglob("*.opus"))) == len(kept)


def test_a_disk_that_cannot_keep_up_drops_audio_not_the_caller(tmp_path: Path) -> None:
    store = RecordingStore(folder=tmp_path, queue_s=0.5)  # not opened: nothing drains
    h = store.begin(channel="fire", direction="rx", start=time.time(), samplerate=SR)
    accepted = [store.audio(h, tone(0.1), SR) for _ in range(10)]
    assert accepted == [True] * 5 + [False] * 5
    assert store.dropped_s == pytest.approx(0.5)


def test_low_disk_is_told_before_the_disk_is_full(tmp_path: Path) -> None:
    said: list[tuple[bool, str]] = []
    store = RecordingStore(
        folder=tmp_path,
        low_disk_bytes=1 << 62,  # more than any disk has free: "low" at once
        on_low_disk=lambda low, message: said.append((low, message)),
    )
    store.open()
    record(store, "fire", time.time(), 0.2)
    store.close()
    assert said and said[0][0] is True and "MB free on the recordings' disk" in said[0][1]


_CRASHER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    sys.path.insert(0, sys.argv[2])
    from gateway.recorder.store import RecordingStore
    store = RecordingStore(folder=__import__("pathlib").Path(sys.argv[1]), flush_s=0.5)
    store.open()
    t = np.arange(160) / 8000
    block = (8000 * np.sin(2 * np.pi * 600 * t)).astype(np.int16)
    h = store.begin(channel="fire", direction="rx", start=time.time(), samplerate=8000)
    h2 = store.begin(channel="police", direction="tx", start=time.time(), samplerate=8000)
    print("recording", flush=True)
    while True:
        store.audio(h, block, 8000)
        store.audio(h2, block, 8000)
        time.sleep(0.02)
    """
)


def test_kill_9_mid_record_leaves_a_playable_file_and_a_repaired_row(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "rec"
    before = RecordingStore(folder=folder)
    before.open()
    record(before, "ems", time.time() - 100, 2.0)
    before.close()
    (earlier,) = before.query(Query())
    proc = subprocess.Popen(
        [sys.executable, "-c", _CRASHER, str(folder), str(ROOT)], stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"recording\n"
        time.sleep(3.0)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    after = RecordingStore(folder=folder)
    with caplog.at_level("WARNING", logger="gateway.recorder.store"):
        after.open()
    after.close()
    assert [r.channel for r in after.repaired] == ["fire", "police"]
    # One line for the crash, naming both records.
    (line,) = [r.getMessage() for r in caplog.records if "crash" in r.getMessage()]
    assert "2 recording(s) cut by a crash" in line and "fire rx" in line and "police tx" in line
    cut: Recording = after.repaired[0]
    assert cut.status == "incomplete" and cut.channel == "fire"
    # Flushed every 0.5 s: all but the last half second or so of the 3 s is there.
    assert 1.5 <= cut.duration_s <= 3.5, cut
    data, rate = sf.read(cut.path)
    assert len(data) / rate == pytest.approx(cut.duration_s, abs=0.05)
    assert cut.sha256 == hashlib.sha256(Path(cut.path).read_bytes()).hexdigest()
    assert after.get(earlier.id) == earlier  # what was recorded before is untouched
    assert {r.status for r in after.query(Query())} == {"complete", "incomplete"}


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    # Stored text is UTF-8: a lone surrogate cannot be in it (see the test below).
    transcript=st.text(
        st.characters(exclude_characters="\x00", exclude_categories=["Cs"]),
        min_size=1,
        max_size=40,
    ),
    cut=st.data(),
)
def test_text_search_finds_any_piece_of_a_transcript_literally(
    tmp_path: Path, transcript: str, cut: st.DataObject
) -> None:
    """A search string is text, never a pattern: %, _ and backslashes match themselves."""
    store = RecordingStore(folder=Path(tempfile.mkdtemp(dir=tmp_path)))
    store.open()
    h = store.begin(channel="tty", direction="rx", start=1.0, samplerate=SR)
    store.note(h, tty_text=transcript)
    store.end(h, 2.0)
    store.close()
    i = cut.draw(st.integers(0, len(transcript) - 1))
    j = cut.draw(st.integers(i + 1, len(transcript)))
    piece = transcript[i:j]
    assert [r.tty_text for r in store.query(Query(text=piece))] == [transcript]
    assert store.query(Query(text=piece + "\u2400never")) == []
    with pytest.raises(ValueError, match="NUL"):
        Query(text=piece + "\x00")


def test_a_lone_surrogate_is_stored_replaced_and_refused_as_a_search(tmp_path: Path) -> None:
    """JSON from CAD may carry "\\ud800": the writer must not fail on it, nor a search."""
    store = RecordingStore(folder=tmp_path)
    store.open()
    h = store.begin(channel="tty", direction="rx", start=1.0, samplerate=SR)
    store.note(h, tty_text="> 911\ud800 GA")
    store.end(h, 2.0)
    store.close()
    assert [r.tty_text for r in store.query(Query(text="GA"))] == ["> 911? GA"]
    with pytest.raises(ValueError, match="lone surrogate"):
        Query(text="911\ud800")


def test_a_time_query_finds_a_long_record_that_began_before_the_window(tmp_path: Path) -> None:
    """The longest span bounds a time query from below; a record longer than the window
    that began before it is still found, and so is one from an index made under a longer
    max_s than today's."""
    store = RecordingStore(folder=tmp_path, max_record_s=30.0)
    store.open()
    t0 = time.time() - 1000
    record(store, "fire", t0, 20.0)  # t0 .. t0 + 20
    record(store, "fire", t0 + 100, 1.0)
    store.close()
    found = store.query(Query(since=t0 + 15, until=t0 + 16))
    assert [round(r.duration_s) for r in found] == [20]
    assert store.query(Query(since=t0 + 21, until=t0 + 99)) == []
    again = RecordingStore(folder=tmp_path, max_record_s=5.0)  # a shorter max_s now
    again.open()
    again.close()
    assert [round(r.duration_s) for r in again.query(Query(since=t0 + 15, until=t0 + 16))] == [20]


@settings(max_examples=300, deadline=None)
@given(
    since=st.one_of(st.none(), st.text(max_size=40), st.datetimes().map(lambda d: d.isoformat())),
    until=st.one_of(
        st.none(),
        st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    ),
    local=st.booleans(),
)
def test_query_times_from_any_text_are_a_query_or_a_named_value_error(
    since: str | None, until: str | None, local: bool
) -> None:
    """Whatever a CAD, a browser or a technician sends as since/until (calendar ends,
    zones, garbage) is a query or a ValueError naming the filter: never another exception."""
    try:
        query = Query.of_text(
            channel=None,
            direction=None,
            since=since,
            until=until,
            text=None,
            limit=10,
            naive_is_local=local,
            names=("--since", "--until"),
        )
    except ValueError as exc:
        assert str(exc).startswith(("--since: ", "--until: ")), exc
    else:
        assert (query.since is None) == (since is None)
        assert (query.until is None) == (until is None)


def test_unit_ids_heard_during_a_record_are_kept_and_found(tmp_path: Path) -> None:
    store = RecordingStore(folder=tmp_path)
    store.open()
    t0 = 1_800_000_000.0
    h = store.begin(channel="fire", direction="rx", start=t0, samplerate=SR)
    store.audio(h, tone(1.0), SR)
    for unit in ("1234", "0042", "1234"):  # a PTT ID, an emergency, the post ID
        store.note(h, unit=unit)
    store.end(h, t0 + 1)
    record(store, "fire", t0 + 10, 1.0)
    store.close()
    newest, first = store.query(Query())
    assert first.units == ("1234", "0042") and newest.units == ()
    assert [r.id for r in store.query(Query(unit="0042"))] == [first.id]
    assert [r.id for r in store.query(Query(unit="1234"))] == [first.id]
    assert store.query(Query(unit="0423")) == []  # not a piece of "1234,0042"
    with pytest.raises(ValueError, match="4 hex digits"):
        Query(unit="12%4")


def test_an_index_from_before_unit_ids_opens_and_keeps_its_records(tmp_path: Path) -> None:
    store = RecordingStore(folder=tmp_path)
    store.open()
    record(store, "fire", 1_800_000_000.0, 1.0)
    store.close()
    with sqlite3.connect(tmp_path / "index.sqlite") as db:  # the older schema: no units column
        db.execute("ALTER TABLE recordings DROP COLUMN units")
    store = RecordingStore(folder=tmp_path)
    store.open()
    h = store.begin(channel="fire", direction="rx", start=1_800_000_100.0, samplerate=SR)
    store.note(h, unit="BEEF")
    store.end(h, 1_800_000_101.0)
    store.close()
    assert [r.units for r in store.query(Query())] == [("BEEF",), ()]
