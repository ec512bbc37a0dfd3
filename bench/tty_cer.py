#!/usr/bin/env python3
"""TTY decoder benchmark: consolegw vs `minimodem --rx tdd`, side by side on the same files.

For each condition and SNR (-12..+6 dB, noise in a 3 kHz band, 300-3300 Hz, relative to the
mean power of the TTY signal while its carrier is on), a few TTY transmissions are encoded,
impaired, written as 16-bit WAV files and decoded by both decoders. Reported:
- character error rate (edit distance / reference length) per SNR, and the SNR where each
  decoder reaches 1 % CER (log-linear interpolation; the lowest SNR above which every point
  is at or under 1 %);
- decode throughput (seconds of audio per CPU second; ours in-process with one BLAS thread,
  minimodem's from the children's rusage);
- false characters per minute on band noise, speech-like audio and silence.
The last line of output is one JSON object with every figure.

Usage: bench/tty_cer.py [--quick] [--seed N] [--minutes M] [--jobs J]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # measure one core
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import json
import math
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.dsp.tty import BAUD_45, BAUD_50, TtyChar, TtyDecoder, TtyEncoder
from gateway.dsp.tty_channel import add_noise, g711, speech_like, tilt

FS = 8000
WORDS = [
    "HELLO",
    "THIS",
    "IS",
    "911",
    "WHAT",
    "IS",
    "YOUR",
    "EMERGENCY",
    "GA",
    "MY",
    "HUSBAND",
    "FELL",
    "DOWN",
    "AND",
    "CANNOT",
    "GET",
    "UP",
    "ADDRESS",
    "IS",
    "4127",
    "N",
    "MAIN",
    "ST",
    "APT",
    "3B",
    "CALL",
    "BACK",
    "555-0142",
    "PLEASE",
    "HURRY",
    "Q",
    "SK",
    "HE",
    "IS",
    "72",
    "YEARS",
    "OLD",
    "BREATHING",
    "YES",
    "NO",
    "AMBULANCE",
    "ON",
    "THE",
    "WAY",
    "STAY",
    "ON",
    "LINE",
    "UNIT",
    "12",
    "ETA",
    "5",
    "MIN",
    "DOOR",
    "UNLOCKED?",
    "OK",
    "THANK",
    "YOU",
    "(RED",
    "HOUSE)",
    "CORNER",
    "OF",
    "5TH",
    "&",
    "ELM",
]


@dataclass(frozen=True)
class Condition:
    name: str
    baud: float = BAUD_45
    stop_bits: float = 2.0
    offset_hz: float = 0.0
    g711: bool = False
    tilt_db: float = 0.0
    amplitude: float = 0.5


CONDITIONS = (
    Condition("clean"),
    Condition("offset_15hz", offset_hz=15.0),
    Condition("offset_30hz", offset_hz=30.0),
    Condition("baud_50", baud=BAUD_50),
    Condition("stop_1.5", stop_bits=1.5),
    Condition("g711", g711=True, amplitude=0.1),
    Condition("imbalance_6db", tilt_db=6.0),
)


@dataclass
class Point:
    ref_chars: int = 0
    ours_err: int = 0
    mm_err: int = 0


@dataclass
class Totals:
    audio_s: float = 0.0
    ours_cpu: float = 0.0
    mm_cpu: float = 0.0
    points: dict[str, dict[float, Point]] = field(default_factory=dict)


def message(rng: np.random.Generator, chars: int) -> str:
    out: list[str] = []
    n = 0
    while n < chars:
        w = str(WORDS[int(rng.integers(len(WORDS)))])
        out.append(w)
        n += len(w) + 1
    return " ".join(out)[:chars].strip()


def make_signal(
    cond: Condition, text: str, snr_db: float, rng: np.random.Generator
) -> npt.NDArray[np.float32]:
    enc = TtyEncoder(
        sample_rate=FS,
        baud=cond.baud,
        stop_bits=cond.stop_bits,
        amplitude=cond.amplitude,
        mark_hz=1400.0 + cond.offset_hz,
        space_hz=1800.0 + cond.offset_hz,
    )
    tx = enc.encode(text).astype(np.float64)
    if cond.tilt_db:
        tx = tilt(tx, cond.tilt_db, sample_rate=FS).astype(np.float64)
    pad = np.zeros(int(0.7 * FS))
    power = float(np.mean(tx**2))  # carrier on for the whole transmission
    x = add_noise(
        np.concatenate([pad, tx, pad]), snr_db, sample_rate=FS, signal_power=power, rng=rng
    )
    if cond.g711:
        x = g711(x, sample_rate=FS)
    return x


def write_wav(path: Path, x: npt.NDArray[np.float32]) -> None:
    pcm = np.clip(np.rint(x * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(FS)
        w.writeframes(pcm.tobytes())


def read_back(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """What the WAV file holds, so both decoders see the same 16-bit samples."""
    out: npt.NDArray[np.float32] = (np.clip(np.rint(x * 32767.0), -32768, 32767) / 32767.0).astype(
        np.float32
    )
    return out


def ours(x: npt.NDArray[np.float32]) -> tuple[str, float]:
    t0 = time.process_time()
    dec = TtyDecoder(sample_rate=FS)
    events = dec.feed(x) + dec.flush()
    cpu = time.process_time() - t0
    return "".join(e.char for e in events if isinstance(e, TtyChar)), cpu


def minimodem(path: Path) -> tuple[str, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = subprocess.run(
        ["minimodem", "--rx", "tdd", "-q", "-f", str(path)],
        capture_output=True,
        check=False,
        timeout=600,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return res.stdout.decode("latin-1"), cpu


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance, one numpy row per character of `a`."""
    if not a:
        return len(b)
    if not b:
        return len(a)
    bv = np.frombuffer(b.encode("latin-1", "replace"), dtype=np.uint8)
    ar = np.arange(len(b) + 1, dtype=np.int64)
    prev = ar.copy()
    for i, ch in enumerate(a.encode("latin-1", "replace"), start=1):
        sub = prev[:-1] + (bv != ch)
        cur = np.empty_like(prev)
        cur[0] = i
        cur[1:] = np.minimum(prev[1:] + 1, sub)
        # insertions: cur[j] = min_k cur[k] + (j - k)
        cur = np.minimum.accumulate(cur - ar) + ar
        prev = cur
    return int(prev[-1])


def snr_at_1pct(curve: dict[float, float]) -> float | None:
    """Lowest SNR from which every point is at or under 1 % CER (interpolated in log CER)."""
    snrs = sorted(curve)
    ok = [curve[s] <= 0.01 for s in snrs]
    if not ok[-1]:
        return None
    i = len(snrs) - 1
    while i > 0 and ok[i - 1]:
        i -= 1
    if i == 0:
        return snrs[0]
    s_hi, s_lo = snrs[i], snrs[i - 1]
    c_hi, c_lo = max(curve[s_hi], 1e-4), curve[s_lo]
    frac = (math.log10(c_lo) - math.log10(0.01)) / (math.log10(c_lo) - math.log10(c_hi))
    return round(s_lo + frac * (s_hi - s_lo), 2)


def false_chars(
    kind: str, minutes: float, rng: np.random.Generator, tmp: Path, has_mm: bool
) -> dict[str, float]:
    n = int(minutes * 60 * FS)
    if kind == "noise":
        x = rng.standard_normal(n).astype(np.float32) * 0.1
    elif kind == "speech":
        x = speech_like(minutes * 60, sample_rate=FS, rng=rng)
    else:
        x = (rng.standard_normal(n) * 10 ** (-80 / 20)).astype(np.float32)
    x = read_back(x)
    text, _cpu = ours(x)
    out = {"ours": len(text) / minutes}
    if has_mm:
        path = tmp / f"false_{kind}.wav"
        write_wav(path, x)
        mm_text, _ = minimodem(path)
        out["minimodem"] = len(mm_text.strip()) / minutes
        path.unlink()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer characters per point (~1 min)")
    ap.add_argument("--seed", type=int, default=20240511)
    ap.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="minutes of noise/speech/silence each (default 10, quick 1)",
    )
    ap.add_argument("--jobs", type=int, default=2, help="minimodem processes in parallel")
    ap.add_argument("--conditions", default="", help="comma-separated subset")
    args = ap.parse_args()

    files_per_point, chars_per_file = (2, 120) if args.quick else (4, 250)
    minutes = args.minutes if args.minutes is not None else (1.0 if args.quick else 10.0)
    snrs = [float(s) for s in range(-12, 7)]
    conds = [c for c in CONDITIONS if not args.conditions or c.name in args.conditions.split(",")]
    has_mm = shutil.which("minimodem") is not None
    if not has_mm:
        print("minimodem not found: consolegw figures only", file=sys.stderr)
    rng = np.random.default_rng(args.seed)
    tot = Totals()
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="tty_cer_") as tmpd,
        ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool,
    ):
        tmp = Path(tmpd)
        for cond in conds:
            tot.points[cond.name] = {}
            for snr in snrs:
                pt = Point()
                jobs = []
                for k in range(files_per_point):
                    text = message(rng, chars_per_file)
                    x = read_back(make_signal(cond, text, snr, rng))
                    path = tmp / f"{cond.name}_{snr:+.0f}_{k}.wav"
                    if has_mm:
                        write_wav(path, x)
                        jobs.append((text, pool.submit(minimodem, path), path))
                    got, cpu = ours(x)
                    tot.ours_cpu += cpu
                    tot.audio_s += len(x) / FS
                    pt.ref_chars += len(text)
                    pt.ours_err += edit_distance(text, got)
                    if not has_mm:
                        pt.mm_err += len(text)
                for text, fut, path in jobs:
                    mm_text, mm_cpu = fut.result()
                    tot.mm_cpu += mm_cpu
                    pt.mm_err += edit_distance(text, mm_text.strip("\r\n"))
                    path.unlink()
                tot.points[cond.name][snr] = pt
            print(f"# {cond.name} done ({time.monotonic() - started:.0f} s)", file=sys.stderr)
        false = {
            k: false_chars(k, minutes, rng, tmp, has_mm) for k in ("noise", "speech", "silence")
        }

    # -- report ---------------------------------------------------------------------------
    result: dict[str, object] = {"snr_db": snrs, "conditions": {}}
    print(
        f"TTY CER benchmark: {files_per_point} x {chars_per_file} characters per point, "
        f"noise in 300-3300 Hz, seed {args.seed}"
    )
    header = "SNR dB     " + " ".join(f"{s:>6.0f}" for s in snrs)
    clean_ours = None
    cond_out: dict[str, object] = {}
    ours_1pct: dict[str, float | None] = {}
    for cond in conds:
        pts = tot.points[cond.name]
        c_ours = {s: p.ours_err / p.ref_chars for s, p in pts.items()}
        c_mm = {s: p.mm_err / p.ref_chars for s, p in pts.items()}
        s_ours, s_mm = snr_at_1pct(c_ours), snr_at_1pct(c_mm) if has_mm else None
        ours_1pct[cond.name] = s_ours
        if cond.name == "clean":
            clean_ours = s_ours
        print(f"\n[{cond.name}]  1% CER at: consolegw {_fmt(s_ours)} dB, minimodem {_fmt(s_mm)} dB")
        print(header)
        print("consolegw  " + " ".join(f"{c_ours[s]:6.3f}" for s in snrs))
        if has_mm:
            print("minimodem  " + " ".join(f"{c_mm[s]:6.3f}" for s in snrs))
        cond_out[cond.name] = {
            "cer_consolegw": [round(c_ours[s], 4) for s in snrs],
            "cer_minimodem": [round(c_mm[s], 4) for s in snrs] if has_mm else None,
            "snr_1pct_consolegw": s_ours,
            "snr_1pct_minimodem": s_mm,
        }
    result["conditions"] = cond_out
    if clean_ours is not None:
        result["impairment_penalty_db"] = {
            name: None if s is None else round(s - clean_ours, 2) for name, s in ours_1pct.items()
        }
    thr_ours = tot.audio_s / tot.ours_cpu if tot.ours_cpu else None
    thr_mm = tot.audio_s / tot.mm_cpu if has_mm and tot.mm_cpu else None
    result["throughput_x_realtime"] = {
        "consolegw": round(thr_ours, 1) if thr_ours else None,
        "minimodem": round(thr_mm, 1) if thr_mm else None,
        "ratio_consolegw_to_minimodem": round(thr_ours / thr_mm, 4)
        if thr_ours and thr_mm
        else None,
        "audio_seconds": round(tot.audio_s, 1),
    }
    result["false_chars_per_minute"] = false
    result["false_minutes_each"] = minutes
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    print(
        f"\nthroughput (audio s per CPU s): consolegw {_fmt(thr_ours, 0)}x, "
        f"minimodem {_fmt(thr_mm, 0)}x"
    )
    for kind, v in false.items():
        print(
            f"false chars/min on {kind} ({minutes:g} min): consolegw {v['ours']:.2f}"
            + (f", minimodem {v['minimodem']:.2f}" if "minimodem" in v else "")
        )
    print(json.dumps(result, separators=(",", ":")))
    return 0


def _fmt(v: float | None, nd: int = 1) -> str:
    return "n/a" if v is None else f"{v:.{nd}f}"


if __name__ == "__main__":
    raise SystemExit(main())
