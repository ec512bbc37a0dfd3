"""Event model and every MQTT payload schema.

These pydantic models are the contract: the daemon serialises through them and
docs/asyncapi.yaml is generated from them, so the two cannot drift apart.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.errors import ErrorCode

SourceKind = Literal["gateway", "channel", "alarm", "module"]


def utc_timestamp(epoch: float | None = None) -> str:
    """RFC 3339 UTC with milliseconds: sortable, unambiguous, what CAD databases parse."""
    moment = datetime.fromtimestamp(time.time() if epoch is None else epoch, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_timestamp(text: str, *, naive_is_local: bool = False) -> float:
    """RFC 3339 (ISO 8601 with a zone) to epoch seconds; ValueError saying what is wrong.

    A time without a zone is refused, unless `naive_is_local` (a technician at the console
    typing "02:10" means the console's local time; a CAD system must say)."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an RFC 3339 time: {text[:40]!r}") from None
    if moment.tzinfo is None and not naive_is_local:
        raise ValueError(f"time without a zone (add Z or +hh:mm): {text[:40]!r}")
    try:
        return (moment if moment.tzinfo else moment.astimezone()).timestamp()
    except (OverflowError, OSError):  # the local zone's rules at the ends of the calendar
        raise ValueError(f"time out of range: {text[:40]!r}") from None


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EventData(Payload):
    """Base of every event's `data`; one subclass per event type."""


class PttData(EventData):
    requested_by: str | None = Field(default=None, description="Who asked: a transaction or client")

    @field_validator("requested_by")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        # Requester data in a durable event: it must serialise whatever the requester sent.
        return None if value is None else value.encode("utf-8", "replace").decode("utf-8")[:128]

    reason: str = Field(
        default="request",
        description="request, lease_expired, timeout, stop, device_lost, device_opened, "
        "readback, or restart (the last run stopped with this radio keyed; this run unkeyed it)",
    )


class CosData(EventData):
    pass


class FaultData(EventData):
    fault: str = Field(description="Fault code, e.g. stuck_ptt, cos_stuck, cos_flapping")
    message: str = Field(description="One line a technician can act on")


class GatewayStartedData(EventData):
    version: str = Field(description="The consolegw version now running")
    outbox_depth: int = Field(description="Events from before this start still to be sent")


class UncleanStopData(EventData):
    previous_session: int = Field(description="The MQTT session of the run that died")
    last_seq: int = Field(description="The last event seq that run committed")
    previous_pid: int | None = Field(default=None, description="The process id of that run")
    previous_start: str | None = Field(default=None, description="When that run started")
    left_keyed: list[str] = Field(
        description="Channels that run left keyed; each gets a ptt.off (reason restart) "
        "once this run has unkeyed it"
    )


class OutboxData(EventData):
    depth: int = Field(description="Events committed but not yet acknowledged by the broker")
    max_events: int = Field(description="The outbox bound (outbox.max_events)")
    dropped: int = Field(
        description="Droppable events (not alarm, module, fault, PTT or TTY) the outbox "
        "dropped because it was full, in total: kept in the outbox file across restarts"
    )


EVENT_TYPES: dict[str, type[EventData]] = {
    "gateway.started": GatewayStartedData,
    "gateway.unclean_stop": UncleanStopData,
    "outbox.full": OutboxData,
    "outbox.ok": OutboxData,
    "ptt.on": PttData,
    "ptt.off": PttData,
    "cos.on": CosData,
    "cos.off": CosData,
    "fault.raised": FaultData,
    "fault.cleared": FaultData,
}
"""Every event type the daemon publishes, with the schema of its `data`."""


def register_event_type(name: str, data_model: type[EventData]) -> None:
    """Let a subsystem (audio, tty, alarms) declare its event types next to its code."""
    existing = EVENT_TYPES.get(name)
    if existing is not None and existing is not data_model:
        raise ValueError(f"event type {name!r} already registered with {existing.__name__}")
    EVENT_TYPES[name] = data_model


class Event(Payload):
    """An event as published on `<prefix>/<source>s/<id>/event` (or `<prefix>/event`)."""

    event_id: str = Field(description="Unique id; use it to drop the duplicates QoS 1 allows")
    seq: int = Field(
        description="Increases by one per event, per gateway, and continues across restarts. "
        "A gap means the outbox was full (outbox.max_events) and dropped its oldest "
        "undelivered droppable events (cos.*, recall.saved, gateway.started; alarm, module, "
        "fault, PTT, TTY, outbox and unclean-stop events are never dropped): reported by the "
        "outbox.full and outbox.ok events and counted in the gateway state's `outbox_dropped`"
    )
    ts: str = Field(description="When it happened, RFC 3339 UTC")
    type: str = Field(description="Event type, e.g. ptt.on, cos.off, fault.raised")
    gateway: str = Field(description="The gateway id (gateway.id)")
    source: SourceKind = Field(
        description="What the event is about: gateway, channel, alarm or module"
    )
    source_id: str = Field(description="Channel, alarm or module id; the gateway id for gateway")
    data: dict[str, Any] = Field(
        description="Facts of the event; its schema depends on `type` (see below)"
    )


def new_event_id() -> str:
    return uuid.uuid4().hex


class StatusPayload(Payload):
    """`<prefix>/status`, retained; the Last Will carries `offline` with the same session."""

    state: Literal["online", "offline"] = Field(
        description="online once connected; offline on a clean stop or as the Last Will"
    )
    session: int = Field(description="Increments on every connection of this gateway")
    ts: str = Field(description="When it was published (for the Last Will: when it was set)")
    version: str | None = Field(default=None, description="The consolegw version; with online only")


class ResponsePayload(Payload):
    """`.../response/<cmd>`: the answer to every request, good or bad, exactly once."""

    status: Literal["ok", "error"] = Field(
        description="ok: the command acted, `data` holds its answer; error: see `code`"
    )
    transaction: str | int | None = Field(
        default=None,
        description="Echo of the request's `transaction` (null when it was not a string of at "
        "most 128 characters or an integer, which is refused as bad_request)",
    )
    data: dict[str, Any] = Field(
        default_factory=dict,
        description="With status ok: the command's answer (see the response channel of each "
        "command for its schema); empty with status error",
    )
    code: ErrorCode | None = Field(
        default=None,
        description="With status error: bad_request (malformed, nothing acted), "
        "unknown_command, unknown_target, refused (valid but not done now: busy, time-out, "
        "offline) or internal_error (a gateway bug; see its log)",
    )
    error: str | None = Field(default=None, description="`<code>: <what was wrong>`")


class LastUnit(Payload):
    """A unit ID heard on a channel (MDC-1200)."""

    unit: str = Field(description="The unit ID, 4 hex digits as radios show it")
    kind: str = Field(description="What the packet was: ptt_id, post_id, emergency, ...")
    ts: str = Field(description="When it was heard, RFC 3339 UTC")


class ChannelState(Payload):
    """`<prefix>/channels/<id>/state`, retained full snapshot."""

    channel: str = Field(description="The channel id")
    name: str = Field(description="The channel's display name (config `name`)")
    state: Literal["idle", "receiving", "transmitting", "both", "fault"] = Field(
        description="idle, receiving (carrier), transmitting (keyed), both, or fault (a fault "
        "is active)"
    )
    ptt: bool = Field(description="Keyed, as read back from the hardware where it can be")
    ptt_readback: bool = Field(description="True when `ptt` was read back, not just commanded")
    cos: bool | None = Field(
        description="Carrier present (debounced). null when it is not known: with the fault "
        "`cos_unknown` while the radio interface has not reported its COS line (an RFC 2217 "
        "server that sent no modem state yet), or without a fault on a channel that has no "
        "COS line or no radio, and while the interface is offline (`device_lost`)"
    )
    device: Literal["online", "offline", "none"] = Field(
        description="The radio interface: online (open), offline (lost, reopening), none "
        "(the channel has no radio configured)"
    )
    faults: list[str] = Field(
        description="Fault codes active on the channel, e.g. stuck_ptt, cos_stuck, device_lost"
    )
    tx_remaining_s: float | None = Field(
        default=None, description="Seconds until the time-out timer unkeys, while keyed"
    )
    lost_since: str | None = Field(
        default=None, description="While the radio interface is lost: since when"
    )
    attempts: int = Field(default=0, description="Failed reopen attempts since it was lost")
    last_error: str | None = Field(
        default=None, description="While lost: why the last attempt failed"
    )
    last_unit: LastUnit | None = Field(
        default=None,
        description="The last radio that identified itself (MDC-1200), since the daemon "
        "started; null before any",
    )
    ts: str = Field(description="When this snapshot was taken, RFC 3339 UTC")


class GatewayState(Payload):
    """`<prefix>/state`, retained: the gateway's own health."""

    gateway: str = Field(description="The gateway id (gateway.id)")
    version: str = Field(description="The consolegw version running")
    session: int = Field(description="The current MQTT session, as in `<prefix>/status`")
    outbox_depth: int = Field(description="Events committed but not yet acknowledged by the broker")
    outbox_full: bool = Field(
        description="True while the outbox holds outbox.max_events or more: droppable events "
        "are being dropped (see Event.seq)"
    )
    outbox_dropped: int = Field(
        description="Droppable events (not alarm, module, fault, PTT or TTY) the outbox "
        "dropped because it was full, in total: kept in the outbox file across restarts"
    )
    channels: list[str] = Field(description="The configured channel ids, sorted")
    standby: bool = Field(
        default=False,
        description="True while the console is installed but not yet configured "
        "(gateway.standby): it runs no channel and keys nothing",
    )
    started: str | None = Field(
        default=None,
        description="When the daemon process started, RFC 3339 UTC: its uptime, which "
        "`session` (counting connections) does not give. null from a gateway that does not "
        "say",
    )
    ts: str = Field(description="When this state was taken, RFC 3339 UTC")
