"""`consolegw plot` on known recordings: the PNG, the level panel and the markers."""

from __future__ import annotations

import json
import struct
import wave
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from gateway.cli import main
from gateway.tools.plot import (
    Marker,
    Recording,
    build_figure,
    level_dbfs,
    make_plot,
    parse_time,
    place_markers,
    read_wav,
)

RATE = 8000
START = "2026-03-01T10:00:00.000Z"


def _signal() -> np.ndarray:
    """1 s silence, 2 s of 1 kHz at half scale (-9.03 dBFS RMS), 1 s silence, 1 s noise."""
    t = np.arange(RATE * 5) / RATE
    x = np.zeros_like(t)
    x[RATE : 3 * RATE] = 0.5 * np.sin(2 * np.pi * 1000 * t[RATE : 3 * RATE])
    x[4 * RATE :] = 0.05 * np.random.default_rng(7).standard_normal(RATE)
    return x


def _write_pcm16(path: Path, x: np.ndarray, channels: int = 1) -> None:
    frames = np.repeat(x[:, None], channels, axis=1) if channels > 1 else x
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes((np.clip(frames, -1, 1) * 32767).astype("<i2").tobytes())


def _write_float32(path: Path, x: np.ndarray) -> None:
    data = x.astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, RATE, RATE * 4, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def _event(offset_s: float, kind: str, source_id: str = "fire", **data: str) -> dict[str, object]:
    seconds = int(offset_s)
    millis = round((offset_s - seconds) * 1000)
    return {
        "event_id": f"e{offset_s}{kind}",
        "seq": 1,
        "ts": f"2026-03-01T10:00:{seconds:02d}.{millis:03d}Z",
        "type": kind,
        "gateway": "gw",
        "source": "channel",
        "source_id": source_id,
        "data": data,
    }


EVENTS = [
    _event(1.0, "ptt.on", reason="request"),
    _event(3.0, "ptt.off", reason="lease_expired"),
    _event(4.0, "cos.on"),
    _event(4.5, "fault.raised", fault="cos_flapping", message="carrier changed 10 times"),
    _event(2.0, "cos.on", source_id="ems"),  # another channel: not drawn
    _event(30.0, "cos.off"),  # after the recording: not drawn
]


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def _marker_lines(fig: Figure) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            gid = line.get_gid() or ""
            if gid.startswith("marker:"):
                found.setdefault(gid[7:], []).append(float(np.asarray(line.get_xdata())[0]))
    return found


def test_plot_with_sidecar_and_events(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wav = tmp_path / "recall-fire.wav"
    _write_pcm16(wav, _signal())
    (tmp_path / "recall-fire.json").write_text(json.dumps({"start_ts": START, "channel": "fire"}))
    events = tmp_path / "events.json"
    events.write_text(json.dumps(EVENTS))
    png = tmp_path / "out.png"
    code = main(
        ["plot", str(wav), "-o", str(png), "--events", str(events), "--size", "1000x700", "--json"]
    )
    info = json.loads(capsys.readouterr().out)
    assert code == 0
    assert _png_size(png) == (1000, 700)
    assert info["duration_s"] == 5.0 and info["channel"] == "fire" and info["rate"] == RATE
    assert [(m["type"], round(m["t"], 3)) for m in info["markers"]] == [
        ("ptt.on", 1.0),
        ("ptt.off", 3.0),
        ("cos.on", 4.0),
        ("fault.raised", 4.5),
    ]
    assert info["markers"][3]["label"] == "fault: cos_flapping"
    assert any("outside the recording" in note for note in info["notes"])
    assert -6.1 < info["peak_dbfs"] < -5.9


def test_figure_draws_markers_spans_and_levels() -> None:
    recording = Recording(samples=_signal(), rate=RATE, channels=1)
    notes: list[str] = []
    markers = place_markers(
        EVENTS, start=parse_time(START), channel="fire", duration_s=5.0, notes=notes
    )
    fig = build_figure(recording, markers, title="t", size_px=(800, 600))
    lines = _marker_lines(fig)
    # One line per marker on each of the three panels, at the event's offset.
    assert lines == {
        "ptt.on": [1.0] * 3,
        "ptt.off": [3.0] * 3,
        "cos.on": [4.0] * 3,
        "fault.raised": [4.5] * 3,
    }
    spans = [p for ax in fig.axes for p in ax.patches if (p.get_gid() or "").startswith("span:")]
    extents = sorted((p.get_gid(), round(p.get_x(), 3), round(p.get_width(), 3)) for p in spans)
    # PTT keyed 1..3 s; COS on at 4 s and still on at the end of the recording.
    assert extents == [("span:cos", 4.0, 1.0), ("span:ptt", 1.0, 2.0)]

    t, level = level_dbfs(recording.samples, RATE)
    tone = level[(t >= 1.1) & (t < 2.9)]
    assert np.allclose(tone, -9.03, atol=0.1)
    assert level[t < 0.9].max() == pytest.approx(-100.0)  # digital silence at the floor
    assert len(fig.axes) >= 3


def test_formats_and_no_start_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x = _signal()
    wav = tmp_path / "float.wav"
    _write_float32(wav, x)
    got = read_wav(wav)
    assert got.rate == RATE and np.allclose(got.samples, x, atol=1e-6)
    stereo = tmp_path / "stereo.wav"
    _write_pcm16(stereo, x, channels=2)
    assert np.allclose(read_wav(stereo, column=1).samples, x, atol=1e-4)

    # No sidecar, no --start: the first event is taken as the start of the file.
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(json.dumps(e) for e in EVENTS[:2]))
    info = make_plot(wav, tmp_path / "f.png", events_path=events, size_px=(600, 400))
    assert [(m["type"], m["t"]) for m in info.markers] == [("ptt.on", 0.0), ("ptt.off", 2.0)]
    assert any("first event placed at t=0" in note for note in info.notes)
    assert _png_size(tmp_path / "f.png") == (600, 400)


def test_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not a wav at all")
    assert main(["plot", str(junk), "-o", str(tmp_path / "x.png")]) == 1
    assert capsys.readouterr().err.strip() == (
        f"consolegw: {junk}: not a WAV file (nor Ogg/Opus, FLAC or another libsndfile format)"
    )
    missing = tmp_path / "missing.wav"
    assert main(["plot", str(missing), "-o", str(tmp_path / "x.png")]) == 1
    assert "cannot read" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["plot", str(junk), "-o", str(tmp_path / "x.jpg")])
    assert exc.value.code == 2


def test_marker_registry_draws_new_types() -> None:
    from gateway.tools import plot

    plot.register_marker("tty.text", color="#17becf", linestyle=":", label="TTY")
    try:
        recording = plot.Recording(samples=np.zeros(RATE), rate=RATE, channels=1)
        fig = build_figure(recording, [Marker(t=0.5, type="tty.text", label="TTY")], title="x")
        assert _marker_lines(fig) == {"tty.text": [0.5] * 3}
    finally:
        del plot.MARKER_STYLES["tty.text"]
