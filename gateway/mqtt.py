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
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from gateway.commands import CommandRouter, Reply
from gateway.config import MqttSection, read_password
from gateway.events import StatusPayload, utc_timestamp
from gateway.publisher import Publisher

log = logging.getLogger(__name__)

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
        self._password = read_password(mqtt)
        self._tls = build_tls_context(mqtt)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        await self._connected.wait()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        backoff = 0.5
        outage_since: float | None = None
        while not self._stopping.is_set():
            self.session = await self._outbox.next_session()
            try:
                await self._connection(outage_since)
                outage_since = None
            except* aiomqtt.MqttError as group:
                if self._connected.is_set():
                    backoff = 0.5
                    outage_since = time.monotonic()
                    log.warning(
                        "MQTT connection lost (%s); events wait in the outbox",
                        group.exceptions[0],
                    )
                elif outage_since is None:
                    outage_since = time.monotonic()
                    log.warning(
                        "MQTT broker %s:%d unreachable (%s); events wait in the outbox",
                        self._mqtt.host,
                        self._mqtt.port,
                        group.exceptions[0],
                    )
            finally:
                self._connected.clear()
            if self._stopping.is_set():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=backoff)
            backoff = min(backoff * 2, 5.0)

    async def _connection(self, outage_since: float | None) -> None:
        offline = self._status(state="offline")  # the Will: stamped at connection time
        client = aiomqtt.Client(
            self._mqtt.host,
            self._mqtt.port,
            identifier=self._client_id,
            username=self._mqtt.username,
            password=self._password,
            protocol=aiomqtt.ProtocolVersion.V5,
            will=aiomqtt.Will(self._status_topic, offline, qos=1, retain=True),
            keepalive=self._mqtt.keepalive_s,
            tls_context=self._tls,
            tls_insecure=True if self._mqtt.tls and self._mqtt.tls.insecure else None,
            max_inflight_messages=self._in_flight,
            timeout=10,
            # No Nagle: a PTT response or an event must not wait for the broker's delayed ACK.
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        )
        # Our window of QoS 1 publishes in flight is deliberate, not a backlog to warn about.
        client.pending_calls_threshold = self._in_flight + 64
        requests = _RequestDispatch(self._answer, client)
        async with client:
            await client.publish(self._status_topic, self._status("online"), qos=1, retain=True)
            requests.install()  # before subscribing, so no request is missed
            # Retain-As-Published keeps the retain flag on live delivery, so a request
            # published with retain=true is recognised and refused, not only a stale one.
            options = SubscribeOptions(qos=1, retainAsPublished=True)
            for topic in self._router.subscriptions:
                await client.subscribe(topic, options=options)
            self._connected.set()
            after = (
                ""
                if outage_since is None
                else (f" after {time.monotonic() - outage_since:.1f} s away")
            )
            log.info(
                "MQTT connected to %s:%d as %s%s (session %d, %d events queued)",
                self._mqtt.host,
                self._mqtt.port,
                self._client_id,
                after,
                self.session,
                self._outbox.depth,
            )
            self._publisher.mark_all_dirty()
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(self._pump_events(client)),
                    group.create_task(self._pump_states(client)),
                    group.create_task(requests.serve()),
                ]
                await self._stopping.wait()
                # Clean stop: let the last events (PTT released on the way down) go out.
                await self._drain(_STOP_DRAIN_S)
                for task in tasks:
                    task.cancel()
            await client.publish(
                self._status_topic, self._status(state="offline"), qos=1, retain=True
            )
            log.info("MQTT: published offline, disconnecting")

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
            if retained and not raw:
                return  # the deletion of a retained request (ours or the requester's)
            if retained:
                # Cleared before it is handled, whatever the outcome: a retained request
                # that upset the handler must not come back on every reconnect.
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
        with contextlib.suppress(aiomqtt.MqttError):
            # A lost connection loses the response, not the command's effect; the
            # requester times out and asks `status`.
            await client.publish(reply.topic, reply.payload, qos=1, properties=properties)
            _ack_now(client)


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


def _ack_now(client: aiomqtt.Client) -> None:
    """Send the TCP ACK for the PUBACK just read now, not after the kernel's delayed-ACK
    timer (up to 40 ms). Otherwise a broker that keeps Nagle on (mosquitto's default) holds
    its next small packet, which may be a PTT request, until that ACK arrives."""
    global _quickack_warned  # noqa: PLW0603
    quickack = getattr(socket, "TCP_QUICKACK", None)
    paho_client = getattr(client, "_client", None)  # aiomqtt keeps paho's client here
    sock = paho_client.socket() if paho_client is not None else None
    if quickack is None or not isinstance(sock, socket.socket):
        if not _quickack_warned:
            _quickack_warned = True
            log.info("TCP quick ACK unavailable; set set_tcp_nodelay true on the broker")
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)


async def _first(waiter: Any, failure: asyncio.Future[None]) -> None:
    task = asyncio.ensure_future(waiter)
    try:
        await asyncio.wait({task, failure}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        task.cancel()
