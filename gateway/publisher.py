"""What monitors publish through: events (durable, via the outbox) and retained state.

Monitors never talk to MQTT directly; they call `emit` and `set_state`, which work the same
whether or not the broker is reachable right now.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from gateway.events import (
    EVENT_TYPES,
    Event,
    EventData,
    Payload,
    SourceKind,
    new_event_id,
    utc_timestamp,
)
from gateway.outbox import Outbox

log = logging.getLogger(__name__)

_SCOPE_TOPIC: dict[SourceKind, str] = {
    "channel": "channels",
    "alarm": "alarms",
    "module": "modules",
}


class Publisher:
    def __init__(self, *, prefix: str, gateway_id: str, outbox: Outbox) -> None:
        self.prefix = prefix
        self.gateway_id = gateway_id
        self._outbox = outbox
        self._retained: dict[str, bytes] = {}
        self._dirty: dict[str, None] = {}  # insertion-ordered set
        self._state_changed = asyncio.Event()
        self.event_listeners: list[Callable[[Event], None]] = []
        """Called for every event after it is queued (metrics, the local console view)."""
        self.state_listeners: list[Callable[[str, Payload], None]] = []
        """Called with (topic, payload) whenever a retained state changes (metrics)."""

    @property
    def outbox(self) -> Outbox:
        return self._outbox

    def topic_for(self, source: SourceKind, source_id: str, leaf: str) -> str:
        if source == "gateway":
            return f"{self.prefix}/{leaf}"
        return f"{self.prefix}/{_SCOPE_TOPIC[source]}/{source_id}/{leaf}"

    def emit(
        self,
        source: SourceKind,
        source_id: str,
        event_type: str,
        data: EventData,
        *,
        keep: bool = False,
        ts: float | None = None,
    ) -> int:
        """Queue an event durably. `keep` events survive an outbox overflow (alarms, faults).

        Returns the event's sequence number.
        """
        expected = EVENT_TYPES.get(event_type)
        if expected is None or not isinstance(data, expected):
            # A programming error: catch it here rather than ship a payload off-contract.
            raise TypeError(f"event {event_type!r} needs data of type {expected}")
        stamp = utc_timestamp(ts)
        event_id = new_event_id()
        body = data.model_dump(mode="json")
        built: list[Event] = []

        def build(seq: int) -> bytes:
            event = Event(
                event_id=event_id,
                seq=seq,
                ts=stamp,
                type=event_type,
                gateway=self.gateway_id,
                source=source,
                source_id=source_id,
                data=body,
            )
            built.append(event)
            return event.model_dump_json().encode()

        seq = self._outbox.append(self.topic_for(source, source_id, "event"), build, keep=keep)
        for listener in self.event_listeners:
            try:
                listener(built[0])
            except Exception:
                log.exception("event listener failed")
        return seq

    def set_state(self, topic: str, payload: Payload) -> None:
        """Set a retained state topic; only the latest value is published."""
        data = payload.model_dump_json().encode()
        if self._retained.get(topic) == data:
            return
        self._retained[topic] = data
        self._dirty[topic] = None
        self._state_changed.set()
        for listener in self.state_listeners:
            try:
                listener(topic, payload)
            except Exception:
                log.exception("state listener failed")

    def retained_snapshot(self) -> dict[str, bytes]:
        return dict(self._retained)

    def mark_all_dirty(self) -> None:
        """After (re)connecting or on `rebirth`: republish every retained state."""
        for topic in self._retained:
            self._dirty[topic] = None
        self._state_changed.set()

    async def take_dirty(self) -> list[tuple[str, bytes]]:
        """Wait for changed states and take them (latest values, in first-changed order)."""
        while not self._dirty:
            self._state_changed.clear()
            await self._state_changed.wait()
        topics = list(self._dirty)
        self._dirty.clear()
        return [(t, self._retained[t]) for t in topics]

    def requeue(self, topics: list[str]) -> None:
        """A publish of these states failed: send them again after reconnecting."""
        for topic in topics:
            self._dirty[topic] = None
        self._state_changed.set()
