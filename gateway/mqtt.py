"""The MQTT link: birth and Last Will, the outbox pump, retained state and requests.

One connection at a time, reconnecting with backoff for as long as the daemon runs. Events
wait in the outbox while the broker is away and drain in order when it returns; QoS 1 means
a few may arrive twice, which subscribers drop by `event_id` (or `seq`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from aiomqtt import ProtocolVersion
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from drivers.backoff import Backoff
from gateway.commands import CommandRouter, Reply
from gateway.config import BrokerEndpoint, MqttSection, read_password
from gateway.events import StatusPayload, utc_timestamp
from gateway.publisher import Publisher

log = logging.getLogger(__name__)


class _LinkFailuresAtDebug(logging.Filter):
    """paho logs a broken socket at ERROR the moment it reads or writes on it; the link
    logs the same loss once, as a WARNING with what happens next (`MQTT connection lost`).
    Those lines go to DEBUG; everything else paho says (a callback's exception) stays."""

    _SAME_AS_THE_LINK = (
        "failed to receive on socket",
        "timeout on socket",
        "Client is not connected",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith(self._SAME_AS_THE_LINK):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            # Handlers do not check the logger's level again: drop it unless DEBUG is on.
            return paho_log.isEnabledFor(logging.DEBUG)
        return True


paho_log = logging.getLogger(f"{__name__}.paho")
"""What paho and aiomqtt say (their default logger is the bare name "mqtt")."""
paho_log.addFilter(_LinkFailuresAtDebug())

_FETCH_BATCH = 512
_STOP_DRAIN_S = 2.0


def build_tls_context(mqtt: MqttSection) -> ssl.SSLContext | None:
    if not mqtt.uses_tls:
        return None
    tls = mqtt.tls
    context = ssl.create_default_context(
        cafile=str(tls.ca_file) if tls is not None and tls.ca_file is not None else None
    )
    if tls is not None and tls.cert_file is not None:
        context.load_cert_chain(
            str(tls.cert_file), str(tls.key_file) if tls.key_file is not None else None
        )
    if tls is not None and tls.insecure:
        context.check_hostname = False
    return context


class PublishRefused(aiomqtt.MqttError):
    """The broker answered a QoS 1 publish with a failure reason code (MQTT 5's PUBACK), as
    mosquitto does for a topic its ACL does not let this client publish to."""

    def __init__(self, topic: str, reason: str) -> None:
        super().__init__(f"the broker refused a publish to {topic} ({reason})")
        self.topic = topic
        self.reason = reason


# The message ids of the paho publishes made by the aiomqtt publish running in this task.
_PUBLISH_MIDS: ContextVar[list[int] | None] = ContextVar("consolegw_publish_mids", default=None)


class _Client(aiomqtt.Client):
    """aiomqtt's client, except that a publish the broker refuses raises PublishRefused.

    aiomqtt 2.x completes a QoS 1 publish on any PUBACK, ignoring its reason code: an event
    the broker refused ("Not authorized") would be taken off the outbox as delivered.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._refused: dict[int, str] = {}
        paho_publish = self._client.publish

        def publish(*args: Any, **kwargs: Any) -> paho.MQTTMessageInfo:
            info = paho_publish(*args, **kwargs)
            mids = _PUBLISH_MIDS.get()
            if mids is not None:
                mids.append(info.mid)
            return info

        setattr(self._client, "publish", publish)  # noqa: B010 (an instance's method)

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_code: Any,
        properties: Any,
    ) -> None:
        if getattr(reason_code, "is_failure", False):
            self._refused[mid] = str(reason_code)
        super()._on_publish(client, userdata, mid, reason_code, properties)

    async def __aenter__(self) -> _Client:
        await super().__aenter__()
        # Read by `closed()` once the link runs; a connection lost before that (a refused
        # first publish) must not leave asyncio to log "exception never retrieved".
        self._disconnected.add_done_callback(lambda f: f.cancelled() or f.exception())
        return self

    async def closed(self) -> None:
        """Raise when the broker closes the connection. aiomqtt tells only a caller that
        waits on the socket, and a quiet console may have none: without this a dropped
        connection went unnoticed until the next event (mosquitto closes it, for one, after
        refusing a publish its ACL denies)."""
        await asyncio.shield(self._disconnected)
        raise aiomqtt.MqttError("the broker closed the connection")

    async def publish(self, topic: str, *args: Any, **kwargs: Any) -> None:
        mids: list[int] = []
        token = _PUBLISH_MIDS.set(mids)
        try:
            await super().publish(topic, *args, **kwargs)
        finally:
            _PUBLISH_MIDS.reset(token)
            refused = [self._refused.pop(mid, None) for mid in mids]
        reason = next((r for r in refused if r is not None), None)
        if reason is not None:
            raise PublishRefused(topic, reason)


class MqttLink:
    """Keeps the gateway connected and its outbox drained. `run()` until `stop()`."""

    def __init__(
        self,
        *,
        mqtt: MqttSection,
        publisher: Publisher,
        router: CommandRouter,
        version: str,
        in_flight: int,
        client_id: str,
    ) -> None:
        self._mqtt = mqtt
        self._publisher = publisher
        self._outbox = publisher.outbox
        self._router = router
        self._version = version
        self._in_flight = in_flight
        self._client_id = client_id
        self._status_topic = f"{publisher.prefix}/status"
        self._stopping = asyncio.Event()
        self._connected = asyncio.Event()
        self.session = 0
        self.on_connected: Callable[[], None] | None = None
        """Called once the broker accepted a connection, with `session` already counted."""
        self._password = read_password(mqtt)
        self._tls = build_tls_context(mqtt)
        self._brokers = mqtt.brokers
        self._insecure = bool(mqtt.tls and mqtt.tls.insecure)
        self._learned: dict[str, ProtocolVersion] = {}  # auto: what each broker took
        self._clearing: dict[str, int] = {}  # our deletions of retained requests, in flight

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        await self._connected.wait()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        _quiet_closed_socket_callbacks(asyncio.get_running_loop())
        backoff = Backoff(0.5, 5.0)
        outage: _Outage | None = None
        index = 0  # the broker of self._brokers in use or being tried
        failed_in_round = 0
        while not self._stopping.is_set():
            broker = self._brokers[index]
            try:
                await self._connection(broker, outage, index)
                outage = None
                failed_in_round = 0
                # A clean end of a session that is not a stop: back to the first broker.
                index = 0
                continue
            except* aiomqtt.MqttError as group:
                refused = isinstance(_leaf(group), PublishRefused)
                failure = f"{broker.host}:{broker.port}: {_describe_failure(_leaf(group))}"
                # A broker that takes the connection but refuses our publishes: one outage,
                # not a loss and a recovery per attempt.
                refused_again = refused and outage is not None and outage.failure == failure
                if self._connected.is_set() and not refused_again:
                    backoff.reset()
                    failed_in_round = 0
                    outage = _Outage(failure, refused=refused)
                    log.warning("MQTT connection lost (%s); events wait in the outbox", failure)
                elif outage is None or failure != outage.failure:
                    if outage is None:
                        outage = _Outage(failure, refused=refused)
                    else:
                        outage.attempts += 1
                        outage.failure, outage.refused = failure, refused
                    log.warning("MQTT broker %s; events wait in the outbox", failure)
                else:
                    outage.attempts += 1
                    if outage.summary_due():
                        log.warning(
                            "MQTT still without a broker after %.0f s (%d attempts; last: %s); "
                            "%d events wait in the outbox",
                            outage.seconds,
                            outage.attempts,
                            failure,
                            self._outbox.depth,
                        )
            finally:
                self._connected.clear()
            if self._stopping.is_set():
                break
            # The next broker at once; a pause only when every one of them has failed.
            index = (index + 1) % len(self._brokers)
            failed_in_round += 1
            if failed_in_round < len(self._brokers):
                continue
            failed_in_round = 0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=backoff.next())

    def _client(self, broker: BrokerEndpoint, version: ProtocolVersion) -> _Client:
        offline = self._status(state="offline")  # the Will: stamped at connection time
        client = _Client(
            broker.host,
            broker.port,
            identifier=self._client_id,
            username=self._mqtt.username,
            password=self._password,
            protocol=version,
            will=aiomqtt.Will(self._status_topic, offline, qos=1, retain=True),
            keepalive=self._mqtt.keepalive_s,
            tls_context=self._tls if broker.tls else None,
            tls_insecure=True
            if broker.tls and self._mqtt.tls and self._mqtt.tls.insecure
            else None,
            max_inflight_messages=self._in_flight,
            timeout=10,
            logger=paho_log,
            # No Nagle: a PTT response or an event must not wait for the broker's delayed ACK.
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        )
        # Our outbox window bounds the QoS 1 publishes in flight, and a rebirth sends every
        # retained state at once: neither is a backlog to warn about once per publish.
        client.pending_calls_threshold = 1 << 30
        return client

    async def _enter(
        self, broker: BrokerEndpoint, stack: contextlib.AsyncExitStack
    ) -> tuple[_Client, ProtocolVersion]:
        """Connect with the configured protocol; in auto, v5 first and 3.1.1 when the
        broker refuses or ignores a v5 CONNECT (remembered for that broker)."""
        wanted = self._mqtt.protocol
        learned = self._learned.get(broker.url)
        # Another broker of `urls` spoke 3.1.1 only: a cluster's nodes are alike, and a v5
        # CONNECT to RabbitMQ costs a 10 s time-out, too long for a fail-over.
        assumed = (
            wanted == "auto" and learned is None and ProtocolVersion.V311 in self._learned.values()
        )
        if learned is not None:
            versions = [learned]
        elif assumed:
            versions = [ProtocolVersion.V311]
        elif wanted == "auto":
            versions = [ProtocolVersion.V5, ProtocolVersion.V311]
        else:
            versions = [ProtocolVersion.V5 if wanted == "5" else ProtocolVersion.V311]
        for version in versions:
            client = self._client(broker, version)
            try:
                await stack.enter_async_context(client)
            except aiomqtt.MqttError as exc:
                if version is ProtocolVersion.V5 and len(versions) > 1 and _may_refuse_v5(exc):
                    log.info(
                        "MQTT broker %s:%d did not take a v5 CONNECT (%s); trying 3.1.1",
                        broker.host,
                        broker.port,
                        _describe_failure(exc),
                    )
                    continue
                raise
            if assumed:
                self._learned[broker.url] = version
                log.info(
                    "MQTT broker %s:%d: 3.1.1, as another broker of mqtt.urls (v5 not tried)",
                    broker.host,
                    broker.port,
                )
            elif wanted == "auto" and learned is None:
                self._learned[broker.url] = version
                if version is ProtocolVersion.V311:
                    log.warning(
                        "MQTT broker %s:%d speaks 3.1.1 only: responses go to "
                        ".../response/<cmd> without v5 response topic or correlation data",
                        broker.host,
                        broker.port,
                    )
            return client, version
        raise AssertionError("unreachable: the last version raises")

    async def _connection(self, broker: BrokerEndpoint, outage: _Outage | None, index: int) -> None:
        # `session` counts connections made: this attempt's number is committed only once
        # the broker has accepted it, but the Will must carry it already.
        self.session = self._outbox.session + 1
        async with contextlib.AsyncExitStack() as stack:
            client, version = await self._enter(broker, stack)
            v5 = version is ProtocolVersion.V5
            requests = _RequestDispatch(self._answer, client)
            self.session = await self._outbox.next_session()
            if self.on_connected is not None:
                self.on_connected()
            requests.install()  # before subscribing, so no request is missed
            for topic in self._router.subscriptions:
                if v5:
                    # Retain-As-Published keeps the retain flag on live delivery, so a
                    # request published with retain=true is refused, not only a stale one.
                    options = SubscribeOptions(qos=1, retainAsPublished=True)
                    subscribed = client.subscribe(topic, options=options)
                else:
                    # 3.1.1 clears the flag on live delivery: only a stale retained request
                    # is recognised (and refused, and cleared) as such. QoS 0: the session
                    # is a clean one, whose unacknowledged deliveries the broker drops with
                    # it, so QoS 1 would save no request; and RabbitMQ 3.x (the 3.1.1
                    # broker) keeps a clean session's QoS 1 subscription in a durable queue
                    # on the node it was made on: once that node crashes, every node
                    # refuses this client id a QoS 1 SUBSCRIBE, by closing the connection,
                    # until it is back (docs/broker-rabbitmq.md).
                    subscribed = client.subscribe(topic, qos=0)
                await _until_closed(client, subscribed, f"the SUBSCRIBE to {topic}")
            # Online only once the requests are subscribed: a CAD may command the moment it
            # sees it, and a request before our SUBSCRIBE reaches no one.
            await _until_closed(
                client,
                client.publish(self._status_topic, self._status("online"), qos=1, retain=True),
                f"the PUBLISH of {self._status_topic}",
            )
            self._connected.set()
            after = (
                ""
                if outage is None
                else f" after {outage.seconds:.1f} s away ({outage.attempts} attempts)"
            )
            which = (
                "" if len(self._brokers) == 1 else f", broker {index + 1} of {len(self._brokers)}"
            )
            # Connected again to a broker that refuses our publishes: the outage goes on, and
            # its summary says so; not a line per attempt.
            log.log(
                logging.DEBUG if outage is not None and outage.refused else logging.INFO,
                "MQTT connected to %s:%d as %s with MQTT %s%s%s (session %d, %d events queued)",
                broker.host,
                broker.port,
                self._client_id,
                "5" if v5 else "3.1.1",
                which,
                after,
                self.session,
                self._outbox.depth,
            )
            self._publisher.mark_all_dirty()
            back_to_first = asyncio.Event()
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(client.closed()),
                    group.create_task(self._pump_events(client)),
                    group.create_task(self._pump_states(client)),
                    group.create_task(requests.serve()),
                ]
                if index > 0 and self._mqtt.return_to_first_s > 0:
                    tasks.append(group.create_task(self._watch_first(back_to_first)))
                await _either(self._stopping, back_to_first)
                # Clean stop or hand-over: let the last events (PTT released on the way
                # down) go out.
                await self._drain(_STOP_DRAIN_S)
                for task in tasks:
                    task.cancel()
            await client.publish(
                self._status_topic, self._status(state="offline"), qos=1, retain=True
            )
            if back_to_first.is_set() and not self._stopping.is_set():
                first = self._brokers[0]
                log.warning(
                    "MQTT: the first broker %s:%d answers again; moving back to it",
                    first.host,
                    first.port,
                )
            else:
                log.info("MQTT: published offline, disconnecting")

    async def _watch_first(self, back: asyncio.Event) -> None:
        """While on a later broker: is the first one taking connections again?"""
        first = self._brokers[0]
        while True:
            await asyncio.sleep(self._mqtt.return_to_first_s)
            try:
                async with asyncio.timeout(2.0):
                    _, writer = await asyncio.open_connection(first.host, first.port)
            except (OSError, TimeoutError):
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            back.set()
            return

    async def _drain(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._outbox.wait_empty()

    def _status(self, state: str) -> bytes:
        payload = StatusPayload(
            state="online" if state == "online" else "offline",
            session=self.session,
            ts=utc_timestamp(),
            version=self._version,
        )
        return payload.model_dump_json().encode()

    async def _pump_events(self, client: aiomqtt.Client) -> None:
        # Every reconnect starts again from the oldest unacknowledged event, in order.
        last_sent = 0
        window = asyncio.Semaphore(self._in_flight)
        failure: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def publish(seq: int, topic: str, payload: bytes) -> None:
            try:
                await client.publish(topic, payload, qos=1)
                _ack_now(client)
                self._outbox.ack(seq)
            except aiomqtt.MqttError as exc:
                if not failure.done():
                    failure.set_exception(exc)
            finally:
                window.release()

        # A pump cancelled (a stop, another task's failure) before it read `failure` must
        # not leave asyncio to log a "never retrieved" traceback for a lost connection.
        failure.add_done_callback(lambda f: f.cancelled() or f.exception())
        async with asyncio.TaskGroup() as group:
            while True:
                if failure.done():
                    failure.result()
                rows = self._outbox.fetch_after(last_sent, _FETCH_BATCH)
                if not rows:
                    await _first(self._outbox.wait_for_rows(), failure)
                    continue
                for row in rows:
                    await window.acquire()
                    if failure.done():
                        failure.result()
                    group.create_task(publish(row.seq, row.topic, row.payload))
                    last_sent = row.seq

    async def _pump_states(self, client: aiomqtt.Client) -> None:
        while True:
            batch = await self._publisher.take_dirty()
            try:
                await asyncio.gather(*(client.publish(t, p, qos=1, retain=True) for t, p in batch))
                _ack_now(client)
            except aiomqtt.MqttError:
                self._publisher.requeue([t for t, _ in batch])
                raise

    async def _answer(self, client: aiomqtt.Client, message: paho.MQTTMessage) -> None:
        """One request, in isolation: nothing in it may end the link or the daemon."""
        try:
            topic = message.topic
            raw = bytes(message.payload)
            retained = bool(message.retain)
            if not raw and self._clearing.get(topic, 0) > 0:
                # Our own deletion of a retained request, delivered back to us: under
                # 3.1.1 without the retain flag, so it would read as an empty request.
                self._clearing[topic] -= 1
                if not self._clearing[topic]:
                    del self._clearing[topic]
                return
            if retained and not raw:
                return  # the deletion of a retained request (the requester's)
            if retained:
                # Cleared before it is handled, whatever the outcome: a retained request
                # that upset the handler must not come back on every reconnect.
                self._clearing[topic] = self._clearing.get(topic, 0) + 1
                with contextlib.suppress(aiomqtt.MqttError):
                    await client.publish(topic, b"", qos=1, retain=True)
            props = message.properties
            response_topic = getattr(props, "ResponseTopic", None) if props else None
            correlation = getattr(props, "CorrelationData", None) if props else None
            replies = await self._router.handle(
                topic,
                raw,
                retained=retained,
                response_topic=response_topic if isinstance(response_topic, str) else None,
                correlation_data=correlation if isinstance(correlation, bytes) else None,
            )
            for reply in replies:
                await self._send_reply(client, reply)
        except Exception:
            # The router never raises; this is a bug in the lines above. Still one line,
            # and the link carries on.
            self._router.refusals.failed("(a request)")

    @staticmethod
    async def _send_reply(client: aiomqtt.Client, reply: Reply) -> None:
        properties = None
        if reply.correlation_data is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.CorrelationData = reply.correlation_data
        try:
            await client.publish(reply.topic, reply.payload, qos=1, properties=properties)
            _ack_now(client)
        except PublishRefused as exc:
            # A v5 response topic the ACL does not let us publish to: the response on
            # .../response/<cmd> is a separate publish, and the link carries on.
            _reply_refusals.note(exc)
        except aiomqtt.MqttError:
            # A lost connection loses the response, not the command's effect; the
            # requester times out and asks `status`.
            pass


class _RequestDispatch:
    """Starts a task per request straight from paho's message callback.

    aiomqtt drives paho from the event loop, so the callback runs on the loop thread. Going
    through aiomqtt's message queue instead costs a queue task and an `asyncio.wait` per
    message, about 0.3 ms on a console PC: a third of a PTT request's time in the gateway.
    It replaces aiomqtt's own callback, so nothing piles up in the queue nobody reads; all
    we subscribe to are requests, and the router ignores any other topic.
    """

    def __init__(
        self,
        answer: Callable[[aiomqtt.Client, paho.MQTTMessage], Coroutine[Any, Any, None]],
        client: aiomqtt.Client,
    ) -> None:
        self._answer = answer
        self._client = client
        self._tasks: set[asyncio.Task[None]] = set()

    def install(self) -> None:
        paho_client: paho.Client = self._client._client  # aiomqtt keeps paho's client here
        paho_client.on_message = self._on_request

    def _on_request(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        # An exception here would unwind through paho's read loop and end the link.
        try:
            task = asyncio.get_running_loop().create_task(self._answer(self._client, message))
        except Exception:
            log.exception("could not start a request task")
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def serve(self) -> None:
        """Run until cancelled (the connection ends).

        Requests in progress are left to finish: a PTT command half done must complete its
        state change; only its response is lost with the connection.
        """
        await asyncio.Event().wait()


_quickack_warned = False


class _ReplyRefusals:
    """A refused response is logged once a minute at most (a CAD may name a new response
    topic per request), with the count since the last line."""

    def __init__(self) -> None:
        self._last = -float("inf")
        self._since = 0

    def note(self, refused: PublishRefused) -> None:
        self._since += 1
        now = time.monotonic()
        if now - self._last >= 60.0:
            log.warning(
                "MQTT: %s (%d in all since the last such line): a v5 response topic must be "
                "one the broker's ACL lets this gateway publish to (docs/broker-acl.md)",
                refused,
                self._since,
            )
            self._last, self._since = now, 0


_reply_refusals = _ReplyRefusals()


def _ack_now(client: aiomqtt.Client) -> None:
    """Send the TCP ACK for the PUBACK just read now, not after the kernel's delayed-ACK
    timer (up to 40 ms). Otherwise a broker that keeps Nagle on (mosquitto's default) holds
    its next small packet, which may be a PTT request, until that ACK arrives."""
    global _quickack_warned  # noqa: PLW0603
    quickack = getattr(socket, "TCP_QUICKACK", None)
    if quickack is None:
        if not _quickack_warned:
            _quickack_warned = True
            log.info("TCP quick ACK unavailable; set set_tcp_nodelay true on the broker")
        return
    paho_client = getattr(client, "_client", None)  # aiomqtt keeps paho's client here
    sock = paho_client.socket() if paho_client is not None else None
    if not isinstance(sock, socket.socket):
        return  # the connection has just gone (or is TLS-wrapped): nothing to speed up
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)


class SetupFailed(aiomqtt.MqttError):
    """The broker accepted the connection (CONNACK), then closed it or left unanswered the
    status PUBLISH or a SUBSCRIBE that follow."""


async def _until_closed(client: _Client, step: Coroutine[Any, Any, Any], what: str) -> None:
    """`step`, or SetupFailed as soon as the broker closes the connection. aiomqtt would wait
    out its whole timeout (10 s) for a PUBACK or SUBACK that a closed connection never
    brings, and its "Operation timed out" read as a broker that sent no CONNACK: RabbitMQ
    refuses a SUBSCRIBE by closing the connection."""
    closed = asyncio.ensure_future(client.closed())
    task = asyncio.ensure_future(step)
    try:
        done, _ = await asyncio.wait({task, closed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future in (closed, task):
            if not future.done():
                future.cancel()
    with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
        await closed  # its end (or its cancellation) retrieved
    if task in done:
        try:
            task.result()
        except aiomqtt.MqttError as exc:
            if str(exc) == "Operation timed out":
                raise SetupFailed(f"no answer to {what}, after its CONNACK") from None
            raise
        return
    with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
        await task
    raise SetupFailed(f"the broker closed the connection on {what}, after its CONNACK")


async def _first(waiter: Any, failure: asyncio.Future[None]) -> None:
    task = asyncio.ensure_future(waiter)
    try:
        await asyncio.wait({task, failure}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        task.cancel()


class _Outage:
    """One stretch without a broker: what failed, since when, how often we tried."""

    _SUMMARY_S = 600.0

    def __init__(self, failure: str, *, refused: bool = False) -> None:
        self.failure = failure
        self.refused = refused
        """The broker took the connection and refused a publish (PublishRefused)."""
        self.since = time.monotonic()
        self.attempts = 1
        self._last_summary = self.since

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.since

    def summary_due(self) -> bool:
        now = time.monotonic()
        if now - self._last_summary >= self._SUMMARY_S:
            self._last_summary = now
            return True
        return False


async def _either(first: asyncio.Event, second: asyncio.Event) -> None:
    waits = {asyncio.ensure_future(first.wait()), asyncio.ensure_future(second.wait())}
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


def _may_refuse_v5(error: BaseException) -> bool:
    """Whether a failed v5 CONNECT may be a 3.1.1-only broker's answer: a refusal of the
    protocol version, a connection closed before CONNACK, or no CONNACK at all. Not a
    network, TLS or authentication failure, which 3.1.1 would meet the same way."""
    if isinstance(error, MqttConnectError):
        return getattr(error.rc, "value", error.rc) in _PROTOCOL_CODES
    if str(error) == "Operation timed out":
        return True  # TCP went through; MQTT never answered
    # connect()'s own OSError (refused, unreachable, no such host, TLS): not the protocol.
    return not isinstance(error.__context__, OSError)


def _leaf(error: BaseException) -> BaseException:
    """The first real exception inside (nested) exception groups."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


_AUTH_CODES = {4, 5, 134, 135}  # 3.1.1 and v5: bad user name or password, not authorised
_PROTOCOL_CODES = {1, 132}  # unacceptable / unsupported protocol version


def _describe_failure(error: BaseException) -> str:
    """Which of network, protocol, authentication or TLS failed, in words a technician acts on."""
    if isinstance(error, PublishRefused):
        return (
            f"authorization: {error}: its ACL must let this gateway publish under its prefix "
            "(docs/broker-acl.md)"
        )
    cause = error.__context__  # aiomqtt re-raises connect()'s OSError as a bare MqttError
    if isinstance(error, MqttConnectError):  # a CONNACK refusal: its code says why
        code = getattr(error.rc, "value", error.rc)
        if code in _AUTH_CODES:
            return f"authentication refused ({error}): check mqtt.username and the password"
        if code in _PROTOCOL_CODES:
            return f"protocol refused ({error}): the broker does not speak this MQTT version"
        return f"connection refused by the broker ({error})"
    if isinstance(error, SetupFailed):
        return (
            f"refused after connecting: {error} (RabbitMQ closes the connection on a topic "
            "outside the user's permissions, or on a QoS 1 subscription kept on a node "
            "that is down)"
        )
    if isinstance(cause, ssl.SSLError) or "SSL" in str(error) or "certificate" in str(error):
        return f"TLS failed ({error}): check mqtt.tls and the broker's certificate"
    if str(error) == "Operation timed out":
        # aiomqtt's wait for CONNACK: TCP (and TLS) went through, MQTT did not answer.
        return (
            "protocol: the broker took the TCP connection but sent no MQTT CONNACK "
            "(not an MQTT broker, or one that does not answer this MQTT version)"
        )
    if isinstance(cause, socket.gaierror):
        return f"network: host name not found ({error})"
    if isinstance(cause, OSError) or isinstance(error, OSError):
        return f"network: cannot reach the broker ({error})"
    return f"connection failed ({error})"


def _quiet_closed_socket_callbacks(loop: asyncio.AbstractEventLoop) -> None:
    """aiomqtt registers paho's socket with the loop through call_soon_threadsafe; when the
    connection drops in between, add_writer meets a closed descriptor (EBADF) and asyncio
    logs a traceback for what is only a lost connection, which the link reports anyway."""
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        handle = context.get("handle")
        callback = getattr(handle, "_callback", None)
        name = getattr(callback, "__name__", "")
        if isinstance(error, OSError | ValueError) and name in ("add_writer", "add_reader"):
            log.debug("MQTT socket already closed when %s ran: %s", name, error)
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
