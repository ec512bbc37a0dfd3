"""Telephone-line models for exercising the TTY modem (tests, benchmark, simulator).

Everything is deterministic given a numpy Generator. Simulation only, so it lives in
hw_sim: the gateway decodes real lines and never imports it.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


def _fft_filter(x: npt.NDArray[np.floating], gain: F64) -> F64:
    """Zero-phase filtering by an FFT-domain gain sampled on rfftfreq(len(x))."""
    spec = np.fft.rfft(np.asarray(x, dtype=np.float64))
    out: F64 = np.fft.irfft(spec * gain, n=len(x))
    return out


def band_noise(
    n: int,
    *,
    sample_rate: int,
    power: float,
    rng: np.random.Generator,
    lo_hz: float = 300.0,
    hi_hz: float = 3300.0,
) -> F64:
    """Gaussian noise of `power` (mean square) confined to [lo_hz, hi_hz] (3 kHz by default)."""
    if n <= 0:
        return np.zeros(0)
    white = rng.standard_normal(n)
    f = np.fft.rfftfreq(n, 1.0 / sample_rate)
    shaped = _fft_filter(white, ((f >= lo_hz) & (f <= hi_hz)).astype(np.float64))
    ms = float(np.mean(shaped**2))
    return shaped * math.sqrt(power / ms) if ms > 0 else shaped


def add_noise(
    x: npt.NDArray[np.floating],
    snr_db: float,
    *,
    sample_rate: int,
    signal_power: float,
    rng: np.random.Generator,
) -> F32:
    """x plus band noise so that signal_power / noise power in 300-3300 Hz is `snr_db`."""
    power = signal_power / 10 ** (snr_db / 10)
    noise = band_noise(len(x), sample_rate=sample_rate, power=power, rng=rng)
    return (np.asarray(x, dtype=np.float64) + noise).astype(np.float32)


def telephone_band(x: npt.NDArray[np.floating], *, sample_rate: int) -> F32:
    """The 300-3400 Hz voice channel (brick-wall, zero phase)."""
    f = np.fft.rfftfreq(len(x), 1.0 / sample_rate)
    return _fft_filter(x, ((f >= 300.0) & (f <= 3400.0)).astype(np.float64)).astype(np.float32)


def tilt(x: npt.NDArray[np.floating], db: float, *, sample_rate: int) -> F32:
    """A line slope: +db/2 at 1400 Hz and -db/2 at 1800 Hz (linear in dB with frequency).

    Gives the mark/space level imbalance a long loop or a bad hybrid produces.
    """
    f = np.fft.rfftfreq(len(x), 1.0 / sample_rate)
    gain_db = np.clip(db * (1600.0 - f) / 400.0, -abs(db) * 2, abs(db) * 2)
    return _fft_filter(x, 10 ** (gain_db / 20)).astype(np.float32)


def mulaw_encode(x: npt.NDArray[np.floating]) -> npt.NDArray[np.uint8]:
    """G.711 mu-law codes for samples in [-1, 1] (14-bit magnitude, segment compander)."""
    pcm = np.clip(np.rint(np.asarray(x, dtype=np.float64) * 32768.0), -32768, 32767)
    sign = (pcm < 0).astype(np.int32)
    mag = np.minimum(np.abs(pcm).astype(np.int32), 32635) + 0x84
    exponent = np.floor(np.log2(mag)).astype(np.int32) - 7
    exponent = np.clip(exponent, 0, 7)
    mantissa = (mag >> (exponent + 3)) & 0x0F
    code = ~((sign << 7) | (exponent << 4) | mantissa) & 0xFF
    out: npt.NDArray[np.uint8] = code.astype(np.uint8)
    return out


def mulaw_decode(code: npt.NDArray[np.uint8]) -> F32:
    """Samples in [-1, 1] from G.711 mu-law codes."""
    c = (~code.astype(np.int32)) & 0xFF
    sign = c >> 7
    exponent = (c >> 4) & 0x07
    mantissa = c & 0x0F
    mag = (((mantissa << 3) + 0x84) << exponent) - 0x84
    pcm = np.where(sign == 1, -mag, mag)
    return (pcm / 32768.0).astype(np.float32)


def g711(x: npt.NDArray[np.floating], *, sample_rate: int) -> F32:
    """Through a digital telephone network: 300-3400 Hz band, then mu-law coding."""
    return mulaw_decode(mulaw_encode(telephone_band(x, sample_rate=sample_rate)))


def speech_like(seconds: float, *, sample_rate: int, rng: np.random.Generator) -> F32:
    """Speech-shaped audio: voiced syllables with moving pitch and formants, fricatives, pauses.

    A harmonic series (pitch 85-260 Hz, gliding) shaped by three moving formant resonances,
    in syllables of 120-350 ms at about 4 per second, phrases separated by pauses, with
    noise bursts for fricatives. Its harmonics pass through 1400 and 1800 Hz often, which is
    what makes it a test for a TTY detector. RMS about -20 dBFS.
    """
    n = int(seconds * sample_rate)
    out = np.zeros(n)
    t = 0
    while t < n:
        if rng.random() < 0.15:  # pause between phrases
            t += int(rng.uniform(0.2, 0.9) * sample_rate)
            continue
        seg = int(rng.uniform(0.12, 0.35) * sample_rate)
        seg = min(seg, n - t)
        if seg <= 16:
            break
        if rng.random() < 0.25:  # fricative: band-limited noise burst
            burst = band_noise(
                seg,
                sample_rate=sample_rate,
                power=0.3,
                rng=rng,
                lo_hz=2000.0,
                hi_hz=min(3800.0, sample_rate / 2 - 1),
            )
            env = np.hanning(seg)
            out[t : t + seg] += burst * env
        else:
            out[t : t + seg] += _vowel(seg, sample_rate, rng)
        t += seg + int(rng.uniform(0.0, 0.08) * sample_rate)
    rms = float(np.sqrt(np.mean(out**2))) if n else 0.0
    if rms > 0:
        out *= 0.1 / rms
    return out.astype(np.float32)


def _vowel(n: int, fs: int, rng: np.random.Generator) -> F64:
    tt = np.arange(n) / fs
    f0a, f0b = rng.uniform(85, 260, size=2)
    f0 = f0a + (f0b - f0a) * tt / tt[-1] + 3.0 * np.sin(2 * math.pi * 5.5 * tt)
    phase = 2 * math.pi * np.cumsum(f0) / fs
    formants = [
        (rng.uniform(280, 850), rng.uniform(280, 850), 80.0),
        (rng.uniform(850, 2400), rng.uniform(850, 2400), 120.0),
        (rng.uniform(2200, 3200), rng.uniform(2200, 3200), 180.0),
    ]
    sig = np.zeros(n)
    kmax = int(3600 / f0.min())
    for k in range(1, kmax + 1):
        fk = k * f0
        amp = np.zeros(n)
        for fa, fb, bw in formants:
            fc = fa + (fb - fa) * tt / tt[-1]
            amp += 1.0 / (1.0 + ((fk - fc) / bw) ** 2)
        amp *= (fk < 3600) / k**0.5
        sig += amp * np.sin(k * phase)
    return sig * np.hanning(n) ** 0.5
