"""`consolegw signal decode|encode` as a technician runs it: files in, lines or JSON out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile

from gateway.dsp.dtmf import dtmf_signal
from tests.cli_tools import consolegw

ROOT = Path(__file__).resolve().parent.parent


def test_encode_then_decode(tmp_path: Path) -> None:
    wav = tmp_path / "page.wav"
    made = consolegw("signal", "encode", "dtmf", "911*0#A", "-o", str(wav), "--rate", "16000")
    assert made.returncode == 0, made.stderr
    assert "wrote" in made.stderr
    assert soundfile.info(str(wav)).samplerate == 16000
    decoded = consolegw("signal", "decode", str(wav))
    assert decoded.returncode == 0, decoded.stderr
    lines = decoded.stdout.splitlines()
    assert [ln.split()[3] for ln in lines[:-1]] == list("911*0#A")
    assert "941 + 1336 Hz" in lines[4], "0 is 941 + 1336 Hz"
    assert lines[-1].endswith("DTMF digits 911*0#A")
    assert "-0.0" not in decoded.stdout


def test_json_and_every_channel_of_a_flac(tmp_path: Path) -> None:
    """A two-channel recording (two radios): each channel's digits, in time order."""
    rate = 8000
    left = dtmf_signal("123", rate, on_s=0.08, off_s=0.08)
    right = np.concatenate((np.zeros(rate // 2, np.float32), dtmf_signal("45", rate)))
    frames = np.zeros((max(len(left), len(right)) + rate, 2), np.float32)
    frames[: len(left), 0], frames[: len(right), 1] = left, right
    flac = tmp_path / "two.flac"
    soundfile.write(str(flac), frames, rate, subtype="PCM_16")
    decoded = consolegw("signal", "decode", "--json", str(flac))
    assert decoded.returncode == 0, decoded.stderr
    events = [json.loads(line) for line in decoded.stdout.splitlines()]
    digits = [(e["channel"], e["digit"]) for e in events if e["type"] == "dtmf.digit"]
    assert digits == [(0, "1"), (0, "2"), (0, "3"), (1, "4"), (1, "5")]
    sequences = [(e["channel"], e["digits"]) for e in events if e["type"] == "dtmf.digits"]
    assert sorted(sequences) == [(0, "123"), (1, "45")]
    assert all(events[i]["start"] <= events[i + 1]["end"] for i in range(len(events) - 1))


def test_nothing_found_and_bad_input(tmp_path: Path) -> None:
    quiet = tmp_path / "quiet.wav"
    soundfile.write(str(quiet), np.zeros(8000, np.float32), 8000)
    decoded = consolegw("signal", "decode", str(quiet))
    assert (decoded.returncode, decoded.stdout) == (0, "")
    assert "no signalling found" in decoded.stderr

    text = tmp_path / "notes.txt"
    text.write_text("not audio\n")
    for args, said in (
        (("decode", str(text)), "not an audio file"),
        (("decode", str(tmp_path / "missing.wav")), "missing.wav"),
        (("encode", "dtmf", "12E", "-o", str(tmp_path / "x.wav")), "not DTMF digits: 'E'"),
        (("encode", "dtmf", "1", "-o", str(tmp_path / "x.wav"), "--on-ms", "5"), "--on-ms"),
        (("encode", "dtmf", "1", "-o", str(tmp_path / "x.wav"), "--rate", "4000"), "6000"),
    ):
        result = consolegw("signal", *args)
        assert result.returncode == 2, (args, result.stderr)
        assert said in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    low = tmp_path / "low.wav"
    soundfile.write(str(low), np.zeros(4000, np.float32), 4000)
    result = consolegw("signal", "decode", str(low))
    assert result.returncode == 2 and "too low" in result.stderr


def test_selcall_encode_then_decode_in_each_standard(tmp_path: Path) -> None:
    """A technician writes a call in each standard and reads it back: the standard, the
    digits with repeats resolved and the tones as sent; a DTMF string beside it too."""
    for standard in ("ccir", "zvei1", "eea"):
        wav = tmp_path / f"{standard}.wav"
        made = consolegw(
            "signal", "encode", "selcall", "11223", "--standard", standard, "-o", str(wav)
        )
        assert made.returncode == 0, made.stderr
        decoded = consolegw("signal", "decode", str(wav))
        assert decoded.returncode == 0, decoded.stderr
        (line,) = decoded.stdout.splitlines()
        assert line.endswith(f"selcall {standard.upper()} 11223 (tones 1E2E3)"), line
        as_json = consolegw("signal", "decode", "--json", str(wav))
        (event,) = [json.loads(x) for x in as_json.stdout.splitlines()]
        assert event["type"] == "selcall.detected" and event["standard"] == standard
        assert (event["digits"], event["tones"]) == ("11223", "1E2E3")
    stretched = tmp_path / "long.wav"
    made = consolegw(
        "signal", "encode", "selcall", "54321", "--first-ms", "600", "-o", str(stretched)
    )
    assert made.returncode == 0, made.stderr
    assert consolegw("signal", "decode", str(stretched)).stdout.endswith("CCIR 54321\n")
    for args, said in (
        (("selcall", "12E45"), "E is the repeat"),
        (("selcall", "12345", "--first-ms", "9000"), "--first-ms"),
        (("selcall", "12345", "--standard", "zvei9"), "invalid choice"),
    ):
        result = consolegw("signal", "encode", *args, "-o", str(tmp_path / "x.wav"))
        assert result.returncode == 2, (args, result.stderr)
        assert said in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_page_encode_then_decode_with_the_pages_named(tmp_path: Path) -> None:
    wav = tmp_path / "page.wav"
    made = consolegw("signal", "encode", "page", "600.9/788.5", "-o", str(wav))
    assert made.returncode == 0, made.stderr
    decoded = consolegw(
        "signal", "decode", str(wav), "--page", "Engine 5=600.9/788.5", "--page", "All=445.7"
    )
    assert decoded.returncode == 0, decoded.stderr
    (line,) = decoded.stdout.splitlines()
    assert "page Engine 5: 600.9 Hz" in line and "788.5 Hz" in line, line
    assert consolegw("signal", "decode", str(wav)).stdout == "", "no page named: none heard"
    long = tmp_path / "all.wav"
    assert consolegw("signal", "encode", "page", "445.7", "-o", str(long)).returncode == 0
    as_json = consolegw("signal", "decode", "--json", str(long), "--page", "All=445.7")
    (event,) = [json.loads(x) for x in as_json.stdout.splitlines()]
    assert event["type"] == "page.detected" and event["b_hz"] is None
    for args, said in (
        (("decode", str(wav), "--page", "Engine 5"), "NAME=A/B"),
        (("decode", str(wav), "--page", "E=600.9/601"), "differ by 1 %"),
        (("encode", "page", "60x", "-o", str(tmp_path / "x.wav")), "page tones"),
        (("encode", "page", "9000", "-o", str(tmp_path / "x.wav")), "200-3000 Hz"),
    ):
        result = consolegw("signal", *args)
        assert result.returncode == 2, (args, result.stderr)
        assert said in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_mdc1200_encode_then_decode(tmp_path: Path) -> None:
    """A packet file begins and ends with the burst (no silence around it): still read."""
    for what, rate, line in (
        ("ptt_id:1234", 8000, "MDC-1200 unit 1234 ptt_id (op 01 arg 80)"),
        ("emergency:0042", 16000, "MDC-1200 EMERGENCY unit 0042 emergency (op 00 arg 81)"),
        ("3589:1234:830D5678", 48000, "MDC-1200 unit 1234 call_alert to 5678 (op 35 arg 89)"),
    ):
        wav = tmp_path / f"{rate}.wav"
        made = consolegw("signal", "encode", "mdc1200", what, "-o", str(wav), "--rate", str(rate))
        assert made.returncode == 0, made.stderr
        decoded = consolegw("signal", "decode", str(wav))
        assert decoded.returncode == 0, decoded.stderr
        assert decoded.stdout.strip().endswith(line), decoded.stdout
    as_json = consolegw("signal", "decode", "--json", str(tmp_path / "16000.wav"))
    event = json.loads(as_json.stdout)
    assert (event["type"], event["unit"], event["kind"]) == (
        "emergency.raised",
        "0042",
        "emergency",
    )
    for bad in ("ptt_id", "ptt_id:12345", "bogus:1234", "3589:1234", "0180:1234:00"):
        refused = consolegw("signal", "encode", "mdc1200", bad, "-o", str(tmp_path / "x.wav"))
        assert refused.returncode == 2, (bad, refused.stderr)
        assert "MDC-1200 packet" in refused.stderr
