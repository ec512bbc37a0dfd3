"""Alarm inputs end to end: simulated IO modules over real Modbus TCP -> daemon -> MQTT."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hw_sim.console import SimConsole
from tests.mqtt_tools import Broker, free_port
from tests.sim_tools import ConsoleUnderTest, config_header

NOMINAL = "{ trouble_short = 0, normal = 2500, alarm = 3750, trouble_open = 5000 }"


def alarm_config(tmp_path: Path, broker: Broker, extra: str = "") -> tuple[str, str]:
    gid = "gw" + uuid.uuid4().hex[:8]
    return (
        gid,
        config_header(tmp_path, broker, gid)
        + f"""
[modbus.links.bus]
host = "127.0.0.1"
port = {free_port()}
timeout_s = 0.25

[modbus.modules.io1]
link = "bus"
device_id = 1
preset = "e1210"
poll_ms = 50

[modbus.modules.io2]
link = "bus"
device_id = 2
preset = "generic"
poll_ms = 50
outputs = {{ strobe = 0, bell = 1 }}

[alarms.door]
module = "io1"
channel = 0
name = "Rear door"
priority = "medium"
debounce_ms = 0

[alarms.generator]
module = "io1"
channel = 1
name = "Generator failure"
priority = "critical"
latched = true
debounce_ms = 0

[alarms.bouncy]
module = "io1"
channel = 2
debounce_ms = 400

[alarms.closed-loop]
module = "io1"
channel = 3
contact = "normally_closed"
debounce_ms = 0

[alarms.panic]
module = "io2"
kind = "supervised"
channel = 0
latched = true
debounce_ms = 0
nominal = {NOMINAL}

{extra}
""",
    )


@pytest.fixture
def alarm_console(
    tmp_path: Path, broker: Broker, start_sim_console: Callable[..., ConsoleUnderTest]
) -> Callable[..., ConsoleUnderTest]:
    def make(
        extra: str = "", before_start: Callable[[SimConsole], None] | None = None
    ) -> ConsoleUnderTest:
        gid, text = alarm_config(tmp_path, broker, extra)

        def wire(console: SimConsole) -> None:
            console.set_alarm_input("closed-loop", True)  # a healthy NC loop is closed
            if before_start is not None:
                before_start(console)

        cut = start_sim_console(gid, text, before_daemon=wire)
        for alarm in ("door", "generator", "bouncy", "closed-loop", "panic"):
            cut.wait_state(alarm, scope="alarms", module_online=True)
        return cut

    return make


def alarm_events(cut: ConsoleUnderTest, alarm: str) -> list[str]:
    return [e["type"] for e in cut.sub.events() if e["source_id"] == alarm]


def ack(cut: ConsoleUnderTest, alarm: str) -> dict[str, Any]:
    return cut.sub.request(f"{cut.prefix}/alarms/{alarm}/request/ack", {"transaction": "op-1"})


def test_momentary_alarm_raised_and_cleared(alarm_console: Callable[..., ConsoleUnderTest]) -> None:
    cut = alarm_console()
    assert cut.wait_state("door", scope="alarms")["state"] == "normal"
    cut.console.set_alarm_input("door", True)
    raised = cut.sub.wait_event("alarm.raised", source_id="door")
    assert raised["data"] == {
        "name": "Rear door",
        "priority": "medium",
        "input": "alarm",
        "latched": False,
    }
    state = cut.wait_state("door", scope="alarms", state="active")
    assert state["active_since"] is not None
    cut.console.set_alarm_input("door", False)
    cut.sub.wait_event("alarm.cleared", source_id="door")
    cut.wait_state("door", scope="alarms", state="normal")
    assert alarm_events(cut, "door") == ["alarm.raised", "alarm.cleared"]


def test_latched_alarm_stays_until_acknowledged(
    alarm_console: Callable[..., ConsoleUnderTest],
) -> None:
    cut = alarm_console()
    cut.console.set_alarm_input("generator", True)
    cut.sub.wait_event("alarm.raised", source_id="generator")
    cut.console.set_alarm_input("generator", False)
    cut.sub.wait_event("alarm.restored", source_id="generator")
    state = cut.wait_state("generator", scope="alarms", input="normal")
    assert state["state"] == "active" and not state["acknowledged"]
    reply = ack(cut, "generator")
    assert reply["status"] == "ok" and reply["transaction"] == "op-1"
    cleared = cut.sub.wait_event("alarm.cleared", source_id="generator")
    acked = cut.sub.wait_event("alarm.acknowledged", source_id="generator")
    assert acked["data"]["acknowledged_by"] == "op-1" and acked["seq"] < cleared["seq"]
    cut.wait_state("generator", scope="alarms", state="normal")
    again = ack(cut, "generator")
    assert again["status"] == "error" and "not active" in again["error"]


def test_ack_while_active_clears_on_restore(alarm_console: Callable[..., ConsoleUnderTest]) -> None:
    cut = alarm_console()
    cut.console.set_alarm_input("generator", True)
    cut.sub.wait_event("alarm.raised", source_id="generator")
    assert ack(cut, "generator")["data"]["acknowledged"] is True
    cut.wait_state("generator", scope="alarms", state="active", acknowledged=True)
    cut.console.set_alarm_input("generator", False)
    cut.sub.wait_event("alarm.cleared", source_id="generator")
    assert alarm_events(cut, "generator") == ["alarm.raised", "alarm.acknowledged", "alarm.cleared"]


def test_debounce_ignores_short_pulses(alarm_console: Callable[..., ConsoleUnderTest]) -> None:
    cut = alarm_console()
    for _ in range(3):  # 100 ms blips, shorter than the 400 ms debounce
        cut.console.set_alarm_input("bouncy", True)
        time.sleep(0.1)
        cut.console.set_alarm_input("bouncy", False)
        time.sleep(0.3)
    assert alarm_events(cut, "bouncy") == []
    cut.console.set_alarm_input("bouncy", True)
    cut.sub.wait_event("alarm.raised", source_id="bouncy")


def test_normally_closed_contact(alarm_console: Callable[..., ConsoleUnderTest]) -> None:
    cut = alarm_console()
    assert alarm_events(cut, "closed-loop") == []
    cut.console.set_alarm_input("closed-loop", False)  # the contact opens: alarm
    cut.sub.wait_event("alarm.raised", source_id="closed-loop")


def test_alarm_present_at_start_is_reported(alarm_console: Callable[..., ConsoleUnderTest]) -> None:
    cut = alarm_console(before_start=lambda console: console.set_alarm_input("door", True))
    cut.sub.wait_event("alarm.raised", source_id="door")
    cut.wait_state("door", scope="alarms", state="active")


def test_supervised_loop_trouble_and_alarm(alarm_console: Callable[..., ConsoleUnderTest]) -> None:
    cut = alarm_console()
    cut.console.set_alarm_input("panic", 5000)  # wire cut
    trouble = cut.sub.wait_event("trouble.raised", source_id="panic")
    assert trouble["data"]["trouble"] == "trouble_open"
    cut.wait_state("panic", scope="alarms", state="trouble", input="trouble_open")
    cut.console.set_alarm_input("panic", 2550)  # back to normal (within tolerance)
    cut.sub.wait_event("trouble.cleared", source_id="panic")
    cut.console.set_alarm_input("panic", 20)  # shorted
    cut.sub.wait_event("trouble.raised", source_id="panic", trouble="trouble_short")
    cut.console.set_alarm_input("panic", 3700)  # the button: alarm, not trouble
    cut.sub.wait_event("alarm.raised", source_id="panic")
    state = cut.wait_state("panic", scope="alarms", state="active")
    assert state["input"] == "alarm"
    assert [t for t in alarm_events(cut, "panic") if t.startswith("trouble")] == [
        "trouble.raised",
        "trouble.cleared",
        "trouble.raised",
        "trouble.cleared",
    ]


def test_module_offline_and_back_without_phantom_events(
    alarm_console: Callable[..., ConsoleUnderTest],
) -> None:
    cut = alarm_console()
    cut.console.set_alarm_input("generator", True)
    cut.sub.wait_event("alarm.raised", source_id="generator")
    module = cut.console.modules["io1"]
    module.set_silent(True)
    started = time.monotonic()
    offline = cut.sub.wait_event("module.offline", source_id="io1")
    assert time.monotonic() - started < 2.0, "a dead module is noticed within about a second"
    assert "no response within 0.25 s" in offline["data"]["message"]
    for alarm in ("door", "generator"):
        cut.wait_state(alarm, scope="alarms", state="unknown", module_online=False)
    cut.wait_state("io1", scope="modules", state="offline")
    # While it is away: the door opens (a real change); the generator stays in alarm.
    cut.console.set_alarm_input("door", True)
    time.sleep(0.5)
    module.set_silent(False)
    cut.sub.wait_event("module.online", source_id="io1")
    cut.sub.wait_event("alarm.raised", source_id="door")
    time.sleep(0.5)
    assert alarm_events(cut, "generator") == ["alarm.raised"], "no phantom restore or re-raise"
    assert alarm_events(cut, "door") == ["alarm.raised"]
    assert sum("OFFLINE" in ln for ln in logged(cut, "OFFLINE")) == 1


def test_dead_module_beside_a_live_one_on_the_same_link(
    alarm_console: Callable[..., ConsoleUnderTest],
) -> None:
    cut = alarm_console()
    cut.console.modules["io2"].set_silent(True)
    cut.sub.wait_event("module.offline", source_id="io2")
    # io1 on the same link still delivers alarms promptly.
    cut.console.set_alarm_input("door", True)
    started = time.monotonic()
    cut.sub.wait_event("alarm.raised", source_id="door")
    assert time.monotonic() - started < 1.5
    assert not [e for e in cut.sub.events("module.offline") if e["source_id"] == "io1"]


def test_exception_replies_take_a_module_offline_with_the_reason(
    alarm_console: Callable[..., ConsoleUnderTest],
) -> None:
    cut = alarm_console()
    cut.console.modules["io2"].set_exception(2)
    offline = cut.sub.wait_event("module.offline", source_id="io2")
    assert "ILLEGAL DATA ADDRESS" in offline["data"]["message"]
    cut.console.modules["io2"].clear_faults()
    cut.sub.wait_event("module.online", source_id="io2")


def logged(cut: ConsoleUnderTest, text: str, timeout: float = 10.0) -> list[str]:
    """The daemon's non-debug log lines once one holds `text` (a module's offline and
    back-online lines wait a moment for the other modules of its link)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [ln for ln in cut.daemon.log().splitlines() if " DEBUG " not in ln]
        if any(text in ln for ln in lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


def test_link_dropped_and_back(alarm_console: Callable[..., ConsoleUnderTest]) -> None:
    cut = alarm_console()
    cut.console.links["bus"].unplug()
    cut.sub.wait_event("module.offline", source_id="io1")
    cut.sub.wait_event("module.offline", source_id="io2")
    # Acknowledging an alarm whose module is away: its input is unknown, not "not active".
    unknown = ack(cut, "door")
    assert unknown["status"] == "error" and "is offline, the input is unknown" in unknown["error"]
    cut.console.links["bus"].replug()
    cut.sub.wait_event("module.online", source_id="io1", timeout=20)
    cut.sub.wait_event("module.online", source_id="io2", timeout=20)
    assert [e for e in cut.sub.events() if e["type"].startswith("alarm.")] == []
    # The link's loss and return are a line each, naming both modules.
    lines = logged(cut, "back online")
    offline = [ln for ln in lines if "OFFLINE" in ln]
    back = [ln for ln in lines if "back online" in ln]
    pair = ("modules io1, io2 on link bus: ", "modules io2, io1 on link bus: ")  # either first
    assert len(offline) == 1 and any(f"{p}OFFLINE" in offline[0] for p in pair), offline
    assert len(back) == 1 and any(f"{p}back online (" in back[0] for p in pair), back
    assert "io1: after" in back[0] and "io2: after" in back[0]
    assert "1 request refused meanwhile" in back[0]  # the ack, counted, not logged on its own
    assert not [ln for ln in lines if "gateway.commands" in ln and "/request/ack" in ln]


def test_set_output(alarm_console: Callable[..., ConsoleUnderTest]) -> None:
    cut = alarm_console()
    topic = f"{cut.prefix}/modules/io2/request/set_output"
    reply = cut.sub.request(topic, {"output": "bell", "state": True})
    assert reply["status"] == "ok" and reply["data"] == {"output": "bell", "state": True}
    assert cut.console.modules["io2"].output(1) is True
    assert cut.sub.request(topic, {"output": "bell", "state": False})["status"] == "ok"
    assert cut.console.modules["io2"].output(1) is False
    unknown = cut.sub.request(topic, {"output": "siren", "state": True})
    assert unknown["status"] == "error" and "no output 'siren'" in unknown["error"]
    bad = cut.sub.request(topic, {"output": "bell", "state": "loud"})
    assert bad["status"] == "error" and "state" in bad["error"]
    cut.console.modules["io2"].set_silent(True)
    dead = cut.sub.request(topic, {"output": "bell", "state": True}, timeout=15)
    assert dead["status"] == "error" and "not set" in dead["error"]


def test_a_module_that_changes_its_failure_keeps_its_cause_current(
    alarm_console: Callable[..., ConsoleUnderTest],
) -> None:
    cut = alarm_console()
    module = cut.console.modules["io2"]
    module.set_silent(True)
    cut.sub.wait_event("module.offline", source_id="io2")
    silent = cut.wait_state("io2", scope="modules", state="offline")
    assert "no response" in silent["last_error"] and silent["lost_since"] is not None
    # Still away, but now it answers with exceptions: the state and the log say so, once.
    module.set_silent(False)
    module.set_exception(4)
    state = cut.sub.wait(
        lambda _: (
            (s := cut.channel_state_of("io2", "modules"))
            and "DEVICE FAILURE" in (s["last_error"] or "")
            and s
        ),
        what="last_error updated",
    )
    assert state["state"] == "offline" and state["attempts"] >= 1
    time.sleep(0.5)
    assert cut.daemon.log().count("module io2 still lost, now:") == 1
    module.clear_faults()
    cut.sub.wait_event("module.online", source_id="io2")
    back = cut.wait_state("io2", scope="modules", state="online")
    assert back["last_error"] is None and back["lost_since"] is None and back["attempts"] == 0
    assert any("module io2: back online (after" in ln for ln in logged(cut, "back online"))
