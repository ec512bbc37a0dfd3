"""A console that restarts tells the truth: what the last run left keyed is unkeyed and said
so (ptt.off, reason restart), an unclean stop is an event, and alarm latches and
acknowledgements survive."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.mqtt_tools import wait_for
from tests.sim_tools import ConsoleUnderTest
from tests.test_alarms import ack, alarm_console, alarm_events  # noqa: F401 (a fixture)


def restarted_events(
    cut: ConsoleUnderTest, event_type: str, after_seq: int, **data: Any
) -> list[dict[str, Any]]:
    return [
        e
        for e in cut.sub.events(event_type)
        if e["seq"] > after_seq and all(e["data"].get(k) == v for k, v in data.items())
    ]


@pytest.mark.slow
def test_kill_9_with_radios_keyed_is_reconciled_at_restart(
    console_factory: Callable[..., ConsoleUnderTest],
) -> None:
    cut = console_factory()
    assert cut.ptt("fire", "on", transaction="dispatcher-3")["data"]["ptt"] is True
    assert cut.ptt("police", "on", transaction="cad")["data"]["ptt"] is True
    on = cut.sub.wait_event("ptt.on", source_id="police")
    first = [m.json() for m in cut.sub.on("/status") if m.json()["state"] == "online"][-1]
    cut.daemon.signal(signal.SIGKILL)
    cut.daemon.wait()
    # A CM108's GPIO keeps its level when the process dies: the radio is still keyed.
    assert cut.usb("police").keyed
    before_restart = len(cut.daemon.log())
    cut.daemon.start()
    unclean = cut.sub.wait_event("gateway.unclean_stop", timeout=20)
    assert unclean["data"]["left_keyed"] == ["fire", "police"]
    assert unclean["data"]["previous_session"] == first["session"]
    assert unclean["data"]["last_seq"] >= on["seq"]
    assert unclean["seq"] > on["seq"]
    for channel, by in (("fire", "dispatcher-3"), ("police", "cad")):
        off = cut.sub.wait_event("ptt.off", source_id=channel, reason="restart", timeout=20)
        assert off["data"]["requested_by"] == by and off["seq"] > unclean["seq"]
    assert not cut.usb("police").keyed and not cut.serial("fire").keyed
    cut.wait_state("police", ptt=False, device="online")
    # In the log, the start is a few lines: the unclean stop naming what was left keyed, and
    # the devices' opens gathered in one, which says of each radio that it was unkeyed.
    ready = wait_for(
        lambda: [
            ln for ln in cut.daemon.log()[before_restart:].splitlines() if "devices open" in ln
        ],
        15,
        "the start's summary line",
    )
    assert len(ready) == 1, ready
    assert ready[0].count("unkeyed: the last run stopped with it keyed") == 2, ready
    restart_log = cut.daemon.log()[before_restart:]
    assert "did not stop cleanly; left keyed: fire, police (each unkeyed" in restart_log
    assert ": radio open: " not in restart_log
    # A clean stop after that: the next start reports nothing left over.
    cut.daemon.signal(signal.SIGTERM)
    assert cut.daemon.wait() == 0
    seq = max(e["seq"] for e in cut.sub.events())
    cut.daemon.start()
    started = wait_for(lambda: restarted_events(cut, "gateway.started", seq), 20, "restart")
    cut.wait_online()
    time.sleep(0.5)
    assert restarted_events(cut, "gateway.unclean_stop", seq) == []
    assert restarted_events(cut, "ptt.off", seq, reason="restart") == []
    assert started


@pytest.mark.slow
def test_a_keyed_radio_released_before_a_crash_is_not_reported_again(
    console_factory: Callable[..., ConsoleUnderTest],
) -> None:
    cut = console_factory()
    assert cut.ptt("ems", "on")["status"] == "ok"
    assert cut.ptt("ems", "off")["status"] == "ok"
    cut.daemon.signal(signal.SIGKILL)
    cut.daemon.wait()
    seq = max(e["seq"] for e in cut.sub.events())
    cut.daemon.start()
    unclean = cut.sub.wait_event("gateway.unclean_stop", timeout=20)
    assert unclean["data"]["left_keyed"] == []
    cut.wait_online()
    time.sleep(0.5)
    assert restarted_events(cut, "ptt.off", seq, reason="restart") == []


@pytest.mark.slow
def test_alarm_latch_and_acknowledgement_survive_a_restart(
    alarm_console: Callable[..., ConsoleUnderTest],  # noqa: F811 (the fixture imported above)
) -> None:
    cut = alarm_console()
    # A latched alarm that came and went, awaiting acknowledgement.
    cut.console.set_alarm_input("generator", True)
    cut.sub.wait_event("alarm.raised", source_id="generator")
    cut.console.set_alarm_input("generator", False)
    cut.sub.wait_event("alarm.restored", source_id="generator")
    # An active alarm already acknowledged.
    cut.console.set_alarm_input("door", True)
    cut.sub.wait_event("alarm.raised", source_id="door")
    assert ack(cut, "door")["data"]["acknowledged"] is True
    cut.daemon.signal(signal.SIGKILL)
    cut.daemon.wait()
    seq = max(e["seq"] for e in cut.sub.events())
    cut.daemon.start()
    wait_for(lambda: restarted_events(cut, "gateway.started", seq), 20, "restart")
    generator = cut.wait_state("generator", scope="alarms", module_online=True, timeout=20)
    assert generator["state"] == "active" and generator["acknowledged"] is False
    door = cut.wait_state("door", scope="alarms", module_online=True, timeout=20)
    assert door["state"] == "active" and door["acknowledged"] is True
    time.sleep(0.5)
    after = [e for e in cut.sub.events() if e["seq"] > seq and e["source"] == "alarm"]
    assert after == [], "a restart repeated alarm events: " + str([e["type"] for e in after])
    # The latch still needs its acknowledgement, and then clears.
    assert ack(cut, "generator")["status"] == "ok"
    cut.sub.wait_event("alarm.cleared", source_id="generator")
    cut.console.set_alarm_input("door", False)
    cut.sub.wait_event("alarm.cleared", source_id="door")
    assert alarm_events(cut, "door")[-1] == "alarm.cleared"
