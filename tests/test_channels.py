"""Radio channels end to end: MQTT request -> daemon -> real driver -> simulated radio."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

from tests.mqtt_tools import wait_for
from tests.sim_tools import ConsoleUnderTest


def test_ptt_keys_and_unkeys_serial_radio(console_factory: Callable[..., ConsoleUnderTest]) -> None:
    cut = console_factory()
    reply = cut.ptt("fire", "on", transaction="tx-1")
    assert reply["status"] == "ok" and reply["transaction"] == "tx-1"
    assert reply["data"]["ptt"] is True and reply["data"]["ptt_readback"] is True
    assert cut.serial("fire").keyed
    on = cut.sub.wait_event("ptt.on", source_id="fire")
    assert on["data"]["requested_by"] == "tx-1"
    cut.wait_state("fire", state="transmitting", ptt=True)
    assert not cut.serial("ems").keyed

    reply = cut.ptt("fire", "off")
    assert reply["status"] == "ok" and reply["data"]["ptt"] is False
    assert not cut.serial("fire").keyed
    assert cut.sub.wait_event("ptt.off", source_id="fire")["data"]["reason"] == "request"
    cut.wait_state("fire", state="idle", ptt=False)


def test_ptt_keys_cm108_radio(console_factory: Callable[..., ConsoleUnderTest]) -> None:
    cut = console_factory()
    reply = cut.ptt("police", "on")
    assert reply["status"] == "ok" and reply["data"]["ptt"] is True
    # A CM108 cannot read its GPIO output back; the state says so.
    assert reply["data"]["ptt_readback"] is False
    assert cut.usb("police").keyed
    assert cut.ptt("police", "off")["data"]["ptt"] is False
    assert not cut.usb("police").keyed


def test_never_keyed_at_open(console_factory: Callable[..., ConsoleUnderTest]) -> None:
    cut = console_factory()
    for channel in ("fire", "ems"):
        keyed = [e for e in cut.serial(channel).sim.events(name="keyed") if e.value]
        assert keyed == [], f"{channel} was keyed during start-up: {keyed}"
    assert not any(change.keyed for change in cut.usb("police").sim.ptt_log())
    for channel in ("fire", "ems", "police"):
        assert cut.channel_state(channel)["ptt"] is False


def test_bad_ptt_requests(console_factory: Callable[..., ConsoleUnderTest]) -> None:
    cut = console_factory()
    wrong_type = cut.ptt("fire", "maybe")
    assert wrong_type["status"] == "error" and "state" in wrong_type["error"]
    negative = cut.ptt("fire", "on", duration_s=-3)
    assert negative["status"] == "error" and "duration_s" in negative["error"]
    assert not cut.serial("fire").keyed


def test_time_out_timer_unkeys_and_holds_until_released(
    console_factory: Callable[..., ConsoleUnderTest],
) -> None:
    cut = console_factory(fire="tx_timeout_s = 1.5\nmax_lease_s = 1.0")
    assert cut.ptt("fire", "on")["status"] == "ok"
    started = time.monotonic()
    # A requester that keeps renewing its lease cannot hold the transmitter past the timer.
    while cut.serial("fire").keyed and time.monotonic() - started < 10:
        cut.ptt("fire", "on")
        time.sleep(0.2)
    assert not cut.serial("fire").keyed
    assert time.monotonic() - started < 5
    fault = cut.sub.wait_event("fault.raised", fault="stuck_ptt", source_id="fire")
    assert "time-out" in fault["data"]["message"]
    assert cut.sub.wait_event("ptt.off", source_id="fire")["data"]["reason"] == "timeout"
    refused = cut.ptt("fire", "on")
    assert refused["status"] == "error" and "time-out" in refused["error"]
    assert not cut.serial("fire").keyed
    assert cut.ptt("fire", "off")["status"] == "ok"
    cut.sub.wait_event("fault.cleared", fault="stuck_ptt", source_id="fire")
    assert cut.ptt("fire", "on")["data"]["ptt"] is True


def test_lease_expires_when_the_requester_vanishes(
    console_factory: Callable[..., ConsoleUnderTest],
) -> None:
    cut = console_factory()
    reply = cut.ptt("ems", "on", duration_s=0.5)
    assert reply["data"]["lease_s"] == 0.5 and cut.serial("ems").keyed
    off = cut.sub.wait_event("ptt.off", source_id="ems", timeout=5)
    assert off["data"]["reason"] == "lease_expired"
    assert not cut.serial("ems").keyed


def test_lease_is_capped_by_max_lease(console_factory: Callable[..., ConsoleUnderTest]) -> None:
    cut = console_factory(ems="max_lease_s = 0.5")
    assert cut.ptt("ems", "on", duration_s=3600)["data"]["lease_s"] == 0.5
    cut.sub.wait_event("ptt.off", source_id="ems", timeout=5)


def test_busy_channel_lockout(console_factory: Callable[..., ConsoleUnderTest]) -> None:
    cut = console_factory(fire="busy_lockout = true")
    cut.serial("fire").carrier(True)
    cut.sub.wait_event("cos.on", source_id="fire")
    cut.wait_state("fire", state="receiving", cos=True)
    refused = cut.ptt("fire", "on")
    assert refused["status"] == "error" and "busy" in refused["error"]
    assert not cut.serial("fire").keyed
    # Without lockout the same carrier does not stop keying: state "both".
    cut.serial("ems").carrier(True)
    cut.sub.wait_event("cos.on", source_id="ems")
    assert cut.ptt("ems", "on")["status"] == "ok"
    cut.wait_state("ems", state="both")


def test_cos_stuck_fault_raised_and_cleared(
    console_factory: Callable[..., ConsoleUnderTest],
) -> None:
    cut = console_factory(fire="cos_stuck_s = 1.0")
    cut.serial("fire").cos_stuck(True)
    fault = cut.sub.wait_event("fault.raised", fault="cos_stuck", source_id="fire")
    assert "carrier present" in fault["data"]["message"]
    cut.wait_state("fire", state="fault")
    cut.serial("fire").cos_stuck(False)
    cut.sub.wait_event("fault.cleared", fault="cos_stuck", source_id="fire")
    cut.wait_state("fire", state="idle", faults=[])


def test_cos_flapping_fault_raised_and_cleared(
    console_factory: Callable[..., ConsoleUnderTest],
) -> None:
    cut = console_factory(police="cos_flap_max = 6\ncos_flap_window_s = 1.0")
    cut.usb("police").cos_flap(8)
    cut.sub.wait_event("fault.raised", fault="cos_flapping", source_id="police")
    cut.usb("police").cos_flap(None)
    cut.usb("police").carrier(False)
    cut.sub.wait_event("fault.cleared", fault="cos_flapping", source_id="police")
    # One fault for the whole episode, not one per transition.
    raised = [e for e in cut.sub.events("fault.raised") if e["data"]["fault"] == "cos_flapping"]
    assert len(raised) == 1


def test_ptt_readback_mismatch(console_factory: Callable[..., ConsoleUnderTest]) -> None:
    cut = console_factory()
    cut.serial("fire").ptt_no_follow(True)  # the PTT line no longer follows what we set
    reply = cut.ptt("fire", "on")
    assert reply["status"] == "ok"
    assert reply["data"]["ptt"] is False, "reported PTT must be the read-back, not the command"
    fault = cut.sub.wait_event("fault.raised", fault="ptt_mismatch", source_id="fire")
    assert "reads back unkeyed" in fault["data"]["message"]
    assert not cut.serial("fire").keyed
    cut.serial("fire").ptt_no_follow(False)
    # The gateway never re-keys on its own; releasing PTT makes command and line agree.
    assert cut.ptt("fire", "off")["data"]["ptt"] is False
    cut.sub.wait_event("fault.cleared", fault="ptt_mismatch", source_id="fire")
    assert cut.ptt("fire", "on")["data"]["ptt"] is True
    assert cut.serial("fire").keyed


def test_ptt_on_a_slow_serial_server(console_factory: Callable[..., ConsoleUnderTest]) -> None:
    """Answers held 0.3 s by the server, so a COS poll is always waiting for one. A PTT
    command goes out without waiting for it, and that poll's read-back, older than the
    command, must not be taken for a PTT line that does not follow (ptt_mismatch)."""
    cut = console_factory()
    cut.serial("fire").sim.set_answer_delay(0.3)
    for state, keyed in (("on", True), ("off", False), ("on", True), ("off", False)):
        reply = cut.ptt("fire", state)
        assert reply["status"] == "ok" and reply["data"]["ptt"] is keyed
        assert cut.serial("fire").keyed is keyed
        time.sleep(0.5)  # past the read-back grace: a stale read-back would now raise
    assert not [e for e in cut.sub.events("fault.raised") if e["data"]["fault"] == "ptt_mismatch"]
    assert not cut.sub.events("fault.raised"), cut.sub.events("fault.raised")


def test_unplug_while_keyed_then_replug(console_factory: Callable[..., ConsoleUnderTest]) -> None:
    cut = console_factory()
    assert cut.ptt("fire", "on")["data"]["ptt"] is True
    cut.serial("fire").unplug()
    lost = cut.sub.wait_event("fault.raised", fault="device_lost", source_id="fire")
    assert "lost" in lost["data"]["message"]
    assert lost["data"]["message"].endswith("it was transmitting: PTT off")
    assert cut.sub.wait_event("ptt.off", source_id="fire")["data"]["reason"] == "device_lost"
    cut.wait_state("fire", device="offline", state="fault", ptt=False)
    for _ in range(2):  # a dispatcher pressing PTT on the dead radio
        refused = cut.ptt("fire", "on")
        assert refused["status"] == "error" and "offline" in refused["error"]
    # Other channels carry on.
    assert cut.ptt("ems", "on")["data"]["ptt"] is True
    cut.ptt("ems", "off")

    time.sleep(1.5)  # several reopen attempts while unplugged: logged once
    away = cut.channel_state("fire")
    assert away["lost_since"] is not None and away["attempts"] >= 2
    assert away["last_error"], away
    cut.serial("fire").replug()
    cleared = cut.sub.wait_event("fault.cleared", fault="device_lost", source_id="fire", timeout=15)
    assert "radio interface back (after" in cleared["data"]["message"]
    assert "2 requests refused meanwhile" in cleared["data"]["message"]
    state = cut.wait_state("fire", device="online", state="idle")
    assert state["ptt"] is False and not cut.serial("fire").keyed
    assert state["lost_since"] is None and state["attempts"] == 0
    raised = [e for e in cut.sub.events("fault.raised") if e["data"]["fault"] == "device_lost"]
    assert len(raised) == 1
    told = "\n".join(ln for ln in cut.daemon.log().splitlines() if " DEBUG " not in ln)
    assert told.count("FAULT device_lost") == 1
    # The loss is one line: neither PTT's drop nor the refusals while lost add their own.
    assert "PTT off (device_lost)" not in told and "radio interface offline" not in told


def test_usb_interface_unplug_and_replug(console_factory: Callable[..., ConsoleUnderTest]) -> None:
    cut = console_factory()
    cut.usb("police").unplug()
    cut.sub.wait_event("fault.raised", fault="device_lost", source_id="police")
    cut.usb("police").replug()
    cut.sub.wait_event("fault.cleared", fault="device_lost", source_id="police", timeout=15)
    assert cut.ptt("police", "on")["data"]["ptt"] is True
    assert cut.usb("police").keyed
    cut.ptt("police", "off")


def test_sigterm_while_keyed_unkeys_everything(
    console_factory: Callable[..., ConsoleUnderTest],
) -> None:
    cut = console_factory()
    for channel in ("fire", "ems", "police"):
        assert cut.ptt(channel, "on")["data"]["ptt"] is True
    cut.daemon.signal(signal.SIGTERM)
    assert cut.daemon.wait() == 0
    assert not cut.serial("fire").keyed and not cut.serial("ems").keyed
    assert not cut.usb("police").keyed
    stops = {e["source_id"] for e in cut.sub.events("ptt.off") if e["data"]["reason"] == "stop"}
    assert stops == {"fire", "ems", "police"}, "every release reaches MQTT before offline"


def test_sigkill_while_keyed(console_factory: Callable[..., ConsoleUnderTest]) -> None:
    """SIGKILL runs no code of ours. What unkeys the radio then is the transport:

    - RFC 2217: the kernel closes the TCP connection of the dead process; the serial server
      sees the drop and closes its port, and a closed port's RTS/DTR fall (HUPCL). The
      simulator models that, so a normally wired radio unkeys.
    - A local serial port: the kernel closes the fd and, with HUPCL (which the driver keeps
      set for normal polarity), drops RTS and DTR. Not testable here without a UART.
    - CM108: a GPIO output keeps its level when the process dies; nothing in USB resets it.
      The radio stays keyed until the daemon restarts (systemd Restart=on-failure) and its
      first act on open is to unkey. The test shows both halves.
    """
    cut = console_factory()
    assert cut.ptt("fire", "on")["data"]["ptt"] is True
    assert cut.ptt("police", "on")["data"]["ptt"] is True
    cut.daemon.signal(signal.SIGKILL)
    cut.daemon.wait()
    wait_for(lambda: not cut.serial("fire").keyed, timeout=5, what="serial unkeyed by the drop")
    assert not cut.serial("fire").sim.state().connected
    assert cut.usb("police").keyed, "a CM108 GPIO holds its level: the hazard is real"
    started = time.monotonic()
    cut.daemon.start()
    wait_for(lambda: not cut.usb("police").keyed, timeout=15, what="CM108 unkeyed on restart")
    assert time.monotonic() - started < 15


def test_keying_reports_the_request_as_the_reason_not_the_poll(
    console_factory: Callable[..., ConsoleUnderTest],
) -> None:
    # A poll can see a command's effect on the line before the command's own read-back
    # does; the change is still the request's.
    cut = console_factory()
    for _ in range(15):
        assert cut.ptt("fire", "on")["status"] == "ok"
        time.sleep(0.05)
        assert cut.ptt("fire", "off")["status"] == "ok"
        time.sleep(0.05)
    time.sleep(0.3)
    changes = [e for e in cut.sub.events() if e["type"] in ("ptt.on", "ptt.off")]
    assert len(changes) == 30
    assert {e["data"]["reason"] for e in changes} == {"request"}, [
        e["data"]["reason"] for e in changes
    ]
