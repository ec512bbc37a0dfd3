"""gateway.dsp.tone: a tone of known level and frequency measured back within 0.5 dB."""

from __future__ import annotations

import math

import numpy as np

from gateway.dsp.tone import (
    band_power,
    dbfs,
    measure_tone,
    tone_amplitude,
    tone_envelope,
    tone_signal,
)

RATE = 8000


def test_band_power_of_a_known_tone_and_noise() -> None:
    rng = np.random.default_rng(1)
    tone = tone_signal(RATE, hz=1000.0, level_dbfs=-20.0, seconds=1.0, ramp_s=0.0)
    noise = (10.0 ** (-50.0 / 20.0) * rng.standard_normal(len(tone))).astype(np.float32)
    power, rest = band_power(tone + noise, RATE, 1000.0)
    assert abs(dbfs(power) - -20.0) < 0.5
    assert abs(dbfs(rest) - -50.0) < 1.0  # the noise outside the narrow band


def test_measure_tone_finds_onset_length_and_level() -> None:
    lead = int(0.3 * RATE)
    tone = tone_signal(RATE, hz=1000.0, level_dbfs=-26.0, seconds=1.5, ramp_s=0.01)
    samples = np.concatenate([np.zeros(lead, np.float32), tone, np.zeros(RATE, np.float32)])
    m = measure_tone(samples, RATE, start=lead // 2, hz=1000.0)
    assert m.found
    assert m.onset is not None and abs(m.onset - lead) < 0.01 * RATE
    assert abs(m.length_s - 1.5) < 0.02
    assert abs(m.level_dbfs - -26.0) < 0.5
    assert m.snr_db > 60.0
    assert m.peak < math.sqrt(2.0) * 10.0 ** (-26.0 / 20.0) * 1.01


def test_no_tone_is_not_found() -> None:
    rng = np.random.default_rng(2)
    samples = (1e-3 * rng.standard_normal(2 * RATE)).astype(np.float32)
    m = measure_tone(samples, RATE, start=RATE // 2, hz=1000.0)
    assert not m.found and m.onset is None and m.level_dbfs < -60.0


def test_envelope_and_block_amplitude() -> None:
    tone = tone_signal(RATE, hz=1000.0, level_dbfs=-20.0, seconds=0.5, ramp_s=0.0)
    amplitude = math.sqrt(2.0) * 0.1
    envelope = tone_envelope(tone, RATE, 1000.0)
    assert abs(float(np.median(envelope)) - 0.1) < 0.005  # the RMS, sample by sample
    assert abs(tone_amplitude(tone[:200], RATE, 1000.0) - amplitude) < 0.01 * amplitude
