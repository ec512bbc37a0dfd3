"""Redundant brokers (`mqtt.urls`): two real mosquittos, the first one stopped and started
again while events flow; CAD, subscribed to both, misses no event."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.mqtt_tools import Broker, Daemon, Subscriber, free_port, wait_for
from tests.rabbitmq import read_packet
from tests.sim_tools import channel_config, start_config


def events_by_seq(subs: list[Subscriber]) -> dict[int, str]:
    seen: dict[int, str] = {}
    for sub in subs:
        for event in sub.events():
            seen[event["seq"]] = event["type"]
    return seen


def connected_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "MQTT connected to" in line]


@pytest.mark.slow
def test_fail_over_to_the_second_broker_and_back(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    first = Broker(tmp_path / "first")
    second = Broker(tmp_path / "second")
    first.start()
    second.start()
    stop_carrier = threading.Event()
    try:
        gid, text = channel_config(tmp_path, first)
        text = text.replace(
            f'url = "{first.url}"',
            f'urls = ["{first.url}", "{second.url}"]\nkeepalive_s = 5\nreturn_to_first_s = 1',
        )
        # CAD subscribes to both brokers, each with a session that outlives disconnects.
        cad = Subscriber(
            second.host,
            second.port,
            [f"consolegw/{gid}/#"],
            client_id=f"cad-{gid}",
            persistent=True,
        )

        def on_first(topics: list[str]) -> Subscriber:
            return Subscriber(
                first.host, first.port, topics, client_id=f"cad1-{gid}", persistent=True
            )

        cut, stop_console = start_config(tmp_path, gid, text, daemon_factory, on_first)
        subs = [cut.sub, cad]

        def carrier() -> None:  # events flowing all along: cos.on / cos.off on fire
            on = False
            while not stop_carrier.wait(0.3):
                on = not on
                cut.serial("fire").carrier(on)

        toggler = threading.Thread(target=carrier, daemon=True)
        toggler.start()
        try:
            log = cut.daemon.log
            wait_for(lambda: connected_lines(log()), 15, "first connection")
            assert f":{first.port} " in connected_lines(log())[0]
            time.sleep(1.0)
            first.stop()
            started = time.monotonic()
            wait_for(lambda: len(connected_lines(log())) >= 2, 15, "fail-over")
            assert time.monotonic() - started < 5.0, "fail-over within 5 s"
            assert f":{second.port} " in connected_lines(log())[1]
            assert "broker 2 of 2" in connected_lines(log())[1]
            # Every retained state republished on the second broker.
            cad.wait(
                lambda m: [x for x in m if x.topic.endswith("/channels/police/state")],
                what="retained state on the second broker",
            )
            time.sleep(1.0)
            first.start()
            wait_for(lambda: len(connected_lines(log())) >= 3, 20, "back to the first")
            assert f":{first.port} " in connected_lines(log())[2]
            assert "moving back to it" in log()
            time.sleep(1.0)
        finally:
            stop_carrier.set()
            toggler.join()
        # CAD, on the two brokers together, saw every event the gateway made: no gap.
        time.sleep(1.0)
        seen = events_by_seq(subs)
        assert len([t for t in seen.values() if t.startswith("cos.")]) >= 10
        missing = sorted(set(range(min(seen), max(seen) + 1)) - set(seen))
        assert missing == [], missing
        assert "Traceback" not in log()
        cad.close()
        cut.sub.close()
        stop_console()
    finally:
        stop_carrier.set()
        first.stop()
        second.stop()


def test_a_quiet_console_sees_its_broker_go_and_come_back(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    # A console in standby publishes nothing after its start: only the connection itself can
    # tell that the broker went. (The link once noticed a dropped connection only at its
    # next publish, so a quiet console stayed cut off after a broker restart.)
    broker = Broker(tmp_path / "broker")
    broker.start()
    try:
        daemon = daemon_factory(
            f'[gateway]\nid = "pos-quiet"\nstandby = true\nstate_dir = "{tmp_path / "state"}"\n'
            f'[mqtt]\nurl = "{broker.url}"\nkeepalive_s = 60\n'
        )
        daemon.start()
        wait_for(lambda: "MQTT connected" in daemon.log(), 20, "the first connection")
        broker.stop()
        wait_for(lambda: "MQTT connection lost" in daemon.log(), 5, "the loss, at once")
        broker.start()
        wait_for(lambda: len(connected_lines(daemon.log())) >= 2, 15, "the reconnection")
        cad = Subscriber(broker.host, broker.port, ["consolegw/pos-quiet/#"])
        try:
            answer = cad.request("consolegw/pos-quiet/request/status", {})
            assert answer["status"] == "ok" and answer["data"]["standby"] is True
        finally:
            cad.close()
        assert daemon.stop() == 0
    finally:
        broker.stop()


class ClosesOnSubscribe:
    """A loopback MQTT 3.1.1 peer that answers CONNECT with CONNACK 0 and a QoS 1 PUBLISH
    with its PUBACK, and closes the connection on SUBSCRIBE: what RabbitMQ does to a
    subscription it refuses (docs/broker-rabbitmq.md). Counts the connections it took."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.connections = 0
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            self.connections += 1
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    @staticmethod
    def _packet(conn: socket.socket) -> tuple[int, bytes] | None:
        """(the first byte, the body after the remaining length) of the next packet."""
        raw = read_packet(conn)
        end = 1
        while end < len(raw) and raw[end] & 0x80:
            end += 1
        return (raw[0], raw[end + 1 :]) if len(raw) > end else None

    def _session(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            while True:
                try:
                    packet = self._packet(conn)
                except OSError:
                    return
                if packet is None:
                    return
                kind, body = packet
                if kind >> 4 == 1:  # CONNECT
                    conn.sendall(b"\x20\x02\x00\x00")
                elif kind >> 4 == 3 and (kind >> 1) & 3:  # PUBLISH, QoS 1
                    topic_len = int.from_bytes(body[:2], "big")
                    conn.sendall(b"\x40\x02" + body[2 + topic_len : 4 + topic_len])
                elif kind >> 4 == 12:  # PINGREQ
                    conn.sendall(b"\xd0\x00")
                else:  # SUBSCRIBE (and DISCONNECT): the connection ends
                    return

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._server.close()


def test_a_broker_that_closes_the_connection_on_subscribe_is_left_for_the_next(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    # aiomqtt does not end a SUBSCRIBE's wait for its SUBACK when the connection closes: the
    # link waited out 10 s, then said the broker sent no CONNACK. It now sees the close,
    # says what the broker did, and moves on to the next broker of mqtt.urls.
    closer = ClosesOnSubscribe()
    broker = Broker(tmp_path / "broker")
    broker.start()
    try:
        daemon = daemon_factory(
            f'[gateway]\nid = "pos-sub"\nstandby = true\nstate_dir = "{tmp_path / "state"}"\n'
            f'[mqtt]\nurls = ["{closer.url}", "{broker.url}"]\nprotocol = "3.1.1"\n'
            "return_to_first_s = 0\n"
        )
        daemon.start()
        wait_for(lambda: connected_lines(daemon.log()), 20, "the connection to the second")
        log = daemon.log()
        assert f":{broker.port} " in connected_lines(log)[0]
        assert (
            f"127.0.0.1:{closer.port}: refused after connecting: the broker closed the "
            "connection on the SUBSCRIBE to consolegw/pos-sub/request/+, after its CONNACK"
        ) in log, log
        assert "no MQTT CONNACK" not in log and "Traceback" not in log
        assert closer.connections >= 1
        assert daemon.stop() == 0
    finally:
        broker.stop()
        closer.close()
