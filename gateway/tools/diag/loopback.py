"""What the audio loop-back checks share: a loop-back (a cable from the channel's audio
output to its input, or the radio in a repeat mode) sends what the console plays straight
back to its capture. `through_path` plays a known signal on the output the daemon would use
and hears what returns on the input; the `tone` and `tty` checks judge it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from drivers.errors import DeviceError
from gateway.config import AudioDeviceSection, ChannelSection, Config
from gateway.tools.diag.core import CheckResult, DiagContext

if TYPE_CHECKING:
    from drivers.audio import AudioCapture, AudioPlayback

LEAD_S = 0.3
"""Input heard before playing: its noise floor, and proof that no 1 kHz tone is there yet."""
TAIL_S = 1.5
"""Longest wait, once the signal has played out, for its end to come back: the loop's round
trip (a TTY message ends in 0.3 s of mark, which covers the decoder's own delay)."""
AUDIO_OPEN_TIMEOUT_S = 15.0
"""Opening may scan for the device in a child process first."""
NO_LOOPBACK = "no loopback: check the loopback cable / output device"


class _AudioFailure(Exception):
    """A reason to FAIL the audio check at hand (device not opened, lost, stalled)."""


@dataclass(frozen=True, slots=True)
class AudioPath:
    """Where a channel's audio check plays and listens: the output the daemon plays TTY
    replies on (the capture device and column unless [channels.X.tty] names another), and
    the channel's capture column."""

    capture_id: str
    capture: AudioDeviceSection
    column: int
    output_id: str
    output: AudioDeviceSection
    output_column: int

    @property
    def description(self) -> str:
        return (
            f"out {self.output_id} col {self.output_column} -> in {self.capture_id} "
            f"col {self.column}"
        )


def audio_path(config: Config, channel: ChannelSection) -> AudioPath | None:
    """The channel's loop-back path, or None when it has no audio."""
    audio = channel.audio
    if audio is None:
        return None
    from gateway.tty import reply_output

    out_id, out_column = reply_output(channel.tty, audio.device, audio.column)
    return AudioPath(
        capture_id=audio.device,
        capture=config.audio.devices[audio.device],
        column=audio.column,
        output_id=out_id,
        output=config.audio.devices[out_id],
        output_column=out_column,
    )


@dataclass
class Take:
    """What the input heard around one play."""

    rate: int
    samples: NDArray[np.float32]
    play_index: int
    """Captured samples when play() was called: the signal cannot return before this."""
    play_at: float
    """time.monotonic() when play() was called."""
    blocks: list[tuple[int, float]]
    """(first sample index, capture timestamp) of each block, for timing."""
    gaps: int
    """Discontinuities (audio lost) after the first block."""

    def time_of(self, index: int) -> float:
        """Estimated capture time (time.monotonic()) of sample `index`."""
        first, stamp = self.blocks[0]
        for block_first, block_stamp in self.blocks:
            if block_first > index:
                break
            first, stamp = block_first, block_stamp
        return stamp + (index - first) / self.rate


@contextlib.asynccontextmanager
async def _open_path(path: AudioPath) -> AsyncIterator[tuple[AudioCapture, AudioPlayback]]:
    """Capture and playback streams on the path; both closed on every way out."""
    from gateway.audio import capture_for, playback_for

    capture = capture_for(path.capture, queue_seconds=10.0)
    playback = playback_for(path.output)
    try:
        for label, stream in (("input", capture), ("output", playback)):
            device_id = path.capture_id if stream is capture else path.output_id
            try:
                async with asyncio.timeout(AUDIO_OPEN_TIMEOUT_S):
                    await stream.open()
            except (DeviceError, TimeoutError) as exc:
                raise _AudioFailure(
                    f"cannot open audio {label} {device_id} ({stream.description}): "
                    f"{exc or 'timed out'}"
                ) from None
        yield capture, playback
    finally:
        # Each close hands its stream to a worker thread before its first await, so a
        # cancellation arriving during one close still lets the other start.
        try:
            await playback.close()
        finally:
            await capture.close()


async def _loop_through(
    capture: AudioCapture,
    playback: AudioPlayback,
    path: AudioPath,
    signal: NDArray[np.float32],
    *,
    listen: Callable[[NDArray[np.float32]], bool] | None,
    lead_s: float,
    tail_s: float,
) -> Take:
    """Hear `lead_s` of input, play `signal` on the output, and keep hearing until `listen`
    (given each new input block) says done, or `tail_s` after the signal has played out."""
    rate = path.capture.samplerate
    chunks: list[NDArray[np.float32]] = []
    blocks: list[tuple[int, float]] = []
    frames = 0
    gaps = 0

    async def hear() -> NDArray[np.float32]:
        nonlocal frames, gaps
        block = await capture.read()
        column: NDArray[np.float32] = block.frames[:, path.column].copy()
        if block.discontinuity and blocks:
            gaps += 1
        blocks.append((frames, block.timestamp))
        chunks.append(column)
        frames += len(column)
        return column

    budget = lead_s + len(signal) / path.output.samplerate + tail_s + 10.0
    async with asyncio.timeout(budget):
        while frames < lead_s * rate:
            await hear()
        play_index, play_at = frames, time.monotonic()
        play = asyncio.create_task(playback.play(signal, column=path.output_column))
        try:
            played_at: float | None = None
            while True:
                column = await hear()
                done = listen(column) if listen is not None else False
                if play.done():
                    play.result()  # raises what play raised (device lost...)
                    if played_at is None:
                        played_at = time.monotonic()
                    if done or time.monotonic() - played_at >= tail_s:
                        break
        finally:
            if not play.done():
                play.cancel()
                await asyncio.wait([play], timeout=1.0)
    return Take(
        rate=rate,
        samples=np.concatenate(chunks),
        play_index=play_index,
        play_at=play_at,
        blocks=blocks,
        gaps=gaps,
    )


async def through_path(
    check: str,
    channel_id: str,
    path: AudioPath,
    signal: NDArray[np.float32],
    *,
    listen: Callable[[NDArray[np.float32]], bool] | None,
    lead_s: float,
    tail_s: float,
    data: dict[str, Any],
) -> Take | CheckResult:
    """Run one play-and-listen on the path; a FAIL result when the path cannot be used."""
    try:
        async with _open_path(path) as (capture, playback):
            return await _loop_through(
                capture, playback, path, signal, listen=listen, lead_s=lead_s, tail_s=tail_s
            )
    except _AudioFailure as exc:
        return CheckResult(check, channel_id, "FAIL", str(exc), data)
    except DeviceError as exc:
        return CheckResult(check, channel_id, "FAIL", f"audio lost during the test: {exc}", data)
    except TimeoutError:
        return CheckResult(
            check, channel_id, "FAIL", "audio stalled during the test (no blocks)", data
        )
    except ValueError as exc:  # e.g. a column the output device does not have
        return CheckResult(check, channel_id, "FAIL", f"cannot play: {exc}", data)


def audio_targets(ctx: DiagContext) -> list[tuple[str, AudioPath | None]]:
    """The wanted channels in config order, with their audio path (None: no audio)."""
    assert ctx.config is not None
    config = ctx.config
    return [(c, audio_path(config, s)) for c, s in config.channels.items() if ctx.wanted(c)]


def no_audio(check: str, targets: list[tuple[str, AudioPath | None]]) -> list[CheckResult]:
    """One SKIP per channel without audio; a single one when no channel has any."""
    if not any(path for _, path in targets):
        return [CheckResult(check, "-", "SKIP", "no channel with audio configured")]
    return []
