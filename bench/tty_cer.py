#!/usr/bin/env python3
"""TTY decoder benchmark: consolegw vs minimodem, side by side, on signals made elsewhere.

Signals: `minimodem --tx` makes the audio (45.45 baud 1400/1800 Hz, 2 stop bits; and each
impairment), so the decoder is measured on a modulator that is not ours. minimodem's
transmitter unshifts on space; a caller that keeps the shift (TIA-825-A) is made by our
encoder (`TtyEncoder(convention="keep")`), as minimodem cannot send that way. Messages:
random 160-character lines of letter words, numbers, mixed groups and punctuation, half a
second of silence before and after, noise in a 3 kHz band (300-3300 Hz) at an SNR relative
to the TTY signal's mean power while its carrier is on. Both decoders see the same 16-bit
WAV samples; ours runs with its defaults (shift convention and rate found from the
signal), minimodem with the mode that matches each signal (its rate and stop length).

Reported, per condition and SNR: character error rate (Levenshtein distance / reference
length) with a 95 % Wilson interval on the character errors; the SNR where each decoder
reaches 1 % CER (log-linear interpolation between the grid points around it; the interval
from the Wilson bounds of those points); our margin over minimodem; each impairment's
penalty against the clean figure; shift errors on address-style text from senders of both
conventions at 0 dB and above; false characters in noise, speech-like audio and silence;
throughput (seconds of audio per CPU second: ours in process on one core, minimodem from
its children's rusage) and the ratio. The last line is one JSON object with every figure.

Character errors cluster (a lost shift garbles a word), so the Wilson interval, which
treats characters as independent, is on the narrow side.

Usage: bench/tty_cer.py [--quick] [--seed N] [--chars N] [--minutes M] [--jobs J]
                        [--conditions a,b] [--snr LO,HI,STEP]
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
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.dsp.tty import TtyDecoder, TtyEncoder, final_text
from hw_sim.phone_line import add_noise, g711, speech_like, tilt

FS = 8000
Audio = npt.NDArray[np.float32]
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
DIGITS = "0123456789"
PUNCT = "-?:().,'/$!&#\";"
ADDRESSES = (
    "1234 MAIN ST APT 5B",
    "CALL 555 1212 NOW",
    "CALL 911 555 1212 HELLO",
    "4127 N ELM ST 2ND FLOOR",
    "UNIT 12 ETA 5 MIN GA",
    "MY ADDRESS IS 88 OAK AVE APT 3 GA",
    "ROOM 12 GA",
    "HE IS 72 YEARS OLD 2 PILLS AT 9 PM",
)


@dataclass(frozen=True)
class Condition:
    name: str
    baud: str = "45.45"
    stop_bits: float = 2.0
    offset_hz: float = 0.0
    g711: bool = False
    tilt_db: float = 0.0
    amplitude: float = 0.5
    sender: str = "minimodem"  # or "keep": our encoder, a keep-shift caller


CONDITIONS = (
    Condition("clean"),
    Condition("keep_sender", sender="keep"),
    Condition("stop_1.5", stop_bits=1.5),
    Condition("baud_50", baud="50", stop_bits=1.5),
    Condition("offset_15hz", offset_hz=15.0),
    Condition("offset_30hz", offset_hz=30.0),
    Condition("g711_offset_15hz", g711=True, offset_hz=15.0, amplitude=0.1),
    Condition("imbalance_6db", tilt_db=6.0),
)


def token(rng: np.random.Generator) -> str:
    r = rng.random()
    if r < 0.5:
        return "".join(rng.choice(list(LETTERS), size=int(rng.integers(1, 9))))
    if r < 0.75:
        return "".join(rng.choice(list(DIGITS), size=int(rng.integers(1, 6))))
    if r < 0.87:
        return "".join(rng.choice(list(DIGITS + LETTERS), size=int(rng.integers(2, 5))))
    word = "".join(rng.choice(list(LETTERS + DIGITS), size=int(rng.integers(1, 6))))
    p = str(rng.choice(list(PUNCT)))
    k = rng.random()
    return p + word if k < 0.3 else word + p if k < 0.8 else p


def message(rng: np.random.Generator, chars: int = 160) -> str:
    out = ""
    while len(out) < chars:
        out += token(rng) + " "
    return out[:chars].strip()


def minimodem_mode(cond: Condition) -> list[str]:
    mark, space = 1400.0 + cond.offset_hz, 1800.0 + cond.offset_hz
    stop = f"{cond.stop_bits:g}"
    return ["--baudot", "--stopbits", stop, "-M", f"{mark:g}", "-S", f"{space:g}", cond.baud]


def transmit(cond: Condition, text: str, tmp: Path) -> Audio:
    """The clean transmission at full scale (minimodem's, or our keep-shift caller's)."""
    if cond.sender == "keep":
        enc = TtyEncoder(
            sample_rate=FS,
            baud=float(cond.baud),
            stop_bits=cond.stop_bits,
            amplitude=1.0,
            mark_hz=1400.0 + cond.offset_hz,
            space_hz=1800.0 + cond.offset_hz,
            lead_in_s=0.05,
            hold_s=0.05,
            convention="keep",
        )
        return enc.encode(text)
    path = tmp / "tx.wav"
    subprocess.run(
        ["minimodem", "--tx", *minimodem_mode(cond), "-R", str(FS), "-f", str(path)],
        input=text.encode(),
        check=True,
        capture_output=True,
        timeout=120,
    )
    return read_wav(path)


def impair(cond: Condition, tx: Audio, snr_db: float, rng: np.random.Generator) -> Audio:
    x = tx.astype(np.float64) * cond.amplitude
    if cond.tilt_db:
        x = tilt(x, cond.tilt_db, sample_rate=FS).astype(np.float64)
    power = float(np.mean(x**2))  # the carrier is on for the whole transmission
    pad = np.zeros(FS // 2)
    y = add_noise(
        np.concatenate([pad, x, pad]), snr_db, sample_rate=FS, signal_power=power, rng=rng
    )
    if cond.g711:
        y = g711(y, sample_rate=FS)
    return quantise(y)


def quantise(x: npt.NDArray[np.floating]) -> Audio:
    """What a 16-bit WAV file holds, so both decoders see the same samples."""
    pcm = np.clip(np.rint(np.asarray(x) * 32767.0), -32768, 32767)
    return (pcm / 32767.0).astype(np.float32)


def read_wav(path: Path) -> Audio:
    with wave.open(str(path)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return (pcm / 32768.0).astype(np.float32)


def write_wav(path: Path, x: Audio) -> None:
    pcm = np.clip(np.rint(x * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(FS)
        w.writeframes(pcm.tobytes())


def ours(x: Audio) -> tuple[str, float]:
    t0 = time.process_time()
    dec = TtyDecoder(sample_rate=FS)
    events = dec.feed(x) + dec.flush()
    return final_text(events), time.process_time() - t0


def ours_streaming(x: Audio, block: int) -> float:
    """CPU seconds to decode `x` fed in blocks of `block` samples, as from a sound card."""
    t0 = time.process_time()
    dec = TtyDecoder(sample_rate=FS)
    for i in range(0, len(x), block):
        dec.feed(x[i : i + block])
    dec.flush()
    return time.process_time() - t0


def minimodem_rx(path: Path, mode: list[str]) -> tuple[str, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = subprocess.run(
        ["minimodem", "--rx", *mode, "-q", "-f", str(path)],
        capture_output=True,
        check=False,
        timeout=600,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return res.stdout.decode("latin-1").strip("\r\n"), cpu


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
        cur = np.minimum.accumulate(cur - ar) + ar  # insertions
        prev = cur
    return int(prev[-1])


def wilson(errors: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval for a proportion errors / n."""
    if n <= 0:
        return 0.0, 1.0
    p = min(1.0, errors / n)
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def snr_at(curve: dict[float, float], target: float = 0.01) -> float | None:
    """Lowest SNR from which every point is at or under `target` (log-linear interpolation).

    None if the highest SNR is over it; the lowest SNR if every point is under (a bound).
    """
    snrs = sorted(curve)
    ok = [curve[s] <= target for s in snrs]
    if not ok[-1]:
        return None
    i = len(snrs) - 1
    while i > 0 and ok[i - 1]:
        i -= 1
    if i == 0:
        return snrs[0]
    s_hi, s_lo = snrs[i], snrs[i - 1]
    c_hi, c_lo = max(curve[s_hi], 1e-5), curve[s_lo]
    frac = (math.log10(c_lo) - math.log10(target)) / (math.log10(c_lo) - math.log10(c_hi))
    return round(s_lo + frac * (s_hi - s_lo), 2)


@dataclass
class Point:
    chars: int = 0
    ours: int = 0
    mm: int = 0


@dataclass
class Totals:
    audio_s: float = 0.0
    ours_cpu: float = 0.0
    mm_audio_s: float = 0.0
    mm_cpu: float = 0.0
    points: dict[str, dict[float, Point]] = field(default_factory=dict)


def run_condition(
    cond: Condition,
    *,
    snrs: list[float],
    texts: list[str],
    seed: int,
    index: int,
    tmp: Path,
    pool: ThreadPoolExecutor | None,
    tot: Totals,
) -> dict[float, Point]:
    clean = [transmit(cond, t, tmp) for t in texts]
    mode = minimodem_mode(cond)
    points: dict[float, Point] = {}
    for snr in snrs:
        pt = Point()
        jobs: list[tuple[str, Future[tuple[str, float]], Path, float]] = []
        for k, (text, tx) in enumerate(zip(texts, clean, strict=True)):
            rng = np.random.default_rng([seed, index, k, round(10 * snr) + 1000])
            x = impair(cond, tx, snr, rng)
            if pool is not None:
                path = tmp / f"{cond.name}_{snr:+.1f}_{k}.wav"
                write_wav(path, x)
                jobs.append((text, pool.submit(minimodem_rx, path, mode), path, len(x) / FS))
            got, cpu = ours(x)
            tot.ours_cpu += cpu
            tot.audio_s += len(x) / FS
            pt.chars += len(text)
            pt.ours += edit_distance(text, got)
        for text, fut, path, seconds in jobs:
            mm_text, mm_cpu = fut.result()
            tot.mm_cpu += mm_cpu
            tot.mm_audio_s += seconds
            pt.mm += edit_distance(text, mm_text)
            path.unlink()
        if pool is None:
            pt.mm = pt.chars
        points[snr] = pt
    return points


def throughput(texts: list[str], seed: int, tmp: Path) -> dict[str, float | None]:
    """Seconds of audio decoded per CPU second, each decoder alone on the machine's core
    (nothing else of this bench running meanwhile): clean-condition signals at -6 dB."""
    cond = CONDITIONS[0]
    xs = [
        impair(cond, transmit(cond, t, tmp), -6.0, np.random.default_rng([seed, 99, k]))
        for k, t in enumerate(texts)
    ]
    audio = sum(len(x) for x in xs) / FS
    ours_cpu = 0.0
    for x in xs:
        ours_cpu += ours(x)[1]
    # As the daemon feeds it: 100 ms blocks from the sound card, TTY and idle line noise.
    stream_cpu = sum(ours_streaming(x, FS // 10) for x in xs)
    # The line's noise alone, at the level it has under the -6 dB calls.
    power = float(np.mean((transmit(cond, texts[0], tmp).astype(np.float64) * cond.amplitude) ** 2))
    noise_rng = np.random.default_rng([seed, 98])
    idle = quantise(
        add_noise(np.zeros(120 * FS), -6.0, sample_rate=FS, signal_power=power, rng=noise_rng)
    )
    idle_cpu = ours_streaming(idle, FS // 10)
    paths = []
    for k, x in enumerate(xs):
        path = tmp / f"throughput_{k}.wav"
        write_wav(path, x)
        paths.append(path)
    mm_cpu = 0.0
    for path in paths:
        mm_cpu += minimodem_rx(path, minimodem_mode(cond))[1]
        path.unlink()
    thr_ours = audio / ours_cpu if ours_cpu else None
    thr_mm = audio / mm_cpu if mm_cpu else None
    ratio = round(thr_ours / thr_mm, 3) if thr_ours and thr_mm else None
    return {
        "consolegw": round(thr_ours, 1) if thr_ours else None,
        "minimodem": round(thr_mm, 1) if thr_mm else None,
        "ratio_consolegw_to_minimodem": ratio,
        "audio_seconds": round(audio, 1),
        "consolegw_in_100ms_blocks": round(audio / stream_cpu, 1) if stream_cpu else None,
        "consolegw_idle_noise_in_100ms_blocks": round(len(idle) / FS / idle_cpu, 1)
        if idle_cpu
        else None,
    }


def shift_errors(seed: int, tmp: Path, noise_draws: int) -> dict[str, object]:
    """Address-style lines from senders of both conventions at 0 dB and above: lines read
    wrong (any character), and which."""
    out: dict[str, object] = {}
    snrs = (0.0, 3.0, 6.0, 10.0)
    for cond in (Condition("unshift_sender"), Condition("keep_sender", sender="keep")):
        wrong: list[str] = []
        lines = 0
        for j, text in enumerate(ADDRESSES):
            tx = transmit(cond, text, tmp)
            for snr in snrs:
                for d in range(noise_draws):
                    rng = np.random.default_rng([seed, 77, j, round(10 * snr) + 1000, d])
                    got, _ = ours(impair(cond, tx, snr, rng))
                    lines += 1
                    if got != text:
                        wrong.append(f"{snr:+.0f} dB: {text!r} read {got!r}")
        out[cond.name] = {"lines": lines, "wrong": len(wrong), "examples": wrong[:5]}
    return out


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
    x = quantise(x)
    text, _cpu = ours(x)
    out: dict[str, float] = {"ours": float(len(text))}
    if has_mm:
        path = tmp / f"false_{kind}.wav"
        write_wav(path, x)
        mm_text, _ = minimodem_rx(path, ["tdd"])
        out["minimodem"] = float(len(mm_text.strip()))
        path.unlink()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="about 1,900 characters per point")
    ap.add_argument("--seed", type=int, default=20261203)
    ap.add_argument("--chars", type=int, default=None, help="characters per point (default 12,000)")
    ap.add_argument("--minutes", type=float, default=None, help="of each non-TTY audio (10)")
    ap.add_argument("--jobs", type=int, default=2, help="minimodem processes in parallel")
    ap.add_argument("--conditions", default="", help="comma-separated subset")
    ap.add_argument("--snr", default="-12,-3,1", help="grid: lowest, highest, step (dB)")
    args = ap.parse_args()

    chars = args.chars or (1900 if args.quick else 12000)
    minutes = args.minutes if args.minutes is not None else (1.0 if args.quick else 10.0)
    lo, hi, step = (float(v) for v in args.snr.split(","))
    snrs = [round(lo + i * step, 2) for i in range(round((hi - lo) / step) + 1)]
    names = [c for c in args.conditions.split(",") if c]
    conds = [c for c in CONDITIONS if not names or c.name in names]
    has_mm = shutil.which("minimodem") is not None
    if not has_mm:
        print("minimodem not found (Debian: apt install minimodem)", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    texts: list[str] = []
    while sum(len(t) for t in texts) < chars:
        texts.append(message(rng))
    n_chars = sum(len(t) for t in texts)
    tot = Totals()
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="tty_cer_") as tmpd,
        ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool,
    ):
        tmp = Path(tmpd)
        for index, cond in enumerate(CONDITIONS):
            if cond not in conds:
                continue
            tot.points[cond.name] = run_condition(
                cond,
                snrs=snrs,
                texts=texts,
                seed=args.seed,
                index=index,
                tmp=tmp,
                pool=pool,
                tot=tot,
            )
            print(f"# {cond.name} done ({time.monotonic() - started:.0f} s)", file=sys.stderr)
        shifts = shift_errors(args.seed, tmp, 2 if args.quick else 8)
        print(f"# shift errors done ({time.monotonic() - started:.0f} s)", file=sys.stderr)
        false = {
            k: false_chars(k, minutes, rng, tmp, has_mm) for k in ("noise", "speech", "silence")
        }
        speed = throughput(texts[: 6 if args.quick else 24], args.seed, tmp)

    # -- report ---------------------------------------------------------------------------
    print(
        f"TTY CER benchmark: {len(texts)} messages, {n_chars} characters per point, seed "
        f"{args.seed}; noise in 300-3300 Hz; 95 % Wilson intervals"
    )
    header = "SNR dB       " + " ".join(f"{s:>7.1f}" for s in snrs)
    result: dict[str, object] = {
        "seed": args.seed,
        "chars_per_point": n_chars,
        "messages_per_point": len(texts),
        "snr_db": snrs,
    }
    cond_out: dict[str, object] = {}
    at_1pct: dict[str, float | None] = {}
    for cond in conds:
        pts = tot.points[cond.name]
        figures: dict[str, object] = {}
        print(f"\n[{cond.name}]")
        print(header)
        for who, attr in (("consolegw", "ours"), ("minimodem", "mm")):
            errs = {s: getattr(p, attr) for s, p in pts.items()}
            cer = {s: errs[s] / pts[s].chars for s in snrs}
            lo_ci = {s: wilson(errs[s], pts[s].chars)[0] for s in snrs}
            hi_ci = {s: wilson(errs[s], pts[s].chars)[1] for s in snrs}
            s1 = snr_at(cer)
            interval = (snr_at(lo_ci), snr_at(hi_ci))
            print(f"{who:<12} " + " ".join(f"{100 * cer[s]:6.2f}%" for s in snrs))
            figures[who] = {
                "cer": [round(cer[s], 5) for s in snrs],
                "errors": [errs[s] for s in snrs],
                "cer_ci95": [[round(lo_ci[s], 5), round(hi_ci[s], 5)] for s in snrs],
                "snr_1pct_db": s1,
                "snr_1pct_ci95_db": list(interval),
            }
            if who == "consolegw":
                at_1pct[cond.name] = s1
        o, m = figures["consolegw"], figures["minimodem"]
        assert isinstance(o, dict) and isinstance(m, dict)
        so, sm = o["snr_1pct_db"], m["snr_1pct_db"]
        margin = round(sm - so, 2) if so is not None and sm is not None else None
        figures["margin_db"] = margin
        print(
            f"1% CER at: consolegw {_fmt(so)} dB {_ci(o['snr_1pct_ci95_db'])}, minimodem "
            f"{_fmt(sm)} dB {_ci(m['snr_1pct_ci95_db'])}; margin {_fmt(margin)} dB"
        )
        cond_out[cond.name] = figures
    result["conditions"] = cond_out
    clean = at_1pct.get("clean")
    if clean is not None:
        penalty = {k: None if v is None else round(v - clean, 2) for k, v in at_1pct.items()}
        result["penalty_vs_clean_db"] = penalty
        print(
            "\npenalty against clean (dB): "
            + ", ".join(f"{k} {_fmt(v)}" for k, v in penalty.items())
        )
    result["shift_errors_0db_and_above"] = shifts
    for name, v in shifts.items():
        assert isinstance(v, dict)
        print(f"shift errors, {name}, 0 to +10 dB: {v['wrong']} of {v['lines']} lines")
        for ex in v["examples"]:
            print(f"    {ex}")
    result["throughput_x_realtime"] = speed
    # Over the CER series too, where minimodem ran in parallel (--jobs) with our decoder.
    result["throughput_during_series"] = {
        "consolegw": round(tot.audio_s / tot.ours_cpu, 1) if tot.ours_cpu else None,
        "minimodem": round(tot.mm_audio_s / tot.mm_cpu, 1) if tot.mm_cpu else None,
    }
    print(
        f"throughput (audio s per CPU s, {speed['audio_seconds']:g} s of audio, each decoder "
        f"alone): consolegw {_fmt(speed['consolegw'], 0)}x, minimodem "
        f"{_fmt(speed['minimodem'], 0)}x, ratio {_fmt(speed['ratio_consolegw_to_minimodem'], 2)}; "
        f"consolegw fed 100 ms blocks as in the daemon: "
        f"{_fmt(speed['consolegw_in_100ms_blocks'], 0)}x, idle line noise "
        f"{_fmt(speed['consolegw_idle_noise_in_100ms_blocks'], 0)}x"
    )
    result["false_chars"] = false
    result["false_minutes_each"] = minutes
    for kind, v in false.items():
        print(
            f"false characters in {minutes:g} min of {kind}: consolegw {v['ours']:.0f}, "
            f"minimodem {v.get('minimodem', float('nan')):.0f}"
        )
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(result, separators=(",", ":")))
    return 0


def _fmt(v: float | None, nd: int = 1) -> str:
    return "n/a" if v is None else f"{v:.{nd}f}"


def _ci(v: object) -> str:
    assert isinstance(v, list)
    return "[" + ", ".join(_fmt(x) for x in v) + "]"


if __name__ == "__main__":
    raise SystemExit(main())
