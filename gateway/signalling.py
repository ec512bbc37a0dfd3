"""Signalling: decoded on live channels for CAD, and in files for `consolegw signal`.

On a channel with `[channels.<id>.signalling]`, its captured audio feeds the decoders
configured there; events (stamped with when the signal ended, as heard):
- dtmf.digit per DTMF digit, dtmf.digits when a string of them ends (a 1.5 s gap);
- selcall.detected per 5-tone call, with its standard, digits and the tones as sent;
- page.detected per two-tone page configured (by name), with the tones as measured;
- unit.id per MDC-1200 packet (PTT ID at the start of a transmission, post ID at its end,
  status, acknowledgements...), and emergency.raised for a unit's emergency packet; the
  channel's retained state shows the last unit heard (`last_unit`).
Requests `selcall`, `dtmf` and `page` send them: the radio is keyed through the channel's normal
PTT path (busy lockout, time-out and lease apply; a channel already transmitting is
refused), the tones play after tx_delay_ms, the radio unkeys, and the answer comes once
they have played (events selcall.sent, dtmf.sent). The decoders are deaf meanwhile: the
channel hears its own transmission.

Formats: DTMF (gateway.dsp.dtmf), 5-tone selcall in CCIR, ZVEI1 and EEA
(gateway.dsp.selcall), two-tone pages (gateway.dsp.twotone) and MDC-1200
(gateway.dsp.mdc1200); a file is read by every decoder at once. Files are read with
soundfile (WAV, FLAC, Ogg and what else libsndfile reads); a file of several channels is
read channel by channel, each the audio of its own radio or line.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import soundfile
from pydantic import Field

from gateway.audio import Audio, ChannelAudio, to_pcm16, write_wav16
from gateway.channel import ChannelMonitor, PttRequest, Radios
from gateway.commands import CommandRouter, Request, RequestContext
from gateway.config import ChannelSignallingSection
from gateway.dsp import selcall
from gateway.dsp.dtmf import (
    MIN_RATE,
    DtmfDecoder,
    DtmfDigit,
    DtmfSequence,
    dtmf_signal,
)
from gateway.dsp.mdc1200 import Mdc1200Decoder, MdcPacket, mdc_signal, parse_packet
from gateway.dsp.selcall import (
    SelcallCall,
    SelcallDecoder,
    SelcallSettings,
    SelcallTone,
    StandardName,
    selcall_signal,
    selcall_tones,
)
from gateway.dsp.twotone import (
    Page,
    PageDetected,
    TwoToneDecoder,
    TwoToneSettings,
    default_a_s,
    page_signal,
)
from gateway.errors import CommandError
from gateway.events import EventData, Payload, register_event_type
from gateway.publisher import Publisher
from gateway.subsystem import Subsystem, SubsystemContext
from gateway.tty import ECHO_GUARD_S, Player, SharedOutput, Tty, reply_output

log = logging.getLogger(__name__)

FORMATS = ("dtmf", "selcall", "page", "mdc1200")
Event = DtmfDigit | DtmfSequence | SelcallCall | PageDetected | MdcPacket
"""What a file's reading reports (a call's single tones are within its SelcallCall)."""
_BLOCK_S = 1.0  # read and decoded a second at a time: a long recording is never all in RAM


class DtmfDigitData(EventData):
    digit: str = Field(description="The key: 0-9, *, #, A-D")
    duration_s: float = Field(description="How long the tone pair lasted, seconds")
    level_dbfs: float = Field(description="The stronger tone's level, as a sine's peak, dBFS")
    twist_db: float = Field(description="The high group's level over the low group's, dB")


class DtmfDigitsData(EventData):
    digits: str = Field(description="The digits of one string (gaps under 1.5 s), in order")
    duration_s: float = Field(description="From the first digit's start to the last's end, s")


class SelcallData(EventData):
    standard: StandardName = Field(description="The 5-tone standard heard")
    digits: str = Field(description="The call's digits, a repeat tone read as the digit before")
    tones: str = Field(description="The tones as sent (E: the repeat tone)")
    duration_s: float = Field(description="From the first tone's start to the last's end, s")


class PageData(EventData):
    name: str = Field(description="The configured page heard")
    a_hz: float = Field(description="Tone A as measured, Hz")
    b_hz: float | None = Field(description="Tone B as measured, Hz; null for a long tone")
    a_s: float = Field(
        description="How long tone A lasted, s (a long tone: as long as it had lasted when "
        "told, which is as soon as it was long enough)"
    )
    b_s: float | None = Field(description="How long tone B lasted, s; null for a long tone")


class UnitIdData(EventData):
    unit: str = Field(description="The unit ID, 4 hex digits as radios show it")
    kind: str = Field(
        description="ptt_id (at the start of a transmission), post_id (at its end), "
        "emergency_ack, status, message, call_alert, radio_check, ... or op_XX for an "
        "opcode without a name"
    )
    op: int = Field(description="The packet's opcode")
    arg: int = Field(description="Its argument")
    target: str | None = Field(
        description="A double packet's other unit (a call alert's called unit); else null"
    )
    receiving: bool | None = Field(
        description="Whether the channel had carrier when the packet ended: the transmission "
        "it belongs to (null where COS is not known)"
    )


class EmergencyData(EventData):
    unit: str = Field(description="The unit in emergency, 4 hex digits")
    arg: int = Field(description="The emergency packet's argument")


class PageSentData(EventData):
    name: str | None = Field(description="The configured page sent, or null (explicit tones)")
    a_hz: float = Field(description="Tone A, Hz")
    b_hz: float | None = Field(description="Tone B, Hz; null for a long tone")
    seconds: float = Field(description="How long the tones played")


class PageRequest(Request):
    name: str | None = Field(
        default=None, max_length=64, description="A page configured on the channel, by name"
    )
    a_hz: float | None = Field(
        default=None, ge=200, le=3000, description="Explicit tones instead of a name: tone A, Hz"
    )
    b_hz: float | None = Field(
        default=None, ge=200, le=3000, description="Tone B, Hz; absent for a long tone"
    )
    a_s: float | None = Field(
        default=None, ge=0.1, le=30, description="Tone A's length (1 s; a long tone 8 s)"
    )
    b_s: float = Field(default=3.0, ge=0.1, le=30, description="Tone B's length, s")


class SelcallSentData(EventData):
    standard: StandardName = Field(description="The 5-tone standard sent")
    digits: str = Field(description="The call's digits")
    tones: str = Field(description="The tones sent (E: the repeat tone)")
    seconds: float = Field(description="How long the tones played")


class DtmfSentData(EventData):
    digits: str = Field(description="The digits sent")
    seconds: float = Field(description="How long the tones played")


class SelcallRequest(Request):
    digits: str = Field(
        min_length=1,
        max_length=16,
        pattern=r"^[0-9A-DFa-df]+$",
        description="The digits to call (0-9, A-D, F; a repeated digit is sent as E)",
    )
    standard: StandardName | None = Field(
        default=None,
        description="ccir, zvei1 or eea; default the first the channel reads, else ccir",
    )
    first_tone_ms: float | None = Field(
        default=None,
        ge=20,
        le=2000,
        description="Hold the first tone this long (to wake scanning radios); default the "
        "standard's tone length",
    )


class DtmfRequest(Request):
    digits: str = Field(
        min_length=1,
        max_length=32,
        pattern=r"^[0-9A-Da-d*#]+$",
        description="The digits to send: 0-9, *, #, A-D",
    )
    on_ms: float = Field(default=100.0, ge=40, le=1000, description="Each tone's length")
    off_ms: float = Field(default=100.0, ge=40, le=1000, description="Each pause's length")


class SignalSentResponse(Payload):
    """`data` of the answer to `selcall` and `dtmf`, once the tones have played."""

    digits: str = Field(description="The digits sent; a page: its name, or the tones in Hz")
    tones: str | None = Field(description="Selcall: the tones sent (E the repeat); else null")
    standard: StandardName | None = Field(description="Selcall: the standard; else null")
    seconds: float = Field(description="How long the tones played")


register_event_type("page.detected", PageData)
register_event_type("unit.id", UnitIdData)
register_event_type("emergency.raised", EmergencyData)
register_event_type("page.sent", PageSentData)
register_event_type("selcall.sent", SelcallSentData)
register_event_type("dtmf.sent", DtmfSentData)
register_event_type("dtmf.digit", DtmfDigitData)
register_event_type("dtmf.digits", DtmfDigitsData)
register_event_type("selcall.detected", SelcallData)


class ChannelSignalling:
    """The decoders of one channel's audio, and its events."""

    def __init__(
        self,
        *,
        channel_id: str,
        config: ChannelSignallingSection,
        audio: ChannelAudio,
        samplerate: int,
        publisher: Publisher,
        radio: ChannelMonitor | None = None,
    ) -> None:
        if samplerate < MIN_RATE:
            raise ValueError(f"channel {channel_id}: {samplerate} Hz is too low for signalling")
        self.channel_id = channel_id
        self._rate = samplerate
        self._pub = publisher
        self._radio = radio
        self._decoders = _Decoders(
            samplerate,
            dtmf=config.dtmf,
            standards=list(config.selcall),
            min_digits=config.selcall_min_digits,
            pages=[
                Page(name, p.a_hz, p.b_hz, a_s=p.a_seconds, b_s=p.b_s)
                for name, p in config.pages.items()
            ],
            page_tolerance=config.page_tolerance_pct / 100.0,
            mdc1200=config.mdc1200,
        )
        self._fed = 0  # samples fed: the decoders' stream time is _fed / rate
        self._cfg = config
        self._sending = False
        self._deaf_until = 0.0
        audio.block_listeners.append(self.feed)

    def feed(self, samples: npt.NDArray[np.float32], end_wall: float, *, active: bool) -> None:
        del active  # tones are read whatever the level meter says
        if self._sending or time.monotonic() < self._deaf_until:
            # Our own transmission comes back on the receive audio: heard as silence (zeros,
            # so that the decoders' stream time stays right).
            samples = np.zeros_like(samples)
        self._fed += len(samples)
        events = self._decoders.feed(samples)
        if events:
            now = self._fed / self._rate
            for event in events:
                self._emit(event, end_wall - (now - event.end))

    def _emit(self, event: Event, ts: float) -> None:
        duration = round(event.end - event.start, 3)
        cid = self.channel_id
        if isinstance(event, DtmfDigit):
            data: EventData = DtmfDigitData(
                digit=event.digit,
                duration_s=duration,
                level_dbfs=event.level_dbfs,
                twist_db=event.twist_db,
            )
            self._pub.emit("channel", cid, "dtmf.digit", data, ts=ts)
        elif isinstance(event, DtmfSequence):
            log.info("channel %s: DTMF %s", cid, event.digits)
            data = DtmfDigitsData(digits=event.digits, duration_s=duration)
            self._pub.emit("channel", cid, "dtmf.digits", data, keep=True, ts=ts)
        elif isinstance(event, MdcPacket):
            self._emit_mdc(event, ts)
        elif isinstance(event, PageDetected):
            log.info("channel %s: page %s", cid, event.name)
            data = PageData(
                name=event.name, a_hz=event.a_hz, b_hz=event.b_hz, a_s=event.a_s, b_s=event.b_s
            )
            self._pub.emit("channel", cid, "page.detected", data, keep=True, ts=ts)
        else:
            log.info("channel %s: selcall %s %s", cid, event.standard.upper(), event.digits)
            data = SelcallData(
                standard=event.standard,
                digits=event.digits,
                tones=event.tones,
                duration_s=duration,
            )
            self._pub.emit("channel", cid, "selcall.detected", data, keep=True, ts=ts)

    def _emit_mdc(self, packet: MdcPacket, ts: float) -> None:
        cid = self.channel_id
        if self._radio is not None:
            self._radio.note_unit(packet.unit, packet.kind, ts)
        if packet.emergency:
            # A unit's emergency button: alarm-grade, kept through an outbox overflow.
            log.warning("channel %s: EMERGENCY from unit %s", cid, packet.unit)
            data: EventData = EmergencyData(unit=packet.unit, arg=packet.arg)
            self._pub.emit("channel", cid, "emergency.raised", data, keep=True, ts=ts)
            return
        log.info("channel %s: unit %s (%s)", cid, packet.unit, packet.kind)
        data = UnitIdData(
            unit=packet.unit,
            kind=packet.kind,
            op=packet.op,
            arg=packet.arg,
            target=packet.target,
            receiving=self._radio.cos if self._radio is not None else None,
        )
        self._pub.emit("channel", cid, "unit.id", data, keep=True, ts=ts)

    def page(self, params: PageRequest) -> tuple[str | None, float, float | None, float, float]:
        """(name, a_hz, b_hz, a_s, b_s) of a page request: by name, or explicit tones."""
        if params.name is not None:
            if params.a_hz is not None or params.b_hz is not None:
                raise CommandError("give a page's name or its tones (a_hz, b_hz), not both")
            page = self._cfg.pages.get(params.name)
            if page is None:
                known = ", ".join(sorted(self._cfg.pages)) or "none configured"
                raise CommandError(f"no page {params.name!r} on {self.channel_id} ({known})")
            return params.name, page.a_hz, page.b_hz, page.a_seconds, page.b_s
        if params.a_hz is None:
            raise CommandError("give a page's name, or its tones: a_hz (and b_hz)")
        a_s = params.a_s if params.a_s is not None else default_a_s(params.b_hz)
        try:
            Page("request", params.a_hz, params.b_hz, a_s=a_s, b_s=params.b_s)
        except ValueError as exc:
            raise CommandError(str(exc).removeprefix("page 'request': ")) from None
        return None, params.a_hz, params.b_hz, a_s, params.b_s

    def default_standard(self) -> StandardName:
        return self._cfg.selcall[0] if self._cfg.selcall else "ccir"

    async def send(
        self,
        audio: npt.NDArray[np.float32],
        *,
        radio: ChannelMonitor,
        player: Player,
        ctx: RequestContext,
    ) -> float:
        """Key `radio`, play `audio` after tx_delay_ms, unkey; the seconds played."""
        seconds = len(audio) / self._rate
        delay = self._cfg.tx_delay_ms / 1000.0
        if radio.ptt:
            raise CommandError(
                f"channel {self.channel_id} is transmitting: try again when it stops"
            )
        await radio.request_ptt(PttRequest(state="on", duration_s=delay + seconds + 1.0), ctx)
        try:
            self._sending = True
            await asyncio.sleep(delay)
            await player.play(audio)
        finally:
            self._sending = False
            self._deaf_until = time.monotonic() + ECHO_GUARD_S
            await radio.request_ptt(PttRequest(state="off"), ctx)
        return round(seconds, 3)

    def tones_level(self) -> float:
        return self._cfg.tx_level_dbfs

    def emit_sent(self, kind: str, data: EventData) -> None:
        log.info("channel %s: %s %s", self.channel_id, kind, data.model_dump_json())
        self._pub.emit("channel", self.channel_id, kind, data)


@dataclass(frozen=True, slots=True)
class _Channel:
    """A channel's decoders, and what it sends with."""

    signalling: ChannelSignalling
    radio: ChannelMonitor
    player: Player
    rate: int


class Signalling(Subsystem):
    """Signalling decoders on the channels that have audio and `[channels.<id>.signalling]`,
    and the `selcall` and `dtmf` requests that send on them."""

    name = "signalling"

    def __init__(self, channels: dict[str, _Channel]) -> None:
        self.channels = channels

    @classmethod
    def build(cls, ctx: SubsystemContext) -> Signalling:
        audio = ctx.get(Audio).channels
        radios = ctx.get(Radios).channels
        outputs = ctx.get(Tty).outputs  # one playback per device, shared with TTY replies
        devices = ctx.config.audio.devices
        channels = {}
        for channel_id, section in ctx.config.channels.items():
            if section.signalling is None or section.audio is None:
                continue
            rate = devices[section.audio.device].samplerate
            out_id, out_column = reply_output(
                section.signalling, section.audio.device, section.audio.column
            )
            shared = outputs.setdefault(
                out_id, SharedOutput(device_id=out_id, config=devices[out_id])
            )
            channels[channel_id] = _Channel(
                ChannelSignalling(
                    channel_id=channel_id,
                    config=section.signalling,
                    audio=audio[channel_id],
                    samplerate=rate,
                    publisher=ctx.publisher,
                    radio=radios[channel_id],
                ),
                radios[channel_id],
                Player(column=out_column, shared=shared),
                rate,
            )
        return cls(channels)

    def summary(self) -> list[str]:
        if not self.channels:
            return []
        return [f"signalling on {len(self.channels)} channel(s)"]

    def _channel(self, target: str) -> _Channel:
        channel = self.channels.get(target)
        if channel is None:
            raise CommandError(f"channel {target} has no signalling configured")
        return channel

    def register(self, router: CommandRouter) -> None:
        async def selcall(params: SelcallRequest, ctx: RequestContext) -> SignalSentResponse:
            ch = self._channel(ctx.target)
            standard = params.standard or ch.signalling.default_standard()
            digits = params.digits.upper()
            first = params.first_tone_ms
            audio = selcall_signal(
                digits,
                ch.rate,
                standard=standard,
                level_dbfs=ch.signalling.tones_level(),
                first_tone_s=None if first is None else first / 1000.0,
            )
            seconds = await ch.signalling.send(audio, radio=ch.radio, player=ch.player, ctx=ctx)
            tones = selcall_tones(digits)
            sent = SelcallSentData(standard=standard, digits=digits, tones=tones, seconds=seconds)
            ch.signalling.emit_sent("selcall.sent", sent)
            return SignalSentResponse(
                digits=digits, tones=tones, standard=standard, seconds=seconds
            )

        async def dtmf(params: DtmfRequest, ctx: RequestContext) -> SignalSentResponse:
            ch = self._channel(ctx.target)
            digits = params.digits.upper()
            audio = dtmf_signal(
                digits,
                ch.rate,
                on_s=params.on_ms / 1000.0,
                off_s=params.off_ms / 1000.0,
                level_dbfs=ch.signalling.tones_level(),
            )
            seconds = await ch.signalling.send(audio, radio=ch.radio, player=ch.player, ctx=ctx)
            ch.signalling.emit_sent("dtmf.sent", DtmfSentData(digits=digits, seconds=seconds))
            return SignalSentResponse(digits=digits, tones=None, standard=None, seconds=seconds)

        async def page(params: PageRequest, ctx: RequestContext) -> SignalSentResponse:
            ch = self._channel(ctx.target)
            name, a_hz, b_hz, a_s, b_s = ch.signalling.page(params)
            level = ch.signalling.tones_level()
            audio = page_signal(a_hz, b_hz, ch.rate, a_s=a_s, b_s=b_s, level_dbfs=level)
            seconds = await ch.signalling.send(audio, radio=ch.radio, player=ch.player, ctx=ctx)
            sent = PageSentData(name=name, a_hz=a_hz, b_hz=b_hz, seconds=seconds)
            ch.signalling.emit_sent("page.sent", sent)
            shown = name or (f"{a_hz:g}/{b_hz:g}" if b_hz is not None else f"{a_hz:g}")
            return SignalSentResponse(digits=shown, tones=None, standard=None, seconds=seconds)

        router.register(
            "channels",
            "page",
            PageRequest,
            page,
            response=SignalSentResponse,
            description="Key the radio (busy lockout, time-out and lease apply), send a two-tone "
            "page (configured, by name, or explicit tones), unkey; answers once it has played.",
        )
        router.register(
            "channels",
            "selcall",
            SelcallRequest,
            selcall,
            response=SignalSentResponse,
            description="Key the radio (busy lockout, time-out and lease apply), send a 5-tone "
            "call, unkey; answers once it has played.",
        )
        router.register(
            "channels",
            "dtmf",
            DtmfRequest,
            dtmf,
            response=SignalSentResponse,
            description="Key the radio, send DTMF digits, unkey; answers once they have played.",
        )


class _Decoders:
    """The decoders wanted on one channel's audio, fed together."""

    def __init__(
        self,
        rate: int,
        *,
        dtmf: bool = True,
        standards: list[str] | None = None,
        min_digits: int = 5,
        pages: list[Page] | None = None,
        page_tolerance: float = 0.015,
        mdc1200: bool = False,
    ) -> None:
        self.dtmf = DtmfDecoder(rate) if dtmf else None
        self.mdc = Mdc1200Decoder(rate) if mdc1200 else None
        self.selcall = (
            SelcallDecoder(rate, standards, SelcallSettings(min_digits=min_digits))
            if standards
            else None
        )
        self.pages = (
            TwoToneDecoder(rate, pages, TwoToneSettings(tolerance=page_tolerance))
            if pages
            else None
        )

    def feed(self, x: npt.NDArray[np.float32]) -> list[Event]:
        return self._events(x)

    def flush(self) -> list[Event]:
        return self._events(None)

    def _events(self, x: npt.NDArray[np.float32] | None) -> list[Event]:
        """What each decoder gives for `x`, or at its flush (x None)."""
        found: list[Event] = []
        for decoder in (self.dtmf, self.selcall, self.pages, self.mdc):
            if decoder is not None:
                got = decoder.flush() if x is None else decoder.feed(x)
                found.extend(e for e in got if not isinstance(e, SelcallTone))
        return found


def parse_page(text: str) -> Page:
    """`NAME=A/B` (Hz) or `NAME=A` (a long tone), as `--page` takes it."""
    name, sep, tones = text.partition("=")
    try:
        hz = [float(t) for t in tones.split("/")] if sep and tones else []
        if not name.strip() or len(hz) not in (1, 2):
            raise ValueError
        if len(hz) == 2:
            return Page(name.strip(), hz[0], hz[1])
        return Page.long_tone(name.strip(), hz[0])
    except ValueError as exc:
        detail = f": {exc}" if str(exc) else ""
        raise ValueError(f"--page {text!r}: give NAME=A/B or NAME=A in Hz{detail}") from None


def decode_file(
    path: str | Path, pages: list[Page] | None = None
) -> tuple[list[tuple[int, Event]], list[str]]:
    """Every event in the file, as (channel, event) in time order, and notes on the file;
    ValueError naming the file when it cannot be read."""
    try:
        info = soundfile.info(str(path))
    except (RuntimeError, OSError) as exc:  # soundfile raises LibsndfileError(RuntimeError)
        raise ValueError(f"{path}: not an audio file soundfile can read ({exc})") from None
    rate, channels = int(info.samplerate), int(info.channels)
    if rate < MIN_RATE:
        raise ValueError(f"{path}: {rate} Hz is too low for signalling ({MIN_RATE} Hz at least)")
    every = list(selcall.STANDARDS)
    decoders = [
        _Decoders(rate, standards=every, pages=pages, mdc1200=True) for _ in range(channels)
    ]
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
    if isinstance(event, PageDetected):
        return {"type": "page.detected", "channel": channel, **asdict(event)}
    if isinstance(event, MdcPacket):
        return {
            "type": "emergency.raised" if event.emergency else "unit.id",
            "channel": channel,
            "start": event.start,
            "end": event.end,
            "unit": event.unit,
            "kind": event.kind,
            "op": event.op,
            "arg": event.arg,
            "target": event.target,
            "repaired_bits": event.repaired_bits,
        }
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
    if isinstance(event, MdcPacket):
        to = f" to {event.target}" if event.target else ""
        shout = "EMERGENCY " if event.emergency else ""
        return (
            f"{span}  {where}MDC-1200 {shout}unit {event.unit} {event.kind}{to} "
            f"(op {event.op:02X} arg {event.arg:02X})"
        )
    if isinstance(event, PageDetected):
        if event.b_hz is None:
            return (
                f"{span}  {where}page {event.name}: long tone {event.a_hz:g} Hz ({event.a_s:g} s)"
            )
        return (
            f"{span}  {where}page {event.name}: {event.a_hz:g} Hz {event.a_s:g} s, "
            f"{event.b_hz:g} Hz {event.b_s:g} s"
        )
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
    a_s: float | None = None,
    b_s: float | None = None,
) -> float:
    """Write `what` (the digits) as a 16-bit mono WAV file; its length in seconds.

    DTMF: `on_ms` tones and `off_ms` pauses. Selcall: `standard`'s tone length unless
    `on_ms` is given, `first_ms` for a stretched first tone. Page: `what` is A/B or A (a
    long tone) in Hz, `a_s` and `b_s` the lengths (1 and 3 s; a long tone 8 s). MDC-1200:
    `what` as `parse_packet` reads it."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown signalling format {fmt!r} (known: {', '.join(FORMATS)})")
    if (on_ms is not None and not 20.0 <= on_ms <= 2000.0) or not 0.0 <= off_ms <= 10000.0:
        raise ValueError("--on-ms must be 20-2000 and --off-ms 0-10000")
    if not -60.0 <= level_dbfs <= -6.5:
        raise ValueError("--level must be -60 to -6.5 dBFS (each tone; a DTMF pair peaks 6 dB up)")
    if fmt == "page":
        try:
            hz = [float(t) for t in what.split("/")]
        except ValueError:
            hz = []
        if len(hz) not in (1, 2):
            raise ValueError(f"page tones {what!r}: give A/B or A (a long tone), in Hz")
        b_hz = hz[1] if len(hz) == 2 else None
        a_len = a_s if a_s is not None else default_a_s(b_hz)
        audio = page_signal(
            hz[0],
            b_hz,
            samplerate,
            a_s=a_len,
            b_s=3.0 if b_s is None else b_s,
            level_dbfs=level_dbfs,
        )
        write_wav16(path, to_pcm16(audio), samplerate)
        return len(audio) / samplerate
    if fmt == "mdc1200":
        op, arg, unit, extra = parse_packet(what)
        audio = mdc_signal(op, arg, unit, samplerate, extra=extra, level_dbfs=level_dbfs)
        write_wav16(path, to_pcm16(audio), samplerate)
        return len(audio) / samplerate
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
