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
    version: str
    outbox_depth: int = Field(description="Events from before this start still to be sent")


class UncleanStopData(EventData):
    previous_session: int = Field(description="The MQTT session of the run that died")
    last_seq: int = Field(description="The last event seq that run committed")
    previous_pid: int | None = None
    previous_start: str | None = Field(default=None, description="When that run started")
    left_keyed: list[str] = Field(
        description="Channels that run left keyed; each gets a ptt.off (reason restart) "
        "once this run has unkeyed it"
    )


class OutboxData(EventData):
    depth: int
    max_events: int
    dropped: int = Field(description="Non-alarm events dropped since the outbox filled")


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
    gateway: str
    source: SourceKind
    source_id: str = Field(description="Channel, alarm or module id; the gateway id for gateway")
    data: dict[str, Any]


def new_event_id() -> str:
    return uuid.uuid4().hex


class StatusPayload(Payload):
    """`<prefix>/status`, retained; the Last Will carries `offline` with the same session."""

    state: Literal["online", "offline"]
    session: int = Field(description="Increments on every connection of this gateway")
    ts: str
    version: str | None = None


class ResponsePayload(Payload):
    """`.../response/<cmd>`: the answer to every request, good or bad, exactly once."""

    status: Literal["ok", "error"]
    transaction: str | int | None = Field(
        default=None,
        description="Echo of the request's `transaction` (null when it was not a string of at "
        "most 128 characters or an integer, which is refused as bad_request)",
    )
    data: dict[str, Any] = Field(default_factory=dict)
    code: ErrorCode | None = Field(
        default=None,
        description="With status error: bad_request (malformed, nothing acted), "
        "unknown_command, unknown_target, refused (valid but not done now: busy, time-out, "
        "offline) or internal_error (a gateway bug; see its log)",
    )
    error: str | None = Field(default=None, description="`<code>: <what was wrong>`")


class ChannelState(Payload):
    """`<prefix>/channels/<id>/state`, retained full snapshot."""

    channel: str
    name: str
    state: Literal["idle", "receiving", "transmitting", "both", "fault"]
    ptt: bool = Field(description="Keyed, as read back from the hardware where it can be")
    ptt_readback: bool = Field(description="True when `ptt` was read back, not just commanded")
    cos: bool | None = Field(
        description="Carrier present (debounced). null when it is not known: with the fault "
        "`cos_unknown` while the radio interface has not reported its COS line (an RFC 2217 "
        "server that sent no modem state yet), or without a fault on a channel that has no "
        "COS line or no radio, and while the interface is offline (`device_lost`)"
    )
    device: Literal["online", "offline", "none"]
    faults: list[str]
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
    ts: str


class GatewayState(Payload):
    """`<prefix>/state`, retained: the gateway's own health."""

    gateway: str
    version: str
    session: int
    outbox_depth: int
    outbox_full: bool
    outbox_dropped: int
    channels: list[str]
    ts: str
