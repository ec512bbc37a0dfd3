"""The logging recorder: every transmission on every audio channel, recorded and indexed.

Per recorded channel a `ChannelSegmenter` cuts the channel's audio into records (received:
COS, or audio activity where the channel has no COS; transmitted: PTT), fed by the channel's
audio blocks and by the events the gateway publishes (cos.*, ptt.*, fault.raised, tty.text);
one `RecordingStore` writes every channel's files and the index from a thread of its own.
CAD gets a `recording.saved` event per record and can search the index
(`request/recordings`) or ask for one record (`request/recording`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import Field

from gateway.audio import Audio, ChannelAudio
from gateway.channel import ChannelMonitor, Radios
from gateway.commands import CommandRouter, Request, RequestContext
from gateway.config import RecorderSection
from gateway.errors import BadRequest, CommandError
from gateway.events import (
    Event,
    EventData,
    Payload,
    register_event_type,
    utc_timestamp,
)
from gateway.recorder.segment import ChannelSegmenter, SegmentConfig
from gateway.recorder.store import Query, Recording, RecordingStore, Saved
from gateway.subsystem import Subsystem, SubsystemContext, Task

log = logging.getLogger(__name__)

_OVERRUN_CLEAR_S = 60.0


class RecordingInfo(Payload):
    """One record of the recorder's index."""

    id: int = Field(description="The record's number in this gateway's index")
    channel: str = Field(description="The channel it was recorded on")
    direction: Literal["rx", "tx"] = Field(
        description="rx: received (carrier, or audio where the channel has no COS); "
        "tx: transmitted (PTT)"
    )
    start_ts: str = Field(description="When it starts (pre-roll included), RFC 3339 UTC")
    end_ts: str | None = Field(description="When it ends (hang time included); null while open")
    duration_s: float = Field(description="Seconds of audio in the file")
    level_dbfs: float | None = Field(description="RMS level of the record, dBFS")
    requested_by: str | None = Field(
        description="tx: the transaction of the PTT request that keyed the radio"
    )
    faults: list[str] = Field(description="Fault codes raised on the channel during the record")
    tty_text: str = Field(description="TTY lines read during the record (a TTY call's transcript)")
    path: str = Field(description="The audio file on the gateway host (Ogg/Opus or FLAC)")
    bytes: int = Field(description="Size of the file")
    sha256: str | None = Field(description="SHA-256 of the file, for the chain of custody")
    status: Literal["recording", "complete", "incomplete"] = Field(
        description="incomplete: cut short by a crash, repaired at the next start (the file "
        "plays up to its last flush)"
    )
    split_from: int | None = Field(
        description="The first part of a transmission split at recorder.max_s"
    )
    dropped_s: float = Field(description="Audio lost because the disk did not keep up, s")
    units: list[str] = Field(
        default_factory=list,
        description="Radios that identified themselves during the record (MDC-1200 unit "
        "IDs, 4 hex digits), in the order first heard",
    )

    @classmethod
    def of(cls, rec: Recording) -> RecordingInfo:
        return cls(
            id=rec.id,
            channel=rec.channel,
            direction=rec.direction,
            start_ts=utc_timestamp(rec.start),
            end_ts=None if rec.end is None else utc_timestamp(rec.end),
            duration_s=rec.duration_s,
            level_dbfs=rec.level_dbfs,
            requested_by=rec.requested_by,
            faults=list(rec.faults),
            tty_text=rec.tty_text,
            path=rec.path,
            bytes=rec.bytes,
            sha256=rec.sha256,
            status=rec.status,
            split_from=rec.split_from,
            dropped_s=rec.dropped_s,
            units=list(rec.units),
        )


class RecordingSavedData(EventData):
    """A record finished: its facts, as the index holds them."""

    recording: RecordingInfo = Field(description="The record")


register_event_type("recording.saved", RecordingSavedData)


class RecordingsRequest(Request):
    """Search the index: every filter optional; newest first."""

    channel: str | None = Field(default=None, max_length=64, description="Only this channel")
    direction: Literal["rx", "tx"] | None = Field(default=None, description="Only rx or tx")
    since: str | None = Field(
        default=None, description="Records that end at or after this time (RFC 3339)"
    )
    until: str | None = Field(default=None, description="Records that start before this time")
    text: str | None = Field(
        default=None,
        max_length=200,
        description="In the TTY transcript, the requester or a fault code (case-insensitive)",
    )
    unit: str | None = Field(
        default=None,
        pattern=r"^[0-9A-Fa-f]{4}$",
        description="Only records during which this unit identified itself (MDC-1200)",
    )
    limit: int = Field(default=100, ge=1, le=1000, description="At most this many records")


class RecordingsResponse(Payload):
    recordings: list[RecordingInfo] = Field(description="The matching records, newest first")


class RecordingRequest(Request):
    id: int = Field(ge=1, le=2**62, description="The record's id")


def _cos_known(monitor: ChannelMonitor) -> Callable[[], bool]:
    return lambda: monitor.has_cos


class Recorder(Subsystem):
    """The recorder of every recorded audio channel."""

    name = "recorder"

    def __init__(
        self,
        *,
        config: RecorderSection,
        folder: Path,
        audio: dict[str, ChannelAudio],
        monitors: dict[str, ChannelMonitor],
        ctx: SubsystemContext,
    ) -> None:
        self._cfg = config
        self._pub = ctx.publisher
        self._monitors = monitors
        self.store = RecordingStore(
            folder=folder,
            audio_format=config.format,
            opus_bitrate=int(config.opus_kbps * 1000),
            flush_s=config.flush_s,
            max_age_days=config.max_age_days,
            quota_bytes=int(config.quota_mb * 1e6),
            low_disk_bytes=int(config.low_disk_mb * 1e6),
            on_saved=self._saved,
            on_low_disk=self._low_disk,
            # A record spans its pre-roll, at most max_s, and its hang time (a minute spare).
            max_record_s=config.pre_roll_s + config.max_s + config.hang_s + 60.0,
        )
        seg = SegmentConfig(pre_roll_s=config.pre_roll_s, hang_s=config.hang_s, max_s=config.max_s)
        self.segmenters: dict[str, ChannelSegmenter] = {}
        for channel_id, channel_audio in audio.items():
            monitor = monitors[channel_id]
            segmenter = ChannelSegmenter(
                channel_id=channel_id,
                samplerate=channel_audio.samplerate,
                store=self.store,
                config=seg,
                has_cos=_cos_known(monitor),
            )
            self.segmenters[channel_id] = segmenter
            channel_audio.block_listeners.append(segmenter.audio)
        self._dropped_seen = 0.0
        self._overrun_at: float | None = None
        ctx.publisher.event_listeners.append(self._on_event)

    @classmethod
    def build(cls, ctx: SubsystemContext) -> Recorder:
        config = ctx.config.recorder
        audio = ctx.get(Audio).channels
        recorded = {}
        for channel_id, channel_audio in audio.items():
            section = ctx.config.channels[channel_id].audio
            if config.enabled and section is not None and section.record:
                recorded[channel_id] = channel_audio
        folder = Path(config.folder) if config.folder else ctx.state_dir / "recordings"
        return cls(
            config=config,
            folder=folder,
            audio=recorded,
            monitors=ctx.get(Radios).channels,
            ctx=ctx,
        )

    # -- lifecycle -------------------------------------------------------------------------

    def tasks(self) -> dict[str, Task]:
        if not self.segmenters:
            return {}
        return {"recorder": self._watch}

    async def _watch(self) -> None:
        """Opens the store (repairing what a crash left) and watches for dropped audio."""
        if not self.store.opened:  # (not again if the supervisor restarts this task)
            loop = asyncio.get_running_loop()

            def call_soon(callback: Callable[[], None]) -> None:
                loop.call_soon_threadsafe(callback)

            await asyncio.to_thread(self.store.open, call_soon)
            for rec in self.store.repaired:
                self._saved(Saved(rec))
        while True:
            await asyncio.sleep(1.0)
            self._check_overrun()

    def _check_overrun(self) -> None:
        now = time.monotonic()
        if self.store.dropped_s > self._dropped_seen:
            lost = self.store.dropped_s - self._dropped_seen
            self._dropped_seen = self.store.dropped_s
            if self._overrun_at is None:
                for monitor in self._recorded_monitors():
                    monitor.raise_fault(
                        "recorder_overrun",
                        f"the recorder's disk does not keep up: {lost:.1f} s of audio dropped "
                        f"({self.store.folder})",
                    )
            self._overrun_at = now
        elif self._overrun_at is not None and now - self._overrun_at >= _OVERRUN_CLEAR_S:
            self._overrun_at = None
            for monitor in self._recorded_monitors():
                monitor.clear_fault(
                    "recorder_overrun",
                    f"no audio dropped for {_OVERRUN_CLEAR_S:.0f} s "
                    f"({self.store.dropped_s:.1f} s in all)",
                )

    def _recorded_monitors(self) -> list[ChannelMonitor]:
        return [self._monitors[c] for c in self.segmenters]

    async def close(self) -> None:
        for segmenter in self.segmenters.values():
            segmenter.close()
        await asyncio.to_thread(self.store.close)

    def summary(self) -> list[str]:
        return [f"{len(self.segmenters)} channels recorded"] if self.segmenters else []

    # -- events in ---------------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        if event.source != "channel":
            return
        segmenter = self.segmenters.get(event.source_id)
        if segmenter is None:
            return
        kind, data = event.type, event.data
        if kind in ("cos.on", "cos.off"):
            segmenter.cos(kind == "cos.on")
        elif kind in ("ptt.on", "ptt.off"):
            by = data.get("requested_by")
            segmenter.ptt(kind == "ptt.on", requested_by=by if isinstance(by, str) else None)
        elif kind == "fault.raised":
            fault = data.get("fault")
            if isinstance(fault, str):
                segmenter.note_fault(fault)
        elif kind == "tty.text" and data.get("line"):
            text = data.get("text")
            if isinstance(text, str) and text:
                segmenter.note_tty(text + "\n")
        elif kind in ("unit.id", "emergency.raised"):  # a radio identified itself
            unit = data.get("unit")
            if isinstance(unit, str) and unit:
                segmenter.note_unit(unit)
        elif kind == "tty.sent":  # the call taker's reply, marked as ours
            text = data.get("text")
            if isinstance(text, str) and text:
                segmenter.note_tty(f"> {text}\n")

    # -- out ---------------------------------------------------------------------------------

    def _saved(self, saved: Saved) -> None:
        rec = saved.recording
        data = RecordingSavedData(recording=RecordingInfo.of(rec))
        self._pub.emit("channel", rec.channel, "recording.saved", data)

    def _low_disk(self, low: bool, message: str) -> None:
        for monitor in self._recorded_monitors():
            if low:
                monitor.raise_fault("recorder_low_disk", message)
            else:
                monitor.clear_fault("recorder_low_disk", message)

    # -- commands ----------------------------------------------------------------------------

    def register(self, router: CommandRouter) -> None:
        router.register(
            "gateway",
            "recordings",
            RecordingsRequest,
            self._recordings,
            response=RecordingsResponse,
            description="Search the recorder's index (channel, direction, since, until, text).",
        )
        router.register(
            "gateway",
            "recording",
            RecordingRequest,
            self._recording,
            response=RecordingInfo,
            description="One record of the recorder's index, by id.",
        )

    async def _recordings(
        self, params: RecordingsRequest, ctx: RequestContext
    ) -> RecordingsResponse:
        if not self.segmenters and not self.store.index_path.exists():
            raise CommandError("the recorder is off on this gateway (recorder.enabled)")
        try:
            query = Query.of_text(
                channel=params.channel,
                direction=params.direction,
                since=params.since,
                until=params.until,
                text=params.text,
                limit=params.limit,
                naive_is_local=False,  # CAD must say which zone
                unit=params.unit,
            )
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        found = await asyncio.to_thread(self.store.query, query)
        return RecordingsResponse(recordings=[RecordingInfo.of(r) for r in found])

    async def _recording(self, params: RecordingRequest, ctx: RequestContext) -> RecordingInfo:
        if not self.store.index_path.exists():
            raise CommandError("the recorder is off on this gateway (recorder.enabled)")
        rec = await asyncio.to_thread(self.store.get, params.id)
        if rec is None:
            raise CommandError(f"no recording {params.id}")
        return RecordingInfo.of(rec)
