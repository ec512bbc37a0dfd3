"""A console as seen from MQTT: the daemon's retained state and its events, nothing else.

`consolegw top` is built on this, so it works from any machine that reaches the broker. The
model (`ConsoleView`) is plain data fed one message at a time; `MqttSession` keeps it fed
over aiomqtt and sends requests, matching each response by its echoed `transaction`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar

import aiomqtt

from drivers.backoff import Backoff
from gateway.config import Config, MqttSection, read_password
from gateway.errors import ConfigError
from gateway.mqtt import build_tls_context
from gateway.tools import ToolError

log = logging.getLogger(__name__)

ChangeKind = Literal["status", "gateway", "channel", "alarm", "module", "event", "response", "link"]

MAX_EVENTS = 500
"""Events kept for the log view; older ones scroll away."""


class BrokerUnreachable(ToolError):
    """The broker could not be reached, or refused the connection or subscription."""


@dataclass(frozen=True, slots=True)
class BrokerTarget:
    """Where the daemon publishes: broker address, credentials and topic prefix."""

    mqtt: MqttSection
    prefix: str
    password: str | None = None
    tls: ssl.SSLContext | None = None

    @classmethod
    def from_config(cls, config: Config, *, broker: str | None = None) -> BrokerTarget:
        """The config's broker (or `broker` instead), with its credentials and TLS."""
        mqtt = config.mqtt
        if broker is not None:
            mqtt = _override_url(mqtt, broker)
        return cls(
            mqtt=mqtt,
            prefix=config.prefix,
            password=read_password(mqtt),
            tls=build_tls_context(mqtt),
        )

    @classmethod
    def from_url(cls, broker: str, *, prefix: str) -> BrokerTarget:
        """A bare broker URL (no credentials): for a technician's laptop on the lab network."""
        mqtt = _override_url(MqttSection(), broker)
        return cls(mqtt=mqtt, prefix=prefix, tls=build_tls_context(mqtt))

    @property
    def description(self) -> str:
        return f"{self.mqtt.url} prefix {self.prefix}"

    def client(self, *, identifier: str, timeout: float = 10.0) -> aiomqtt.Client:
        return aiomqtt.Client(
            self.mqtt.host,
            self.mqtt.port,
            identifier=identifier,
            username=self.mqtt.username,
            password=self.password,
            protocol=aiomqtt.ProtocolVersion.V5,
            keepalive=self.mqtt.keepalive_s,
            tls_context=self.tls,
            tls_insecure=True if self.mqtt.tls and self.mqtt.tls.insecure else None,
            timeout=timeout,
        )


def _override_url(mqtt: MqttSection, url: str) -> MqttSection:
    try:
        return MqttSection.model_validate({**mqtt.model_dump(), "url": url})
    except ValueError as exc:
        first = str(exc).splitlines()[-1].strip()
        raise ConfigError(f"--broker {url}: {first}") from None


@dataclass(frozen=True, slots=True)
class Change:
    """What one message changed in the view: the UI updates just that."""

    kind: ChangeKind
    key: str
    body: dict[str, Any] = field(default_factory=dict)


class ConsoleView:
    """The latest retained state of one gateway, plus a bounded, de-duplicated event log."""

    def __init__(self, *, prefix: str, max_events: int = MAX_EVENTS) -> None:
        if not prefix or prefix.endswith("/"):
            raise ValueError(f"prefix must be a topic prefix without a trailing '/': {prefix!r}")
        self.prefix = prefix
        self.status: dict[str, Any] | None = None
        self.gateway: dict[str, Any] | None = None
        self.channels: dict[str, dict[str, Any]] = {}
        self.extras: dict[str, dict[str, dict[str, Any]]] = {}
        """Channel id -> every other retained leaf of it: "audio" (levels), and whatever the
        daemon adds (e.g. "tty"), so a new topic shows up without a change here."""
        self.alarms: dict[str, dict[str, Any]] = {}
        self.modules: dict[str, dict[str, Any]] = {}
        self.events: deque[dict[str, Any]] = deque(maxlen=max_events)
        self._seen: deque[str] = deque(maxlen=max_events * 4)
        self._seen_set: set[str] = set()
        self.messages = 0

    def apply(self, topic: str, payload: bytes) -> Change | None:
        """Take one message; returns what changed, or None when nothing the view shows did."""
        if not topic.startswith(self.prefix + "/"):
            return None
        parts = topic[len(self.prefix) + 1 :].split("/")
        self.messages += 1
        body = json_object(payload)
        if parts == ["status"]:
            self.status = body
            return Change("status", "status", body or {})
        if parts == ["state"]:
            self.gateway = body
            return Change("gateway", "state", body or {})
        if parts == ["event"] or (len(parts) == 3 and parts[2] == "event"):
            return self._event(body)
        if len(parts) == 4 and parts[2] == "response":
            return Change("response", parts[3], body or {})
        if len(parts) != 3:
            return None
        scope, key, leaf = parts
        if scope == "channels" and leaf != "state":
            leaves = self.extras.setdefault(key, {})
            if body is None:
                leaves.pop(leaf, None)
            else:
                leaves[leaf] = body
            return Change("channel", key, body or {})
        tables: dict[tuple[str, str], tuple[dict[str, dict[str, Any]], ChangeKind]] = {
            ("channels", "state"): (self.channels, "channel"),
            ("alarms", "state"): (self.alarms, "alarm"),
            ("modules", "state"): (self.modules, "module"),
        }
        found = tables.get((scope, leaf))
        if found is None:
            return None
        table, kind = found
        if body is None:
            table.pop(key, None)  # a cleared retained topic: the item is gone
            return Change(kind, key)
        table[key] = body
        return Change(kind, key, body)

    def _event(self, body: dict[str, Any] | None) -> Change | None:
        if body is None or "type" not in body:
            return None
        event_id = str(body.get("event_id", ""))
        if event_id:
            if event_id in self._seen_set:
                return None  # QoS 1 may deliver twice
            if len(self._seen) == self._seen.maxlen:
                self._seen_set.discard(self._seen[0])
            self._seen.append(event_id)
            self._seen_set.add(event_id)
        self.events.append(body)
        return Change("event", str(body.get("source_id", "")), body)

    def snapshot(self) -> dict[str, Any]:
        """Everything known, as one JSON-able document (`top --json`)."""
        return {
            "prefix": self.prefix,
            "status": self.status,
            "gateway": self.gateway,
            "channels": {
                k: {**v, **self.extras.get(k, {})} for k, v in sorted(self.channels.items())
            },
            "alarms": dict(sorted(self.alarms.items())),
            "modules": dict(sorted(self.modules.items())),
            "events": list(self.events),
        }


def json_object(payload: bytes) -> dict[str, Any] | None:
    """A JSON object payload, or None (empty, not JSON, or not an object)."""
    if not payload:
        return None
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None  # RecursionError: `[[[[...` nested past the parser's stack
    return body if isinstance(body, dict) else None


class TopicView(Protocol):
    """What MqttSession feeds: a ConsoleView (one gateway) or a FleetView (all of them)."""

    def apply(self, topic: str, payload: bytes) -> Change | None: ...


ViewT = TypeVar("ViewT", bound=TopicView)


class MqttSession(Generic[ViewT]):
    """Keeps a view fed from the broker and sends requests. `run()` until cancelled."""

    def __init__(
        self,
        *,
        target: BrokerTarget,
        view: ViewT,
        topics: Sequence[str] = (),
        on_change: Callable[[Change], None] | None = None,
        client_name: str = "consolegw-tool",
    ) -> None:
        self.target = target
        self.view = view
        self.topics = tuple(topics) or (f"{target.prefix}/#",)
        """What to subscribe to; the whole prefix unless told (the fleet takes less)."""
        self._on_change = on_change
        self._identifier = f"{client_name}-{uuid.uuid4().hex[:8]}"
        self._client: aiomqtt.Client | None = None
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._subscribed = asyncio.Event()
        self._probe_topic = f"consolegw-tool/probe/{self._identifier}"
        self._probes: dict[bytes, asyncio.Future[None]] = {}
        self.error: str | None = None

    @property
    def connected(self) -> bool:
        return self._client is not None

    async def wait_subscribed(self, within_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within_s):
                await self._subscribed.wait()
                return True
        return False

    async def run(self, *, reconnect: bool = True) -> None:
        """Connect, subscribe to `topics` and feed the view; reconnect on loss."""
        backoff = Backoff(0.5, 5.0)
        while True:
            try:
                async with self.target.client(identifier=self._identifier) as client:
                    for topic in self.topics:
                        await client.subscribe(topic, qos=1)
                    with contextlib.suppress(aiomqtt.MqttError):  # a broker ACL may refuse it
                        await client.subscribe(self._probe_topic, qos=1)
                    self._client = client
                    self.error = None
                    backoff.reset()
                    self._notify(Change("link", "connected"))
                    self._subscribed.set()
                    async for message in client.messages:
                        self._take(message.topic.value, message.payload)
            except aiomqtt.MqttError as exc:
                self.error = str(exc) or type(exc).__name__
                if not reconnect:
                    raise
            finally:
                was_connected = self._client is not None
                self._client = None
                self._subscribed.clear()
            # Not reached when cancelled (the tool quitting): nobody to tell then.
            self._notify(
                Change(
                    "link",
                    "disconnected" if was_connected else "unreachable",
                    {"error": self.error},
                )
            )
            await backoff.sleep()

    def _take(self, topic: str, payload: Any) -> None:
        raw = payload if isinstance(payload, bytes | bytearray) else str(payload or "").encode()
        if topic == self._probe_topic:
            probe = self._probes.pop(bytes(raw), None)
            if probe is not None and not probe.done():
                probe.set_result(None)
            return
        if "/request/" in topic:
            return  # someone's request (ours included): only the response matters
        change = self.view.apply(topic, bytes(raw))
        if change is None:
            return
        if change.kind == "response":
            waiter = self._pending.pop(str(change.body.get("transaction")), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(change.body)
        self._notify(change)

    def _notify(self, change: Change) -> None:
        if self._on_change is not None:
            try:
                self._on_change(change)
            except Exception:
                log.exception("view update failed")

    async def request(
        self, path: str, command: str, params: dict[str, Any], *, answer_s: float = 10.0
    ) -> dict[str, Any]:
        """Send `<prefix>/<path>/request/<command>` and wait for its response.

        `path` is "" for the gateway, "channels/<id>", "alarms/<id>" or "modules/<id>".
        Never raises for a missing answer: returns an error response saying why, since the
        caller shows it either way.
        """
        client = self._client
        if client is None:
            return _local_error(f"not connected to {self.target.mqtt.url}: {self.error or '...'}")
        transaction = f"{self._identifier}-{uuid.uuid4().hex[:8]}"
        topic = "/".join(p for p in (self.target.prefix, path, "request", command) if p)
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[transaction] = waiter
        body = json.dumps({**params, "transaction": transaction})
        try:
            await client.publish(topic, body, qos=1, retain=False)
            async with asyncio.timeout(answer_s):
                return await waiter
        except TimeoutError:
            return _local_error(f"no response in {answer_s:g} s: is the daemon running?")
        except aiomqtt.MqttError as exc:
            return _local_error(f"request not sent: {exc}")
        finally:
            self._pending.pop(transaction, None)

    async def take_retained(self, *, connect_s: float = 10.0, settle_s: float = 3.0) -> None:
        """Connect once, let the retained messages feed the view (`settle`), disconnect.

        For one-shot output (`top --json`, `fleet`). Raises BrokerUnreachable."""
        task = asyncio.create_task(self.run(reconnect=False))
        waiter = asyncio.create_task(self.wait_subscribed(connect_s))
        try:
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if not waiter.done() or not waiter.result():
                reason = self.error or f"no answer in {connect_s:g} s"
                raise BrokerUnreachable(f"cannot reach the broker {self.target.mqtt.url}: {reason}")
            await self.settle(at_most_s=settle_s)
        finally:
            for pending in (task, waiter):
                pending.cancel()
            await asyncio.gather(task, waiter, return_exceptions=True)

    async def settle(self, *, at_most_s: float = 3.0) -> None:
        """After subscribing: wait until the retained messages have all arrived.

        A probe published to our own topic comes back after them (the broker delivers one
        client's messages in order). A broker whose ACL drops the probe costs `at_most_s`.
        """
        client = self._client
        if client is None:
            return
        token = uuid.uuid4().hex.encode()
        arrived: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._probes[token] = arrived
        try:
            await client.publish(self._probe_topic, token, qos=1)
            async with asyncio.timeout(at_most_s):
                await arrived
        except (TimeoutError, aiomqtt.MqttError):
            pass
        finally:
            self._probes.pop(token, None)


def _local_error(message: str) -> dict[str, Any]:
    return {"status": "error", "transaction": None, "data": {}, "error": message}
