"""Signalling in audio files: what `consolegw signal decode` and `signal encode` do.

Formats so far: DTMF (gateway.dsp.dtmf) and 5-tone selcall in CCIR, ZVEI1 and EEA
(gateway.dsp.selcall); a file is read by every decoder at once. Files are read with
soundfile (WAV, FLAC, Ogg and what else libsndfile reads); a file of several channels is
read channel by channel, each the audio of its own radio or line.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import soundfile

from gateway.audio import to_pcm16, write_wav16
from gateway.dsp import selcall
from gateway.dsp.dtmf import (
    MIN_RATE,
    DtmfDecoder,
    DtmfDigit,
    DtmfSequence,
    dtmf_signal,
)
from gateway.dsp.selcall import SelcallCall, SelcallDecoder, SelcallTone, selcall_signal

FORMATS = ("dtmf", "selcall")
Event = DtmfDigit | DtmfSequence | SelcallCall
"""What a file's reading reports (a call's single tones are within its SelcallCall)."""
_BLOCK_S = 1.0  # read and decoded a second at a time: a long recording is never all in RAM


class _Decoders:
    """Every decoder on one channel's audio."""

    def __init__(self, rate: int) -> None:
        self.dtmf = DtmfDecoder(rate)
        self.selcall = SelcallDecoder(rate, list(selcall.STANDARDS))

    def feed(self, x: npt.NDArray[np.float32]) -> list[Event]:
        found: list[Event] = list(self.dtmf.feed(x))
        found.extend(e for e in self.selcall.feed(x) if not isinstance(e, SelcallTone))
        return found

    def flush(self) -> list[Event]:
        found: list[Event] = list(self.dtmf.flush())
        found.extend(e for e in self.selcall.flush() if not isinstance(e, SelcallTone))
        return found


def decode_file(path: str | Path) -> tuple[list[tuple[int, Event]], list[str]]:
    """Every event in the file, as (channel, event) in time order, and notes on the file;
    ValueError naming the file when it cannot be read."""
    try:
        info = soundfile.info(str(path))
    except (RuntimeError, OSError) as exc:  # soundfile raises LibsndfileError(RuntimeError)
        raise ValueError(f"{path}: not an audio file soundfile can read ({exc})") from None
    rate, channels = int(info.samplerate), int(info.channels)
    if rate < MIN_RATE:
        raise ValueError(f"{path}: {rate} Hz is too low for signalling ({MIN_RATE} Hz at least)")
    decoders = [_Decoders(rate) for _ in range(channels)]
    found: list[tuple[float, int, Event]] = []
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
    found.sort(key=lambda item: (item[0], item[1], not isinstance(item[2], DtmfDigit)))
    seconds = info.frames / rate
    notes = [f"{path}: {seconds:.1f} s at {rate} Hz, {channels} channel(s)"]
    return [(ch, e) for _, ch, e in found], notes


def _when(event: Event) -> float:
    # A sequence or call is told when it ends: sorted by its end, digits by their start.
    return event.start if isinstance(event, DtmfDigit) else event.end


def event_json(channel: int, event: Event) -> dict[str, Any]:
    if isinstance(event, SelcallCall):
        return {"type": "selcall.detected", "channel": channel, **asdict(event)}
    kind = "dtmf.digit" if isinstance(event, DtmfDigit) else "dtmf.digits"
    return {"type": kind, "channel": channel, **asdict(event)}


def describe(channel: int, event: Event, channels: int) -> str:
    where = f"ch{channel} " if channels > 1 else ""
    span = f"{event.start:8.3f}-{event.end:.3f} s"
    if isinstance(event, SelcallCall):
        sent = f" (tones {event.tones})" if event.tones != event.digits else ""
        return f"{span}  {where}selcall {event.standard.upper()} {event.digits}{sent}"
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
    on_ms: float | None = None,
    off_ms: float = 100.0,
    level_dbfs: float = -10.0,
    standard: str = "ccir",
    first_ms: float | None = None,
) -> float:
    """Write `what` (the digits) as a 16-bit mono WAV file; its length in seconds.

    DTMF: `on_ms` tones and `off_ms` pauses. Selcall: `standard`'s tone length unless
    `on_ms` is given, `first_ms` for a stretched first tone."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown signalling format {fmt!r} (known: {', '.join(FORMATS)})")
    if (on_ms is not None and not 20.0 <= on_ms <= 2000.0) or not 0.0 <= off_ms <= 10000.0:
        raise ValueError("--on-ms must be 20-2000 and --off-ms 0-10000")
    if not -60.0 <= level_dbfs <= -6.5:
        raise ValueError("--level must be -60 to -6.5 dBFS (each tone; a DTMF pair peaks 6 dB up)")
    if fmt == "selcall":
        if first_ms is not None and not 20.0 <= first_ms <= 5000.0:
            raise ValueError("--first-ms must be 20-5000")
        audio = selcall_signal(
            what,
            samplerate,
            standard=standard,
            level_dbfs=level_dbfs,
            tone_s=None if on_ms is None else on_ms / 1000.0,
            first_tone_s=None if first_ms is None else first_ms / 1000.0,
        )
        write_wav16(path, to_pcm16(audio), samplerate)
        return len(audio) / samplerate
    on_s = 0.1 if on_ms is None else on_ms / 1000.0
    audio = dtmf_signal(what, samplerate, on_s=on_s, off_s=off_ms / 1000.0, level_dbfs=level_dbfs)
    write_wav16(path, to_pcm16(audio), samplerate)
    return len(audio) / samplerate
