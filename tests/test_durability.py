"""Nothing committed is lost: broker outages and SIGKILL of the daemon, with a real mosquitto.

End-to-end delivery needs a subscriber with a persistent session (as CAD should use) on a
broker with persistence; the outbox guarantees delivery to the broker.
"""

from __future__ import annotations

import itertools
import signal
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.contract import check_messages
from tests.mqtt_tools import Broker, Daemon, Subscriber, wait_for
from tests.sim_tools import start_console


def first_occurrences(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[str] = set()
    unique = []
    for event in events:
        if event["event_id"] not in seen:
            seen.add(event["event_id"])
            unique.append(event)
    return unique


def assert_complete_and_ordered(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    unique = first_occurrences(events)
    seqs = [e["seq"] for e in unique]
    assert seqs == sorted(seqs), "events arrived out of order"
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), (
        f"gap in seq: missing {sorted(set(range(seqs[0], seqs[-1] + 1)) - set(seqs))}"
    )
    return unique


@pytest.fixture
def own_broker(tmp_path: Path) -> Any:
    broker = Broker(tmp_path / "own-broker")
    broker.start()
    yield broker
    broker.stop()


@pytest.mark.slow
def test_broker_outage_of_10_s_while_events_flow(
    tmp_path: Path, own_broker: Broker, daemon_factory: Callable[..., Daemon]
) -> None:
    subs: list[Subscriber] = []

    def persistent_sub(topics: list[str]) -> Subscriber:
        sub = Subscriber(
            own_broker.host,
            own_broker.port,
            topics,
            client_id="cad-" + uuid.uuid4().hex[:6],
            persistent=True,
        )
        subs.append(sub)
        return sub

    cut, stop_sim = start_console(
        tmp_path, own_broker, daemon_factory, persistent_sub, fire="cos_flap_max = 10000"
    )
    radio = cut.serial("fire")
    toggles = 0
    stop = threading.Event()

    def traffic() -> None:
        nonlocal toggles
        level = False
        while not stop.wait(0.12):
            level = not level
            radio.carrier(level)
            toggles += 1

    try:
        worker = threading.Thread(target=traffic)
        worker.start()
        time.sleep(2)
        own_broker.stop()
        outage_start = time.time()
        time.sleep(10)
        own_broker.start()
        time.sleep(2)
        stop.set()
        worker.join()
        radio.carrier(False)
        final = toggles + (toggles % 2)  # a final off if the last toggle was on
        wait_for(
            lambda: (
                len({e["event_id"] for e in cut.sub.events() if e["type"].startswith("cos.")})
                >= final * 0.9
            ),
            timeout=30,
            what="the backlog to drain",
        )
        time.sleep(1)
        events = [e for e in cut.sub.events() if e["source_id"] in ("fire", cut.gid)]
        unique = assert_complete_and_ordered(events)
        cos = [e["type"] for e in unique if e["type"].startswith("cos.")]
        assert len(cos) >= final * 0.9, f"{len(cos)} COS events for {final} carrier changes"
        assert all(a != b for a, b in itertools.pairwise(cos)), "an on/off went missing"
        during = [
            e
            for e in unique
            if e["type"].startswith("cos.")
            and outage_start + 1 < _epoch(e["ts"]) < outage_start + 9
        ]
        assert len(during) > 30, "events made during the outage were delivered afterwards"
        assert "MQTT connection lost" in cut.daemon.log()
        # Requests are served on the new connection too.
        assert cut.ptt("fire", "on")["data"]["ptt"] is True and radio.keyed
        assert cut.ptt("fire", "off")["data"]["ptt"] is False and not radio.keyed
        check_messages(cut.sub.snapshot())
    finally:
        stop.set()
        for sub in subs:
            sub.close()
        stop_sim()


@pytest.mark.slow
def test_sigkill_with_events_in_the_outbox_loses_nothing(
    tmp_path: Path, own_broker: Broker, daemon_factory: Callable[..., Daemon]
) -> None:
    subs: list[Subscriber] = []

    def persistent_sub(topics: list[str]) -> Subscriber:
        sub = Subscriber(
            own_broker.host,
            own_broker.port,
            topics,
            client_id="cad-" + uuid.uuid4().hex[:6],
            persistent=True,
        )
        subs.append(sub)
        return sub

    cut, stop_sim = start_console(tmp_path, own_broker, daemon_factory, persistent_sub)
    try:
        before = max(e["seq"] for e in cut.sub.events())
        own_broker.stop()
        radio = cut.serial("ems")
        for _ in range(10):
            radio.carrier(True)
            time.sleep(0.15)
            radio.carrier(False)
            time.sleep(0.15)
        time.sleep(1.0)  # the daemon has seen and committed all of them
        cut.daemon.signal(signal.SIGKILL)
        cut.daemon.wait()
        own_broker.start()
        cut.daemon.start()
        cut.sub.wait(
            lambda m: (
                len([x for x in m if x.topic.endswith("/status") and x.json()["state"] == "online"])
                >= 2
            ),
            timeout=20,
            what="the restarted daemon online",
        )
        wait_for(
            lambda: len([e for e in cut.sub.events("cos.off") if e["source_id"] == "ems"]) >= 10,
            timeout=20,
            what="the COS events of before the kill",
        )
        time.sleep(1)
        unique = assert_complete_and_ordered(cut.sub.events())
        ems = [e["type"] for e in unique if e["source_id"] == "ems" and e["type"].startswith("cos")]
        assert ems == ["cos.on", "cos.off"] * 10
        restarted = [e for e in unique if e["type"] == "gateway.started"]
        assert restarted[-1]["seq"] > before, "seq continues across the restart"
        assert restarted[-1]["data"]["outbox_depth"] >= 20, "the backlog survived SIGKILL"
        assert unique[0]["seq"] <= before
        check_messages(cut.sub.snapshot())
    finally:
        for sub in subs:
            sub.close()
        stop_sim()


def _epoch(ts: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


@pytest.mark.slow
def test_full_outbox_is_reported_and_drops_no_fault(
    tmp_path: Path, own_broker: Broker, daemon_factory: Callable[..., Daemon]
) -> None:
    subs: list[Subscriber] = []

    def persistent_sub(topics: list[str]) -> Subscriber:
        sub = Subscriber(
            own_broker.host,
            own_broker.port,
            topics,
            client_id="cad-" + uuid.uuid4().hex[:6],
            persistent=True,
        )
        subs.append(sub)
        return sub

    cut, stop_sim = start_console(
        tmp_path,
        own_broker,
        daemon_factory,
        persistent_sub,
        fire="cos_debounce_ms = 0\ncos_flap_max = 4\ncos_flap_window_s = 0.5",
    )
    cut.daemon.stop()
    text = cut.config_text.replace("fsync = false", "fsync = false\nmax_events = 100")
    daemon = daemon_factory(text, name=cut.gid + "-small")
    try:
        own_broker.stop()
        daemon.start()
        radio = cut.serial("fire")
        for i in range(200):  # 200 COS events and flapping faults, broker away
            radio.carrier(i % 2 == 0)
            time.sleep(0.06)
        wait_for(lambda: "OUTBOX FULL" in daemon.log(), what="the outbox full, said loudly")
        own_broker.start()
        full = cut.sub.wait_event("outbox.full", timeout=30)
        assert full["data"]["max_events"] == 100 and full["data"]["depth"] >= 100
        cut.sub.wait(
            lambda m: [
                x for x in m if x.topic.endswith(f"{cut.gid}/state") and x.json()["outbox_full"]
            ],
            what="outbox_full in the state",
        )
        faults = [e for e in cut.sub.events("fault.raised") if e["source_id"] == "fire"]
        cleared = [e for e in cut.sub.events("fault.cleared") if e["source_id"] == "fire"]
        assert faults, "fault events are kept when the outbox overflows"
        assert len(faults) - len(cleared) in (0, 1)
        ok = cut.sub.wait_event("outbox.ok", timeout=30)
        assert ok["data"]["dropped"] > 0, "the drain reports how many events were dropped"
    finally:
        daemon.stop()
        for sub in subs:
            sub.close()
        stop_sim()
