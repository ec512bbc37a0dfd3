"""TTY/TDD on a channel: callers' text to CAD as it arrives, call takers' replies back.

The channel's captured audio feeds a streaming decoder (gateway.dsp.tty). Events:
- tty.detected when a TTY is recognised (45.45 or 50 baud, tone frequencies measured);
- tty.text with the characters decoded in one audio block (`line` false), as they arrive,
  and with each whole line (`line` true) when the caller ends it or the TTY goes quiet.
  The caller's shift convention (unshift on space or not) is found from the signal; when
  it shows, text typed after a space in figures may be read again: that tty.text has
  `revised` true and replaces the line from its `offset` on. The line event is final;
- tty.ended when the tones stop.
The `tty` request encodes the call taker's text and plays it on the channel's output.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, field_validator

from drivers.audio import AudioPlayback
from drivers.errors import DeviceError
from gateway.audio import Audio, ChannelAudio, playback_for, to_pcm16, write_wav16
from gateway.commands import CommandRouter, Request, RequestContext
from gateway.config import AudioDeviceSection, ChannelSignallingSection, ChannelTtySection
from gateway.dsp import (
    ShiftConvention,
    TtyChar,
    TtyDecoder,
    TtyDetected,
    TtyEncoder,
    TtyEnded,
    TtyEvent,
    TtyRetract,
)
from gateway.errors import CommandError
from gateway.events import EventData, Payload, register_event_type, utc_timestamp
from gateway.publisher import Publisher
from gateway.subsystem import Subsystem, SubsystemContext

log = logging.getLogger(__name__)

_MAX_REPLY_CHARS = 2000
ECHO_GUARD_S = 0.3
"""After our reply, the line's echo still arrives this long (path latency included)."""


class TtyDetectedData(EventData):
    baud: float = Field(description="The caller's bit rate as measured: 45.45 or 50 (US TTY)")
    mark_hz: float = Field(description="The mark tone as measured, Hz (nominal 1400)")
    space_hz: float = Field(description="The space tone as measured, Hz (nominal 1800)")


class TtyTextData(EventData):
    text: str = Field(
        description="What the caller typed: the characters as they arrive (line false) or "
        "the whole line, as finally read (line true)"
    )
    line: bool = Field(description="False: characters as they arrive; true: a whole line")
    revised: bool = Field(
        default=False,
        description="True: this text replaces the line's characters from `offset` on (read "
        "again once the caller's shift convention showed); it may be empty",
    )
    offset: int = Field(
        default=0,
        ge=0,
        description="Where in the current line this text starts (line false); the line event "
        "carries the final reading",
    )


class TtyEndedData(EventData):
    characters: int = Field(description="Characters decoded in this TTY session")


class TtySentData(EventData):
    text: str = Field(
        description="The reply, in upper case (characters TTY has no code for were not played)"
    )
    baud: float = Field(description="The bit rate it was played at: 45.45 or 50")
    seconds: float = Field(description="How long it took to play")


register_event_type("tty.detected", TtyDetectedData)
register_event_type("tty.text", TtyTextData)
register_event_type("tty.ended", TtyEndedData)
register_event_type("tty.sent", TtySentData)


class TtyState(Payload):
    """`<prefix>/channels/<id>/tty`, retained: is a TTY on the line, and what it said last."""

    channel: str = Field(description="The channel id")
    active: bool = Field(description="True while a TTY signal is on the line")
    baud: float | None = Field(description="The caller's bit rate, while active; else null")
    last_line: str | None = Field(description="The last whole line the caller typed, or null")
    ts: str = Field(description="When this state was taken, RFC 3339 UTC")


class TtyRequest(Request):
    text: str = Field(
        min_length=1,
        max_length=_MAX_REPLY_CHARS,
        description="The reply to play to the caller: TTY sends upper case, and leaves out "
        "characters it has no code for",
    )
    baud: float | None = Field(default=None, description="45.45 or 50; default the config's")

    @field_validator("baud")
    @classmethod
    def _baud(cls, value: float | None) -> float | None:
        if value is not None and value not in (45.45, 50.0):
            raise ValueError("must be 45.45 or 50")
        return value


class ChannelTty:
    """Decodes one channel's audio and answers on its output."""

    def __init__(
        self,
        *,
        channel_id: str,
        config: ChannelTtySection,
        audio: ChannelAudio,
        samplerate: int,
        player: Player,
        publisher: Publisher,
    ) -> None:
        self.channel_id = channel_id
        self._cfg = config
        self._sr = samplerate
        self._player = player
        self._pub = publisher
        self._decoder = TtyDecoder(sample_rate=samplerate, shift=config.shift)
        self._line: list[str] = []
        self._chunk_at = 0  # where in the line the characters not published yet start
        self._revised = False  # and whether they replace what was published from there
        self._chars = 0
        self._baud: float | None = None
        self._active = False
        self._last_line: str | None = None
        self._state_topic = publisher.topic_for("channel", channel_id, "tty")
        self._sending = False
        self._deaf_until = 0.0
        audio.sample_listeners.append(self.feed)

    def publish_state(self) -> None:
        state = TtyState(
            channel=self.channel_id,
            active=self._active,
            baud=self._baud,
            last_line=self._last_line,
            ts=utc_timestamp(),
        )
        self._pub.set_state(self._state_topic, state)

    def feed(self, samples: NDArray[np.float32]) -> None:
        if self._sending or time.monotonic() < self._deaf_until:
            # Half duplex: our own reply comes back through the line's hybrid. The decoder
            # hears silence meanwhile (zeros, so its stream time stays right).
            samples = np.zeros_like(samples)
        events = self._decoder.feed(samples)
        if events:
            self._handle(events)

    def _handle(self, events: list[TtyEvent]) -> None:
        arrived: list[str] = []
        self._chunk_at = len(self._line)
        for event in events:
            if isinstance(event, TtyDetected):
                if not self._active:  # (a rate read again is told again, same session)
                    self._chars = 0
                self._active, self._baud = True, round(event.baud, 2)
                log.info(
                    "channel %s: TTY detected, %g baud (mark %.0f Hz, space %.0f Hz)",
                    self.channel_id,
                    event.baud,
                    event.mark_hz,
                    event.space_hz,
                )
                data = TtyDetectedData(
                    baud=round(event.baud, 2),
                    mark_hz=round(event.mark_hz, 1),
                    space_hz=round(event.space_hz, 1),
                )
                self._pub.emit("channel", self.channel_id, "tty.detected", data, keep=True)
                self.publish_state()
            elif isinstance(event, TtyChar):
                self._chars += 1
                if event.char in "\r\n":
                    self._flush_chars(arrived)
                    self._end_line()
                else:
                    arrived.append(event.char)
                    self._line.append(event.char)
            elif isinstance(event, TtyRetract):
                self._flush_chars(arrived)
                count = min(event.count, len(self._line))
                self._chars -= event.count
                del self._line[len(self._line) - count :]
                self._chunk_at = len(self._line)
                self._revised = True
            elif isinstance(event, TtyEnded):
                self._flush_chars(arrived)
                self._end_line()
                self._active = False
                log.info("channel %s: TTY ended (%d characters)", self.channel_id, self._chars)
                ended = TtyEndedData(characters=self._chars)
                self._pub.emit("channel", self.channel_id, "tty.ended", ended, keep=True)
                self.publish_state()
        self._flush_chars(arrived)

    def _flush_chars(self, arrived: list[str]) -> None:
        if arrived or self._revised:
            text = "".join(arrived)
            arrived.clear()
            data = TtyTextData(text=text, line=False, revised=self._revised, offset=self._chunk_at)
            self._pub.emit("channel", self.channel_id, "tty.text", data, keep=True)
        self._revised = False
        self._chunk_at = len(self._line)

    def _end_line(self) -> None:
        line = "".join(self._line).strip()
        self._line.clear()
        self._chunk_at = 0
        if line:
            self._last_line = line
            data = TtyTextData(text=line, line=True)
            self._pub.emit("channel", self.channel_id, "tty.text", data, keep=True)
            self.publish_state()

    async def send(self, text: str, baud: float | None) -> dict[str, Any]:
        rate = baud or self._cfg.reply_baud
        encoder = TtyEncoder(
            sample_rate=self._sr,
            baud=rate,
            amplitude=reply_amplitude(self._cfg.reply_level_dbfs),
        )
        audio = encoder.encode(text.upper())
        seconds = len(audio) / self._sr
        log.info(
            "channel %s: sending TTY reply (%d chars, %.1f s)", self.channel_id, len(text), seconds
        )
        self._sending = True
        try:
            await self._player.play(audio)
        finally:
            self._sending = False
            self._deaf_until = time.monotonic() + ECHO_GUARD_S
        data = TtySentData(text=text.upper(), baud=rate, seconds=round(seconds, 2))
        self._pub.emit("channel", self.channel_id, "tty.sent", data, keep=True)
        return {"text": text.upper(), "baud": rate, "seconds": round(seconds, 2)}


class Player:
    """Plays on one column of an output device, opening it when first needed.

    A device that fails is closed and reopened on the next play; the requester gets an
    error for the play that failed, never a hung request.
    """

    def __init__(self, *, column: int, shared: SharedOutput) -> None:
        self._column = column
        self._shared = shared

    async def play(self, samples: NDArray[np.float32]) -> None:
        playback = await self._shared.get()
        try:
            await playback.play(samples, column=self._column)
        except DeviceError as exc:
            await self._shared.reset()
            raise CommandError(f"audio output failed: {exc}") from None


class SharedOutput:
    """One AudioPlayback per output device, shared by the channels that play on it."""

    def __init__(self, *, device_id: str, config: AudioDeviceSection) -> None:
        self.device_id = device_id
        self._cfg = config
        self._playback: AudioPlayback | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> AudioPlayback:
        async with self._lock:
            if self._playback is None:
                playback = playback_for(self._cfg)
                try:
                    await playback.open()
                except DeviceError as exc:
                    raise CommandError(
                        f"audio output {self.device_id} unavailable: {exc}"
                    ) from None
                self._playback = playback
            return self._playback

    async def reset(self) -> None:
        async with self._lock:
            if self._playback is not None:
                await self._playback.close()
                self._playback = None

    async def close(self) -> None:
        await self.reset()


def reply_amplitude(level_dbfs: float) -> float:
    """Peak amplitude of FSK tones at `level_dbfs` (RMS), at most full scale."""
    return float(min(1.0, 10 ** (level_dbfs / 20) * np.sqrt(2)))


def reply_output(
    section: ChannelTtySection | ChannelSignallingSection | None, device_id: str, column: int
) -> tuple[str, int]:
    """Where a channel's TTY replies (or signalling) play: the configured output, else the
    capture's own device and column."""
    if section is None:
        return device_id, column
    out_column = section.output_column if section.output_column is not None else column
    return section.output_device or device_id, out_column


def build_tty(
    *,
    channels: dict[str, tuple[ChannelTtySection, ChannelAudio, str, int]],
    devices: dict[str, AudioDeviceSection],
    publisher: Publisher,
) -> tuple[dict[str, ChannelTty], dict[str, SharedOutput]]:
    """`channels`: id -> (tty config, its ChannelAudio, capture device id, capture column)."""
    outputs: dict[str, SharedOutput] = {}
    ttys: dict[str, ChannelTty] = {}
    for channel_id, (section, audio, device_id, column) in channels.items():
        if not section.enabled:
            continue
        out_id, out_column = reply_output(section, device_id, column)
        shared = outputs.setdefault(out_id, SharedOutput(device_id=out_id, config=devices[out_id]))
        ttys[channel_id] = ChannelTty(
            channel_id=channel_id,
            config=section,
            audio=audio,
            samplerate=devices[device_id].samplerate,
            player=Player(column=out_column, shared=shared),
            publisher=publisher,
        )
    return ttys, outputs


class TtySendResponse(Payload):
    """`data` of the answer to `tty`, once the text has been played."""

    text: str = Field(description="The text sent, upper-cased (Baudot has no lower case)")
    baud: float = Field(description="The rate it was sent at: 45.45 or 50")
    seconds: float = Field(description="How long it played, in seconds")


def register_tty_commands(router: CommandRouter, ttys: dict[str, ChannelTty]) -> None:
    async def tty(params: TtyRequest, ctx: RequestContext) -> TtySendResponse:
        channel = ttys.get(ctx.target)
        if channel is None:
            raise CommandError(f"channel {ctx.target} has no TTY configured")
        return TtySendResponse.model_validate(await channel.send(params.text, params.baud))

    router.register(
        "channels",
        "tty",
        TtyRequest,
        tty,
        response=TtySendResponse,
        description="Send text as TTY/TDD (Baudot) on the channel's audio output; answers "
        "once it has been played.",
    )


class Tty(Subsystem):
    """TTY/TDD on the channels that have audio and a `[channels.<id>.tty]` section."""

    name = "tty"

    def __init__(self, ttys: dict[str, ChannelTty], outputs: dict[str, SharedOutput]) -> None:
        self.ttys = ttys
        self.outputs = outputs

    @classmethod
    def build(cls, ctx: SubsystemContext) -> Tty:
        audio = ctx.get(Audio).channels
        ttys, outputs = build_tty(
            channels={
                channel_id: (
                    section.tty,
                    audio[channel_id],
                    section.audio.device,
                    section.audio.column,
                )
                for channel_id, section in ctx.config.channels.items()
                if section.tty is not None and section.audio is not None
            },
            devices=ctx.config.audio.devices,
            publisher=ctx.publisher,
        )
        return cls(ttys, outputs)

    def register(self, router: CommandRouter) -> None:
        register_tty_commands(router, self.ttys)

    def publish_states(self) -> None:
        for tty in self.ttys.values():
            tty.publish_state()

    async def close(self) -> None:
        await close_outputs(self.outputs)


# -- the `consolegw tty` command -----------------------------------------------------------


def decode_file(
    path: str, *, shift: ShiftConvention = "auto", baud: float | None = None
) -> tuple[list[TtyChar], list[str]]:
    """Decode a WAV file: the characters of the final reading (withdrawn ones taken out),
    and diagnostics."""
    import wave

    with wave.open(path, "rb") as recording:
        rate = recording.getframerate()
        width = recording.getsampwidth()
        channels = recording.getnchannels()
        raw = recording.readframes(recording.getnframes())
    if width == 2:
        samples = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 1:
        samples = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 4:
        samples = np.frombuffer(raw, "<i4").astype(np.float32) / 2147483648.0
    else:
        raise ValueError(f"{path}: {8 * width}-bit samples are not supported")
    if channels > 1:
        samples = samples.reshape(-1, channels)[:, 0]
    decoder = TtyDecoder(sample_rate=rate, shift=shift, baud=baud)
    events = decoder.feed(samples) + decoder.flush()
    chars: list[TtyChar] = []
    revised = 0
    notes = [f"{path}: {len(samples) / rate:.1f} s at {rate} Hz"]
    for event in events:
        if isinstance(event, TtyDetected):
            notes.append(
                f"TTY detected at {event.time:.2f} s: {event.baud:g} baud, mark "
                f"{event.mark_hz:.0f} Hz, space {event.space_hz:.0f} Hz"
            )
        elif isinstance(event, TtyChar):
            chars.append(event)
        elif isinstance(event, TtyRetract):
            del chars[len(chars) - event.count :]
            revised += 1
        elif isinstance(event, TtyEnded):
            notes.append(f"TTY ended at {event.time:.2f} s")
    if revised:
        notes.append(f"read again {revised} time(s) as the sender's shift convention showed")
    return chars, notes


def encode_file(text: str, path: str, *, baud: float, samplerate: int = 8000) -> float:
    audio = TtyEncoder(sample_rate=samplerate, baud=baud).encode(text.upper())
    write_wav16(path, to_pcm16(audio), samplerate)
    return len(audio) / samplerate


async def close_outputs(outputs: dict[str, SharedOutput]) -> None:
    for output in outputs.values():
        with contextlib.suppress(Exception):
            await output.close()
