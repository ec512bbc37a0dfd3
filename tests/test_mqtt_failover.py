"""Redundant brokers (`mqtt.urls`): two real mosquittos, the first one stopped and started
again while events flow; CAD, subscribed to both, misses no event."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.mqtt_tools import Broker, Daemon, Subscriber, wait_for
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
