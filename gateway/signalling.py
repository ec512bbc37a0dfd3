"""Signalling in audio files: what `consolegw signal decode` and `signal encode` do.

Formats so far: DTMF (gateway.dsp.dtmf). Files are read with soundfile (WAV, FLAC, Ogg and
what else libsndfile reads); a file of several channels is read channel by channel, each
the audio of its own radio or line.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from gateway.audio import to_pcm16, write_wav16
from gateway.dsp.dtmf import (
    MIN_RATE,
    DtmfDecoder,
    DtmfDigit,
    DtmfEvent,
    DtmfSequence,
    dtmf_signal,
)

FORMATS = ("dtmf",)
_BLOCK_S = 1.0  # read and decoded a second at a time: a long recording is never all in RAM


def decode_file(path: str | Path) -> tuple[list[tuple[int, DtmfEvent]], list[str]]:
    """Every event in the file, as (channel, event) in time order, and notes on the file;
    ValueError naming the file when it cannot be read."""
    try:
        info = soundfile.info(str(path))
    except (RuntimeError, OSError) as exc:  # soundfile raises LibsndfileError(RuntimeError)
        raise ValueError(f"{path}: not an audio file soundfile can read ({exc})") from None
    rate, channels = int(info.samplerate), int(info.channels)
    if rate < MIN_RATE:
        raise ValueError(f"{path}: {rate} Hz is too low for signalling ({MIN_RATE} Hz at least)")
    decoders = [DtmfDecoder(rate) for _ in range(channels)]
    found: list[tuple[float, int, DtmfEvent]] = []
    try:
        with soundfile.SoundFile(str(path)) as audio:
            for block in audio.blocks(blocksize=round(_BLOCK_S * rate), dtype="float32"):
                frames = np.asarray(block, dtype=np.float32).reshape(len(block), -1)
                for ch, decoder in enumerate(decoders):
                    found.extend((_when(e), ch, e) for e in decoder.feed(frames[:, ch]))
    except (RuntimeError, OSError) as exc:
        raise ValueError(f"{path}: read failed ({exc})") from None
    for ch, decoder in enumerate(decoders):
        found.extend((_when(e), ch, e) for e in decoder.flush())
    found.sort(key=lambda item: (item[0], item[1], isinstance(item[2], DtmfSequence)))
    seconds = info.frames / rate
    notes = [f"{path}: {seconds:.1f} s at {rate} Hz, {channels} channel(s)"]
    return [(ch, e) for _, ch, e in found], notes


def _when(event: DtmfEvent) -> float:
    # A sequence is told after its last digit: sorted by its end, digits by their start.
    return event.end if isinstance(event, DtmfSequence) else event.start


def event_json(channel: int, event: DtmfEvent) -> dict[str, Any]:
    kind = "dtmf.digit" if isinstance(event, DtmfDigit) else "dtmf.digits"
    return {"type": kind, "channel": channel, **asdict(event)}


def describe(channel: int, event: DtmfEvent, channels: int) -> str:
    where = f"ch{channel} " if channels > 1 else ""
    span = f"{event.start:8.3f}-{event.end:.3f} s"
    if isinstance(event, DtmfSequence):
        return f"{span}  {where}DTMF digits {event.digits}"
    return (
        f"{span}  {where}DTMF {event.digit}  ({event.low_hz:.0f} + {event.high_hz:.0f} Hz, "
        f"{event.level_dbfs:+.1f} dBFS, twist {event.twist_db:+.1f} dB)"
    )


def encode_file(
    fmt: str,
    what: str,
    path: str | Path,
    *,
    samplerate: int = 8000,
    on_ms: float = 100.0,
    off_ms: float = 100.0,
    level_dbfs: float = -10.0,
) -> float:
    """Write `what` (digits, for DTMF) as a 16-bit mono WAV file; its length in seconds."""
    if fmt != "dtmf":
        raise ValueError(f"unknown signalling format {fmt!r} (known: {', '.join(FORMATS)})")
    if not 20.0 <= on_ms <= 10000.0 or not 0.0 <= off_ms <= 10000.0:
        raise ValueError("--on-ms must be 20-10000 and --off-ms 0-10000")
    if not -60.0 <= level_dbfs <= -6.5:
        raise ValueError("--level must be -60 to -6.5 dBFS (each tone; the pair peaks 6 dB up)")
    audio = dtmf_signal(
        what, samplerate, on_s=on_ms / 1000.0, off_s=off_ms / 1000.0, level_dbfs=level_dbfs
    )
    write_wav16(path, to_pcm16(audio), samplerate)
    return len(audio) / samplerate
