"""The `tone` check: a 1 kHz tone played on each audio channel's output and measured on its
input (needs a loop-back): level, gain round the loop, SNR, clipping, round trip. The DSP is
gateway.dsp.tone's."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from gateway.dsp.tone import ToneMeasurement, measure_tone, tone_amplitude, tone_signal
from gateway.tools.diag.core import CheckResult, DiagContext, register_check
from gateway.tools.diag.loopback import (
    LEAD_S,
    NO_LOOPBACK,
    TAIL_S,
    AudioPath,
    audio_targets,
    no_audio,
    through_path,
)

TONE_HZ = 1000.0
TONE_DBFS = -20.0
"""RMS level of the test tone: well clear of clipping, well above any sane noise floor."""
TONE_S = 1.5
TONE_RAMP_S = 0.01
"""Raised-cosine on and off: no clicks spreading energy across the band."""
MIN_TONE_S = 0.5
"""Shortest returned tone that can be measured."""
MIN_SNR_DB = 20.0
MAX_GAIN_DB = 12.0
"""Loss or gain beyond this round the loop is a mis-set level (mixer, cable, pad)."""
CLIP = 0.999


def _tone_signal(rate: int) -> NDArray[np.float32]:
    return tone_signal(rate, hz=TONE_HZ, level_dbfs=TONE_DBFS, seconds=TONE_S, ramp_s=TONE_RAMP_S)


class _ToneWatch:
    """Tells the loop when the tone has come back and gone again (so it can stop early)."""

    def __init__(self, rate: int) -> None:
        self._rate = rate
        self._peak = 0.0
        self._quiet = 0

    def __call__(self, block: NDArray[np.float32]) -> bool:
        if len(block) < 16:
            return False
        level = tone_amplitude(block, self._rate, TONE_HZ)
        self._peak = max(self._peak, level)
        if self._peak < math.sqrt(2.0) * 10.0 ** ((TONE_DBFS - MAX_GAIN_DB - 6.0) / 20.0):
            return False  # nothing like the tone yet
        self._quiet = self._quiet + len(block) if level < self._peak / 4.0 else 0
        return self._quiet >= 0.2 * self._rate


def _judge_tone(channel_id: str, m: ToneMeasurement, data: dict[str, Any]) -> CheckResult:
    def fail(detail: str) -> CheckResult:
        return CheckResult("tone", channel_id, "FAIL", detail, data)

    if m.before_dbfs > -70.0 and m.before_snr_db >= 10.0:
        return fail(
            f"a 1 kHz tone was already on the input before playing ({m.before_dbfs:.1f} dBFS): "
            "something else feeds it; run again when it is quiet"
        )
    if not m.found:
        return fail(
            f"{NO_LOOPBACK} (nothing came back at 1 kHz: {m.level_dbfs:.1f} dBFS, "
            f"input floor {m.floor_dbfs:.1f} dBFS)"
        )
    if m.length_s < MIN_TONE_S:
        return fail(
            f"the tone came back for only {m.length_s:g} s of {TONE_S:g} s: intermittent "
            "path (loose cable, VOX or squelch in the loop)"
        )
    gain = round(m.level_dbfs - TONE_DBFS, 1) + 0.0  # + 0.0: no "-0.0"
    if m.peak >= CLIP:
        return fail(
            f"the tone came back clipped ({gain:+.1f} dB): lower the input gain (alsamixer) "
            "or pad the loopback"
        )
    if m.snr_db < MIN_SNR_DB:
        return fail(
            f"the tone came back at {m.level_dbfs:.1f} dBFS with a SNR of only "
            f"{m.snr_db:.1f} dB (need {MIN_SNR_DB:g}): noise, hum or distortion on the path"
        )
    if abs(gain) > MAX_GAIN_DB:
        way = "loss" if gain < 0 else "gain"
        return fail(
            f"the tone came back at {m.level_dbfs:.1f} dBFS: {way} of {abs(gain):.1f} dB round "
            f"the loop (more than {MAX_GAIN_DB:g}): check the output and input levels "
            "(alsamixer) and the cable"
        )
    delay = data.get("round_trip_ms")
    timing = f", round trip {delay:g} ms" if delay is not None else ""
    return CheckResult(
        "tone",
        channel_id,
        "PASS",
        f"1 kHz at {TONE_DBFS:g} dBFS came back at {m.level_dbfs:.1f} dBFS "
        f"({gain:+.1f} dB), SNR {m.snr_db:.1f} dB{timing}",
        data,
    )


async def _tone_one(ctx: DiagContext, channel_id: str, path: AudioPath) -> CheckResult:
    data: dict[str, Any] = {"path": path.description, "played_dbfs": TONE_DBFS, "hz": TONE_HZ}
    ctx.progress(f"tone: {channel_id}: 1 kHz at {TONE_DBFS:g} dBFS, {path.description}")
    take = await through_path(
        "tone",
        channel_id,
        path,
        _tone_signal(path.output.samplerate),
        listen=_ToneWatch(path.capture.samplerate),
        lead_s=LEAD_S,
        tail_s=TAIL_S,
        data=data,
    )
    if isinstance(take, CheckResult):
        return take
    m = measure_tone(take.samples, take.rate, start=take.play_index, hz=TONE_HZ)
    data.update(
        level_dbfs=round(m.level_dbfs, 2),
        gain_db=round(m.level_dbfs - TONE_DBFS, 2) + 0.0,
        snr_db=round(m.snr_db, 1),
        rest_dbfs=round(m.rest_dbfs, 1),
        floor_dbfs=round(m.floor_dbfs, 1),
        tone_s=m.length_s,
        round_trip_ms=None
        if m.onset is None
        else round((take.time_of(m.onset) - take.play_at) * 1000.0),
        discontinuities=take.gaps,
    )
    return _judge_tone(channel_id, m, data)


async def check_tone(ctx: DiagContext) -> list[CheckResult]:
    targets = audio_targets(ctx)
    results = no_audio("tone", targets)
    for channel_id, path in targets if not results else []:
        if path is None:
            results.append(CheckResult("tone", channel_id, "SKIP", "no audio configured"))
        else:
            results.append(await _tone_one(ctx, channel_id, path))
    return results


register_check(
    "tone",
    "1 kHz tone played on each audio channel's output, measured on its input (needs a loopback)",
    check_tone,
)
