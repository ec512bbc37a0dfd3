"""`consolegw recordings`: list, export (one record, and a span stitched on its time line)
and plot, on an index and Ogg/Opus files the recorder's own store wrote."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest

from gateway.cli import main
from gateway.recorder.store import RecordingStore
from tests.tools.helpers import SR, record_tone

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    store = RecordingStore(folder=tmp_path / "rec")
    store.open()
    record_tone(store, "fire", T0, 2.0)
    record_tone(store, "fire", T0 + 5, 1.0, tty_text="HELLO 911 GA\n")
    record_tone(store, "ems", T0 + 3, 1.0, fault="cos_stuck")
    store.close()
    return tmp_path / "rec"


def _wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as w:
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        return data.astype(np.float64) / 32767, w.getframerate()


def test_list_table_and_json(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recordings", "--folder", str(folder), "list"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 4 and "HELLO 911 GA" in table[1] and "cos_stuck" in table[2]
    assert main(["recordings", "--folder", str(folder), "list", "--json", "--channel", "fire"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["channel"] for r in listed] == ["fire", "fire"]
    assert listed[0]["start_ts"] == "2027-01-15T08:00:05.000Z"
    assert main(["recordings", "--folder", str(folder), "list", "--text", "911", "--json"]) == 0
    assert [r["tty_text"] for r in json.loads(capsys.readouterr().out)] == ["HELLO 911 GA\n"]


def test_export_one_record(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "one.wav"
    assert main(["recordings", "--folder", str(folder), "export", "1", "-o", str(out)]) == 0
    samples, rate = _wav(out)
    assert rate == SR and abs(len(samples) / SR - 2.0) < 0.05
    rms = float(np.sqrt(np.mean(samples[SR // 2 : -SR // 2] ** 2)))
    assert abs(rms - 0.3 / np.sqrt(2)) < 0.02  # Opus keeps the tone's level


def test_export_a_span_stitched_on_its_time_line(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "span.wav"
    since, until = "2027-01-15T07:59:59Z", "2027-01-15T08:00:07Z"
    args = ["--channel", "fire", "--since", since, "--until", until, "-o", str(out)]
    assert main(["recordings", "--folder", str(folder), "export", *args]) == 0
    samples, _ = _wav(out)
    assert len(samples) == 8 * SR
    loud = np.abs(samples.reshape(-1, SR // 10)).max(axis=1) > 0.1  # per 100 ms
    # Silence, the first record (1-3 s), silence, the second (6-7 s), silence.
    assert not loud[:9].any() and loud[11:29].all() and not loud[31:59].any()
    assert loud[61:69].all() and not loud[71:].any()


def test_plot_of_a_record(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "rec.png"
    assert main(["recordings", "--folder", str(folder), "plot", "2", "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_errors_name_the_problem(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["recordings", "--folder", str(tmp_path / "none"), "list"]) == 1
    assert "no recorder index here" in capsys.readouterr().err
    assert main(["recordings", "--folder", str(folder), "list", "--since", "noon"]) == 1
    assert "--since: not an RFC 3339 time" in capsys.readouterr().err
    out = str(tmp_path / "x.wav")
    assert main(["recordings", "--folder", str(folder), "export", "99", "-o", out]) == 1
    assert "no recording 99" in capsys.readouterr().err
    assert main(["recordings", "--folder", str(folder), "export", "-o", out]) == 1
    assert "give a recording id, or --channel, --since and --until" in capsys.readouterr().err
