"""Console audio: capture every card, meter every channel, find broken audio, keep a recall.

One task per capture device reads blocks, measures all its columns at once (gateway.levels)
and hands each channel its column. Per channel: activity with attack and hang times over a
tracked noise floor, and the faults a radio technician cares about:

- dead_audio: below dead_below_dbfs for dead_after_s (a live line carries at least noise);
- clipping: samples at full scale in two seconds running;
- hum: 50/60 Hz (and harmonics) above hum_dbfs for three seconds;
- cos_no_audio / audio_no_cos: carrier without audio, or audio without carrier;
- audio_device_lost: the card vanished (reopened with backoff, cleared on return).

Faults go to the channel's own list, so one channel state shows radio and audio together.
The last recall_s seconds stay in a ring buffer; `recall` writes them to a WAV, and every
fault raised on the channel writes one automatically.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import wave
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from drivers.audio import AudioCapture, AudioPlayback
from drivers.backoff import Backoff
from drivers.errors import DeviceLost, DeviceUnavailable
from gateway.channel import ChannelMonitor, Radios
from gateway.commands import CommandRouter, Request, RequestContext
from gateway.config import AudioDeviceSection, ChannelAudioSection
from gateway.errors import CommandError
from gateway.events import EventData, Payload, register_event_type, utc_timestamp
from gateway.levels import FLOOR_DBFS, FRAME_S, CardAnalyzer, Chunk, to_dbfs
from gateway.publisher import Publisher
from gateway.startup import startup_open
from gateway.subsystem import Subsystem, SubsystemContext, Task

log = logging.getLogger(__name__)

_FLOOR_RISE_DB_S = 1.0  # how fast the noise floor follows a louder background
_CLIP_SECONDS = 2
_HUM_SECONDS = 3
_CLEAR_AFTER_S = 3.0
_RECALL_KEEP = 100


class RecallData(EventData):
    path: str = Field(description="Where the WAV was written, on the gateway host")
    seconds: float = Field(description="Length of the recording, in seconds")
    reason: str = Field(description="request, or the fault code that wrote it")


register_event_type("recall.saved", RecallData)


class AudioLevels(Payload):
    """`<prefix>/channels/<id>/audio`, retained, about once a second and on activity change."""

    channel: str = Field(description="The channel id")
    rms_dbfs: float = Field(description="RMS over the last second")
    peak_dbfs: float = Field(description="Highest sample over the last second")
    floor_dbfs: float = Field(description="Tracked noise floor")
    dc_offset: float = Field(description="Mean sample value over the last second (full scale 1)")
    hum_dbfs: float | None = Field(description="50/60 Hz hum with harmonics, last second")
    clipped: int = Field(description="Samples at full scale in the last second")
    active: bool = Field(description="Audio activity (VOX) with attack and hang times")
    overflows: int = Field(
        default=0, description="Blocks lost on this channel's card (input overflow, slow reader)"
    )
    device: Literal["online", "offline"] = Field(
        description="The channel's capture device: online (audio flowing) or offline"
    )
    ts: str = Field(description="When these levels were measured, RFC 3339 UTC")


class RecallRequest(Request):
    seconds: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="How much of the latest audio to write; less if less has been recorded",
    )


class RecallResponse(Payload):
    """`data` of the answer to `recall`: the WAV written (its JSON sidecar holds the same
    facts, without `path`)."""

    channel: str = Field(description="The channel id")
    start_ts: str = Field(description="Wall-clock time of the first sample, RFC 3339 UTC")
    seconds: float = Field(description="Length of the recording written, in seconds")
    samplerate: int = Field(description="Sample rate of the WAV, Hz (16-bit mono PCM)")
    reason: str = Field(description="request, or the fault code that triggered the recall")
    path: str = Field(description="Where the WAV was written, on the gateway host")


def to_pcm16(samples: NDArray[np.floating[Any]]) -> NDArray[np.int16]:
    """Float samples (full scale 1.0) as 16-bit PCM, rounded and clipped."""
    pcm: NDArray[np.int16] = np.clip(np.rint(samples * 32767.0), -32768, 32767).astype(np.int16)
    return pcm


def write_wav16(path: Path | str, pcm: NDArray[np.int16], samplerate: int) -> None:
    """A mono 16-bit WAV file."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(samplerate)
        out.writeframes(pcm.astype("<i2").tobytes())


class RingBuffer:
    """The last N samples of one channel, as int16 (half the memory of float32)."""

    def __init__(self, *, samples: int) -> None:
        self._buf = np.zeros(samples, dtype=np.int16)
        # Touched now, not as audio first fills it: the daemon's memory is what it will be
        # for months from the first minute (and a console short of it fails at start).
        self._buf.fill(0)
        self._pos = 0
        self._filled = 0

    @property
    def filled(self) -> int:
        return self._filled

    def append(self, samples: NDArray[np.float32]) -> None:
        data = to_pcm16(samples)
        n = len(data)
        size = len(self._buf)
        if n >= size:
            self._buf[:] = data[-size:]
            self._pos, self._filled = 0, size
            return
        end = self._pos + n
        if end <= size:
            self._buf[self._pos : end] = data
        else:
            first = size - self._pos
            self._buf[self._pos :] = data[:first]
            self._buf[: n - first] = data[first:]
        self._pos = end % size
        self._filled = min(size, self._filled + n)

    def last(self, samples: int) -> NDArray[np.int16]:
        samples = min(samples, self._filled)
        start = (self._pos - samples) % len(self._buf)
        if start + samples <= len(self._buf):
            return self._buf[start : start + samples].copy()
        return np.concatenate((self._buf[start:], self._buf[: self._pos]))


class BlockListener(Protocol):
    def __call__(self, samples: NDArray[np.float32], end_wall: float, *, active: bool) -> None: ...


class ChannelAudio:
    """Activity, faults, levels and recall for one channel's audio."""

    def __init__(
        self,
        *,
        channel_id: str,
        config: ChannelAudioSection,
        samplerate: int,
        monitor: ChannelMonitor,
        publisher: Publisher,
        recall_dir: Path,
        clock: Any = time.monotonic,
    ) -> None:
        self.channel_id = channel_id
        self.column = config.column
        self._cfg = config
        self._sr = samplerate
        self.samplerate = samplerate
        self._monitor = monitor
        self._pub = publisher
        self._recall_dir = recall_dir
        self._clock = clock
        self.ring = RingBuffer(samples=int(config.recall_s * samplerate))
        self._ring_end_wall = 0.0  # wall-clock time of the newest sample in the ring
        self.active = False
        self._above_s = 0.0
        self._below_s = 0.0
        self._floor: float | None = None
        self._dead_s = 0.0
        self._alive_s = 0.0
        self._second: list[Chunk] = []  # chunks of the second being judged for clipping
        self._recent: deque[Chunk] = deque(maxlen=10)  # the last second, for the levels
        self._clip_seconds = 0
        self._clean_clip_s = 0.0
        self._hum_dbfs: float | None = None
        self._hum_seconds = 0
        self._clean_hum_s = 0.0
        self._cos_quiet_s = 0.0
        self._vox_no_cos_s = 0.0
        self._online = False
        self.overflows = 0
        self._last_publish = 0.0
        self._state_topic = publisher.topic_for("channel", channel_id, "audio")
        self.sample_listeners: list[Callable[[NDArray[np.float32]], None]] = []
        """Called with every block of this channel's samples, in order (the TTY decoder)."""
        self.block_listeners: list[BlockListener] = []
        """Called with every block, the wall-clock time of its last sample and whether the
        level meter hears activity (the recorder)."""
        monitor.fault_listeners.append(self._on_fault)

    # -- device --------------------------------------------------------------------------

    def device_up(self) -> None:
        self._online = True
        self.clear("audio_device_lost", "audio device back")
        self._publish()

    def device_down(self, message: str) -> None:
        self._online = False
        self.active = False
        self.raise_fault("audio_device_lost", message)
        self._publish()

    def raise_fault(self, code: str, message: str) -> None:
        self._monitor.raise_fault(code, message)

    def clear(self, code: str, message: str) -> None:
        self._monitor.clear_fault(code, message)

    # -- samples -------------------------------------------------------------------------

    def add_samples(self, samples: NDArray[np.float32], end_wall: float) -> None:
        """Raw audio for the recall buffer; `end_wall` is when its last sample was heard."""
        self.ring.append(samples)
        self._ring_end_wall = end_wall
        for listener in self.sample_listeners:
            listener(samples)
        for block_listener in self.block_listeners:
            block_listener(samples, end_wall, active=self.active)

    def add_gap(self, frames: int) -> None:
        """Blocks were lost: keep the recall's timeline right with silence in their place."""
        self.ring.append(np.zeros(min(frames, self._sr), dtype=np.float32))

    def on_chunk(self, chunk: Chunk) -> None:
        self._recent.append(chunk)
        for db in chunk.frame_dbfs[:, self.column]:
            self._on_frame(float(db))
        self._second.append(chunk)
        if len(self._second) * chunk.frames >= self._sr:
            self._on_second()
            self._second = []
        if self._clock() - self._last_publish >= 1.0:
            self._publish()

    def on_hum(self, hum_dbfs: float) -> None:
        self._hum_dbfs = hum_dbfs
        if hum_dbfs >= self._cfg.hum_dbfs:
            self._hum_seconds += 1
            self._clean_hum_s = 0.0
            if self._hum_seconds >= _HUM_SECONDS:
                self.raise_fault(
                    "hum",
                    f"50/60 Hz hum at {hum_dbfs:.0f} dBFS: check grounding and shielding "
                    "of the audio leads (ground loop)",
                )
        else:
            self._hum_seconds = 0
            self._clean_hum_s += 1.0
            if self._clean_hum_s >= _CLEAR_AFTER_S:
                self.clear("hum", "hum gone")

    def _on_frame(self, db: float) -> None:
        cfg = self._cfg
        if self._floor is None:
            self._floor = db
        threshold = max(self._floor + cfg.activity_margin_db, cfg.activity_min_dbfs)
        if db > threshold:
            self._above_s += FRAME_S
            self._below_s = 0.0
        else:
            self._below_s += FRAME_S
            self._above_s = 0.0
        was_active = self.active
        if not self.active and self._above_s >= cfg.attack_ms / 1000 - 1e-9:
            self.active = True
        elif self.active and self._below_s >= cfg.hang_ms / 1000 - 1e-9:
            self.active = False
        # The floor drops at once to a quieter frame; it rises slowly, and not while active.
        if db < self._floor:
            self._floor = db
        elif not self.active:
            self._floor = min(db, self._floor + _FLOOR_RISE_DB_S * FRAME_S)
        self._check_dead(db)
        self._check_cos(FRAME_S)
        if self.active != was_active:
            self._publish()

    def _check_dead(self, db: float) -> None:
        if db < self._cfg.dead_below_dbfs:
            self._dead_s += FRAME_S
            self._alive_s = 0.0
            if self._dead_s >= self._cfg.dead_after_s:
                self.raise_fault(
                    "dead_audio",
                    f"no audio at all (below {self._cfg.dead_below_dbfs:g} dBFS) for "
                    f"{self._cfg.dead_after_s:g} s: check the receiver's audio output, the "
                    "cable and the sound card input",
                )
        else:
            self._alive_s += FRAME_S
            self._dead_s = 0.0
            if self._alive_s >= 1.0:
                self.clear("dead_audio", "audio present again")

    def _check_cos(self, dt: float) -> None:
        if not self._monitor.has_cos:
            return
        limit = self._cfg.cos_audio_mismatch_s
        cos = self._monitor.cos
        self._cos_quiet_s = self._cos_quiet_s + dt if cos and not self.active else 0.0
        self._vox_no_cos_s = self._vox_no_cos_s + dt if self.active and not cos else 0.0
        if self._cos_quiet_s >= limit:
            self.raise_fault(
                "cos_no_audio",
                f"carrier present for {limit:g} s with no audio: check the receiver's audio "
                "output, its level and the audio cable",
            )
        elif not cos or self.active:
            self.clear("cos_no_audio", "audio follows the carrier again")
        if self._vox_no_cos_s >= limit:
            self.raise_fault(
                "audio_no_cos",
                f"audio for {limit:g} s without carrier: COS not wired, wrong COS polarity, or "
                "audio from another source",
            )
        elif cos or not self.active:
            self.clear("audio_no_cos", "audio and carrier agree again")

    def _on_second(self) -> None:
        column = self.column
        clipped = int(sum(int(c.clipped[column]) for c in self._second))
        frames = sum(c.frames for c in self._second)
        if clipped >= self._cfg.clip_fraction * frames:
            self._clip_seconds += 1
            self._clean_clip_s = 0.0
            if self._clip_seconds >= _CLIP_SECONDS:
                self.raise_fault(
                    "clipping",
                    f"{clipped} samples at full scale in one second: lower the input gain or "
                    "the receiver's audio level",
                )
        else:
            self._clip_seconds = 0
            self._clean_clip_s += 1.0
            if self._clean_clip_s >= _CLEAR_AFTER_S:
                self.clear("clipping", "no more clipping")

    def levels(self) -> AudioLevels:
        chunks = list(self._recent)
        col = self.column
        if chunks:
            frames = sum(c.frames for c in chunks)
            rms = float(to_dbfs(np.sqrt(np.array([sum(c.sumsq[col] for c in chunks) / frames])))[0])
            peak = float(to_dbfs(np.array([max(c.peak[col] for c in chunks)]))[0])
            dc = float(sum(c.total[col] for c in chunks) / frames)
        else:
            rms = peak = FLOOR_DBFS
            dc = 0.0
        return AudioLevels(
            channel=self.channel_id,
            rms_dbfs=round(rms, 2),
            peak_dbfs=round(peak, 2),
            floor_dbfs=round(self._floor if self._floor is not None else FLOOR_DBFS, 2),
            dc_offset=round(dc, 5),
            hum_dbfs=None if self._hum_dbfs is None else round(self._hum_dbfs, 2),
            clipped=int(sum(int(c.clipped[col]) for c in chunks)),
            active=self.active,
            overflows=self.overflows,
            device="online" if self._online else "offline",
            ts=utc_timestamp(),
        )

    def _publish(self) -> None:
        self._last_publish = self._clock()
        self._pub.set_state(self._state_topic, self.levels())

    # -- recall --------------------------------------------------------------------------

    def _on_fault(self, code: str, message: str) -> None:
        if self._cfg.recall_on_fault_s > 0 and self.ring.filled:
            try:
                self.recall(self._cfg.recall_on_fault_s, reason=code)
            except OSError as exc:
                log.error("channel %s: cannot write the fault recall: %s", self.channel_id, exc)

    def recall(self, seconds: float, *, reason: str = "request") -> RecallResponse:
        """Write the last `seconds` of audio to a WAV (and a JSON sidecar); returns its facts."""
        samples = self.ring.last(int(seconds * self._sr))
        if not len(samples):
            raise CommandError(f"channel {self.channel_id}: no audio recorded yet")
        length = len(samples) / self._sr
        start_wall = self._ring_end_wall - length
        self._recall_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(start_wall))
        millis = int((start_wall % 1) * 1000)
        path = self._recall_dir / f"{self.channel_id}-{stamp}{millis:03d}Z-{reason}.wav"
        write_wav16(path, samples, self._sr)
        facts = RecallResponse(
            channel=self.channel_id,
            start_ts=utc_timestamp(start_wall),
            seconds=round(length, 3),
            samplerate=self._sr,
            reason=reason,
            path=str(path),
        )
        sidecar = facts.model_dump(mode="json", exclude={"path"})
        path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2))
        _prune(self._recall_dir, self.channel_id)
        log.info("channel %s: recall of %.1f s written to %s", self.channel_id, length, path)
        data = RecallData(path=str(path), seconds=round(length, 3), reason=reason)
        self._pub.emit("channel", self.channel_id, "recall.saved", data)
        return facts


def capture_for(config: AudioDeviceSection, *, queue_seconds: float = 2.0) -> AudioCapture:
    """A (not yet open) capture stream on a configured audio device."""
    return AudioCapture(
        device=config.device,
        hostapi=config.hostapi,
        samplerate=config.samplerate,
        channels=config.channels,
        blocksize=config.blocksize,
        latency=config.latency_s,
        queue_seconds=queue_seconds,
    )


def playback_for(config: AudioDeviceSection) -> AudioPlayback:
    """A (not yet open) playback stream on a configured audio device."""
    return AudioPlayback(
        device=config.device,
        hostapi=config.hostapi,
        samplerate=config.samplerate,
        channels=config.channels,
        latency=config.latency_s,
    )


def _prune(directory: Path, channel_id: str) -> None:
    """Keep the newest recalls of a channel; the disk of a console PC is not a logger."""
    files = sorted(directory.glob(f"{channel_id}-*.wav"), key=lambda p: p.stat().st_mtime)
    for old in files[:-_RECALL_KEEP]:
        with contextlib.suppress(OSError):
            old.unlink()
            old.with_suffix(".json").unlink()


class AudioCard:
    """One capture device: reads it, measures all its columns, feeds their channels."""

    def __init__(
        self, *, device_id: str, config: AudioDeviceSection, channels: list[ChannelAudio]
    ) -> None:
        self.device_id = device_id
        self._cfg = config
        self.channels = channels
        self._lost_logged = -60.0

    async def run(self) -> None:
        backoff = Backoff(0.5, 5.0)
        lost_logged = False
        while True:
            capture = capture_for(self._cfg)
            try:
                await capture.open()
            except DeviceUnavailable as exc:
                if not lost_logged:
                    log.warning("audio device %s unavailable: %s", self.device_id, exc)
                    lost_logged = True
                for channel in self.channels:
                    channel.device_down(f"audio device {self.device_id} unavailable: {exc}")
                await backoff.sleep()
                continue
            backoff.reset()
            lost_logged = False
            log.info(
                "audio device %s open: %s",
                self.device_id,
                capture.description,
                extra=startup_open(f"audio device {self.device_id}", capture.description),
            )
            try:
                for channel in self.channels:
                    channel.device_up()
                await self._read(capture)
            except DeviceLost as exc:
                log.warning("audio device %s lost: %s", self.device_id, exc)
                lost_logged = True
                for channel in self.channels:
                    channel.device_down(f"audio device {self.device_id} lost: {exc}")
            finally:
                await capture.close()

    async def _read(self, capture: AudioCapture) -> None:
        analyzer = CardAnalyzer(samplerate=self._cfg.samplerate, columns=self._cfg.channels)
        expected: int | None = None
        while True:
            block = await capture.read()
            frames = block.frames
            n = frames.shape[0]
            if expected is not None and block.index > expected:
                for channel in self.channels:
                    channel.add_gap(block.index - expected)
            expected = block.index + n
            lost = capture.stats.input_overflows + capture.stats.queue_drops
            if lost != self.channels[0].overflows:
                for channel in self.channels:
                    channel.overflows = lost
                if time.monotonic() - self._lost_logged >= 60.0:  # a line a minute at most
                    self._lost_logged = time.monotonic()
                    log.warning("audio device %s: %d blocks lost so far", self.device_id, lost)
            # Wall-clock time of the block's last sample, from its monotonic timestamp.
            end_wall = time.time() - (time.monotonic() - block.timestamp) + n / capture.samplerate
            for channel in self.channels:
                channel.add_samples(frames[:, channel.column], end_wall)
            for chunk in analyzer.feed(frames):
                for channel in self.channels:
                    channel.on_chunk(chunk)
            hum = analyzer.take_hum()
            if hum is not None:
                for channel in self.channels:
                    channel.on_hum(float(hum[channel.column]))


def build_audio(
    *,
    devices: dict[str, AudioDeviceSection],
    channels: dict[str, tuple[ChannelAudioSection, ChannelMonitor]],
    publisher: Publisher,
    recall_dir: Path,
) -> tuple[dict[str, AudioCard], dict[str, ChannelAudio]]:
    audio = {
        channel_id: ChannelAudio(
            channel_id=channel_id,
            config=section,
            samplerate=devices[section.device].samplerate,
            monitor=monitor,
            publisher=publisher,
            recall_dir=recall_dir,
        )
        for channel_id, (section, monitor) in channels.items()
    }
    cards = {
        device_id: AudioCard(
            device_id=device_id,
            config=section,
            channels=[audio[c] for c, (s, _) in channels.items() if s.device == device_id],
        )
        for device_id, section in devices.items()
        if any(s.device == device_id for s, _ in channels.values())
    }
    return cards, audio


def register_audio_commands(router: CommandRouter, audio: dict[str, ChannelAudio]) -> None:
    async def recall(params: RecallRequest, ctx: RequestContext) -> RecallResponse:
        channel = audio.get(ctx.target)
        if channel is None:
            raise CommandError(f"channel {ctx.target} has no audio configured")
        return channel.recall(params.seconds)

    router.register(
        "channels",
        "recall",
        RecallRequest,
        recall,
        response=RecallResponse,
        description="Write the last `seconds` of the channel's audio to a WAV; answers its path.",
    )


class Audio(Subsystem):
    """Audio monitoring: one AudioCard per capture device, one ChannelAudio per channel."""

    name = "audio"

    def __init__(self, cards: dict[str, AudioCard], channels: dict[str, ChannelAudio]) -> None:
        self.cards = cards
        self.channels = channels

    @classmethod
    def build(cls, ctx: SubsystemContext) -> Audio:
        monitors = ctx.get(Radios).channels
        cards, channels = build_audio(
            devices=ctx.config.audio.devices,
            channels={
                channel_id: (section.audio, monitors[channel_id])
                for channel_id, section in ctx.config.channels.items()
                if section.audio is not None
            },
            publisher=ctx.publisher,
            recall_dir=ctx.state_dir / "recall",
        )
        return cls(cards, channels)

    def tasks(self) -> dict[str, Task]:
        return {f"audio {card_id}": card.run for card_id, card in self.cards.items()}

    def register(self, router: CommandRouter) -> None:
        register_audio_commands(router, self.channels)

    def summary(self) -> list[str]:
        return [f"{len(self.cards)} audio devices"]

    def startup_devices(self) -> list[str]:
        return [f"audio device {card_id}" for card_id in self.cards]
