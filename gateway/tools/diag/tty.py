"""The `tty` check: a TTY message played on each TTY channel's output, at the level the
daemon replies at, and decoded on its input (needs a loop-back)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from gateway.config import ChannelTtySection
from gateway.dsp.tone import dbfs
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

if TYPE_CHECKING:
    from gateway.dsp import ShiftConvention

TTY_MESSAGE = "DIAG TTY 1234"
"""Letters, figures and spaces (both shifts), 3.1 s at 45.45 baud."""
TTY_BAUD = 45.45


class _TtyWatch:
    """Decodes the input as it comes; done once the whole message has been read."""

    def __init__(self, rate: int, *, shift: ShiftConvention) -> None:
        from gateway.dsp import TtyDecoder

        self.decoder = TtyDecoder(sample_rate=rate, shift=shift)
        self.chars: list[str] = []
        self.baud: float | None = None

    def take(self, events: Iterable[Any]) -> None:
        from gateway.dsp import TtyChar, TtyDetected, TtyRetract

        for event in events:
            if isinstance(event, TtyChar):
                self.chars.append(event.char)
            elif isinstance(event, TtyRetract):
                del self.chars[len(self.chars) - event.count :]
            elif isinstance(event, TtyDetected):
                self.baud = event.baud

    @property
    def text(self) -> str:
        return "".join(self.chars)

    def __call__(self, block: NDArray[np.float32]) -> bool:
        self.take(self.decoder.feed(block))
        return TTY_MESSAGE in self.text


async def _tty_one(
    ctx: DiagContext, channel_id: str, path: AudioPath, tty: ChannelTtySection
) -> CheckResult:
    from gateway.dsp import TtyEncoder
    from gateway.tty import reply_amplitude

    data: dict[str, Any] = {"path": path.description, "sent": TTY_MESSAGE, "baud": TTY_BAUD}
    level = tty.reply_level_dbfs
    data["played_dbfs"] = level
    # As the daemon plays replies: clipped to full scale (the encoder refuses more).
    encoder = TtyEncoder(
        sample_rate=path.output.samplerate, baud=TTY_BAUD, amplitude=reply_amplitude(level)
    )
    ctx.progress(f"tty: {channel_id}: {TTY_MESSAGE!r} at {TTY_BAUD:g} baud, {path.description}")
    watch = _TtyWatch(path.capture.samplerate, shift=tty.shift)
    take = await through_path(
        "tty",
        channel_id,
        path,
        encoder.encode(TTY_MESSAGE),
        listen=watch,
        lead_s=LEAD_S,
        tail_s=TAIL_S,
        data=data,
    )
    if isinstance(take, CheckResult):
        return take
    if TTY_MESSAGE not in watch.text:
        watch.take(watch.decoder.flush())
    decoded = watch.text.strip()
    before, after = take.samples[: take.play_index], take.samples[take.play_index :]
    floor = dbfs(float(np.mean(np.square(before, dtype=np.float64))))
    heard = dbfs(float(np.mean(np.square(after, dtype=np.float64))))
    data.update(
        decoded=decoded,
        detected_baud=None if watch.baud is None else round(watch.baud, 2),
        floor_dbfs=round(floor, 1),
        level_dbfs=round(heard, 1),
        discontinuities=take.gaps,
    )
    if decoded == TTY_MESSAGE:
        return CheckResult(
            "tty",
            channel_id,
            "PASS",
            f"sent {TTY_MESSAGE!r} and decoded it back, at {heard:.1f} dBFS over a "
            f"{floor:.1f} dBFS floor",
            data,
        )
    if not decoded:
        if heard - floor < 6.0:
            reason = f"{NO_LOOPBACK} (input stayed at {heard:.1f} dBFS)"
        else:
            reason = (
                f"audio came back ({heard:.1f} dBFS over a {floor:.1f} dBFS floor) but no TTY "
                "was decoded: distortion, level or filtering on the path (run the tone check)"
            )
        return CheckResult("tty", channel_id, "FAIL", reason, data)
    return CheckResult(
        "tty",
        channel_id,
        "FAIL",
        f"decoded {decoded!r}, sent {TTY_MESSAGE!r}: errors on the path (level, noise, "
        "dropouts; run the tone check)",
        data,
    )


async def check_tty(ctx: DiagContext) -> list[CheckResult]:
    assert ctx.config is not None
    targets = audio_targets(ctx)
    results = no_audio("tty", targets)
    for channel_id, path in targets if not results else []:
        tty = ctx.config.channels[channel_id].tty
        if path is None:
            results.append(CheckResult("tty", channel_id, "SKIP", "no audio configured"))
        elif tty is None:
            results.append(CheckResult("tty", channel_id, "SKIP", "no TTY on this channel"))
        else:
            results.append(await _tty_one(ctx, channel_id, path, tty))
    return results


register_check(
    "tty",
    "a TTY message played on each TTY channel's output, decoded on its input (needs a loopback)",
    check_tty,
)
