"""Tone measurement for the audio loop-back checks: pure numpy, no I/O.

A tone of known frequency is generated (`tone_signal`), found again in what came back
(`tone_envelope`, `measure_tone`) and its level measured in a narrow band against everything
else (`band_power`): noise, hum and distortion."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

BAND_HZ = 20.0
"""Half width of the narrow band the tone's level is measured in."""
EDGE_S = 0.1
"""Left out at each end of the returned tone: its ramps and the envelope's smear."""


def dbfs(mean_square: float) -> float:
    """A mean-square power in dB relative to full scale (floored at -120 dBFS)."""
    return 10.0 * math.log10(max(mean_square, 1e-12))


def band_power(samples: NDArray[np.float32], rate: int, hz: float) -> tuple[float, float]:
    """Mean-square power within `hz` +- BAND_HZ and outside it (noise and distortion): a
    Hann-windowed spectrum, so neither leaks into the other by more than ~-90 dB."""
    x = samples.astype(np.float64)
    x -= x.mean()  # a DC offset is no noise of the loop
    window = np.hanning(len(x))
    weight = float(np.sum(window**2))
    if len(x) < 16 or weight == 0.0:
        return 0.0, 0.0
    spectrum = np.abs(np.fft.rfft(x * window)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1.0 / rate)
    band = (np.abs(freqs - hz) <= BAND_HZ) & (freqs > 0) & (freqs < rate / 2)
    tone = 2.0 * float(spectrum[band].sum()) / (len(x) * weight)
    total = float(np.sum((x * window) ** 2)) / weight
    return tone, max(total - tone, 0.0)


def tone_envelope(samples: NDArray[np.float32], rate: int, hz: float) -> NDArray[np.float64]:
    """RMS of the `hz` component, sample by sample over a sliding 5 ms (quadrature mixing)."""
    n = np.arange(len(samples))
    mixed = samples.astype(np.float64) * np.exp(-2j * math.pi * hz * n / rate)
    width = max(1, round(rate * 0.005))
    smooth = np.convolve(mixed, np.ones(width) / width, mode="same")
    envelope: NDArray[np.float64] = math.sqrt(2.0) * np.abs(smooth)
    return envelope


def tone_amplitude(block: NDArray[np.float32], rate: int, hz: float) -> float:
    """The amplitude of the `hz` component in one block: one DFT term at exactly `hz` (Hann
    window), whatever the block size and rate."""
    n = len(block)
    window = np.hanning(n)
    phase = np.exp(-2j * math.pi * hz * np.arange(n) / rate)
    return 2.0 * abs(complex(np.sum(block * window * phase))) / float(window.sum())


@dataclass(frozen=True, slots=True)
class ToneMeasurement:
    found: bool
    onset: int | None
    """Sample index where the returned tone reached half its amplitude."""
    length_s: float
    level_dbfs: float
    """Tone RMS in the narrow band, over the returned tone's steady part (or everything after
    playing when none came back)."""
    rest_dbfs: float
    """Everything else over the same span: noise, hum, distortion."""
    snr_db: float
    before_dbfs: float
    """Level at the tone's frequency before playing."""
    before_snr_db: float
    floor_dbfs: float
    """Total RMS before playing."""
    peak: float
    """Largest sample magnitude over the steady part."""


def measure_tone(
    samples: NDArray[np.float32], rate: int, *, start: int, hz: float
) -> ToneMeasurement:
    """Find and measure a tone at `hz` that started (on the output) at sample `start`."""
    before = samples[:start]
    before_tone, before_rest = band_power(before, rate, hz)
    floor = dbfs(float(np.mean(np.square(before, dtype=np.float64)))) if len(before) else -120.0
    envelope = tone_envelope(samples, rate, hz)
    after = envelope[start:]
    quiet = float(np.median(envelope[:start])) if start > 0 else 0.0
    peak_env = float(after.max()) if len(after) else 0.0
    found = peak_env >= max(10.0 * quiet, 10.0 ** (-75.0 / 20.0))
    onset: int | None = None
    length_s = 0.0
    span = samples[start:]
    if found:
        above = np.flatnonzero(after >= peak_env / 2.0)
        onset = start + int(above[0])
        end = start + int(above[-1])
        length_s = (end - onset) / rate
        edge = int(EDGE_S * rate)
        span = samples[onset + edge : max(onset + edge, end - edge)]
    tone, rest = band_power(span, rate, hz)
    return ToneMeasurement(
        found=found,
        onset=onset,
        length_s=round(length_s, 3),
        level_dbfs=dbfs(tone),
        rest_dbfs=dbfs(rest),
        snr_db=dbfs(tone) - dbfs(rest),
        before_dbfs=dbfs(before_tone),
        before_snr_db=dbfs(before_tone) - dbfs(before_rest),
        floor_dbfs=floor,
        peak=float(np.abs(span).max()) if len(span) else 0.0,
    )


def tone_signal(
    rate: int, *, hz: float, level_dbfs: float, seconds: float, ramp_s: float
) -> NDArray[np.float32]:
    """A sine at `hz` of RMS `level_dbfs`, `seconds` long, with raised-cosine ramps of
    `ramp_s` on and off (no clicks spreading energy across the band)."""
    n = int(seconds * rate)
    t = np.arange(n) / rate
    amplitude = math.sqrt(2.0) * 10.0 ** (level_dbfs / 20.0)
    signal = amplitude * np.sin(2.0 * math.pi * hz * t)
    ramp = int(ramp_s * rate)
    if ramp > 0:
        shape = 0.5 - 0.5 * np.cos(math.pi * (np.arange(ramp) + 0.5) / ramp)
        signal[:ramp] *= shape
        signal[-ramp:] *= shape[::-1]
    out: NDArray[np.float32] = signal.astype(np.float32)
    return out
