"""Carrier the hardware has not reported is unknown, end to end (issue #12).

The daemon runs on simulated RFC 2217 radios in the modes of servers that never answer a
modem-state poll: "changes" (nothing until a line changes, so COS stays unknown) and "push"
(ser2net's behaviour: the state in answer to the driver's modem-state mask). Unknown COS is
`cos: null` with one `cos_unknown` fault, no cos events, busy for busy lockout unless
`busy_when_cos_unknown = false`, and no cos_stuck judgement; the first report clears it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from hw_sim.serial_radio import SimulatedSerialRadio
from tests.mqtt_tools import Broker, Daemon, Subscriber
from tests.radio_gateway import serial_channel, start_radio_gateway


def test_unknown_carrier_is_null_with_a_fault_and_busy(
    tmp_path: Path,
    broker: Broker,
    daemon_factory: Callable[..., Daemon],
    subscriber_factory: Callable[..., Subscriber],
    make_sim: Callable[..., SimulatedSerialRadio],
) -> None:
    silent = make_sim(cos_line="cts", modem_notify="changes")
    lenient = make_sim(cos_line="cts", modem_notify="changes")
    pushed = make_sim(cos_line="cd", modem_notify="push")
    pushed.set_carrier(True)  # present from the start: reported in answer to the mask
    channels = (
        serial_channel("fire", silent.url, extra="busy_lockout = true\ncos_stuck_s = 1.0")
        + serial_channel(
            "ems", lenient.url, extra="busy_lockout = true\nbusy_when_cos_unknown = false"
        )
        + serial_channel("med", pushed.url, cos="cd", extra="busy_lockout = true")
        + '\n[channels.desk]\nname = "Desk"\n'  # no radio: no COS at all, nothing unknown
    )
    gw = start_radio_gateway(tmp_path, broker, daemon_factory, subscriber_factory, channels)

    fire = gw.wait_state("fire", device="online", faults=["cos_unknown"])
    assert fire["cos"] is None and fire["state"] == "fault"
    raised = gw.sub.wait_event("fault.raised", fault="cos_unknown", source_id="fire")
    message = raised["data"]["message"]
    assert silent.url in message and "has not reported the COS line" in message
    assert "busy lockout treats the channel as busy" in message
    refused = gw.ptt("fire", "on")
    assert refused["status"] == "error" and refused["code"] == "refused"
    assert "unknown" in refused["error"] and not silent.keyed

    ems = gw.wait_state("ems", device="online", faults=["cos_unknown"])
    assert ems["cos"] is None
    assert gw.ptt("ems", "on")["data"]["ptt"] is True  # busy_when_cos_unknown = false
    assert lenient.keyed
    assert gw.ptt("ems", "off")["data"]["ptt"] is False

    med = gw.wait_state("med", device="online", cos=True)
    assert med["faults"] == [] and med["state"] == "receiving"
    gw.sub.wait_event("cos.on", source_id="med")
    refused = gw.ptt("med", "on")
    assert refused["status"] == "error" and "carrier present" in refused["error"]

    desk = gw.wait_state("desk", device="none")
    assert desk["cos"] is None and desk["faults"] == []

    time.sleep(1.5)  # longer than fire's cos_stuck_s: unknown carrier is not a stuck one
    assert len(gw.faults_raised("fire", "cos_unknown")) == 1, "raised once, not per poll"
    assert gw.faults_raised("fire", "cos_stuck") == []
    assert gw.events_of("fire", "cos.on", "cos.off") == []
    assert gw.events_of("ems", "cos.on", "cos.off") == []

    # The hardware reports at last: the fault clears and carrier is judged as usual.
    silent.set_carrier(True)
    cleared = gw.sub.wait_event("fault.cleared", fault="cos_unknown", source_id="fire")
    assert "carrier on" in cleared["data"]["message"]
    gw.sub.wait_event("cos.on", source_id="fire")
    gw.wait_state("fire", cos=True)
    refused = gw.ptt("fire", "on")
    assert refused["status"] == "error" and "carrier present" in refused["error"]
    silent.set_carrier(False)
    gw.sub.wait_event("cos.off", source_id="fire")
    gw.wait_state("fire", cos=False)
    assert gw.ptt("fire", "on")["data"]["ptt"] is True
    assert silent.keyed
    assert gw.ptt("fire", "off")["data"]["ptt"] is False

    # Offline is unknown too (device_lost says why), and a reopen starts unknown again.
    lenient.set_carrier(True)
    gw.wait_state("ems", cos=True, faults=[])
    lenient.unplug()
    gw.wait_state("ems", device="offline", cos=None)
    lenient.replug()
    gw.wait_state("ems", device="online", cos=None, faults=["cos_unknown"], timeout=15)
    # Events come through the outbox, states straight: the event may trail the state.
    gw.sub.wait(lambda _: len(gw.faults_raised("ems", "cos_unknown")) == 2, 10.0, "raised again")
    assert gw.daemon.log().count("FAULT cos_unknown") == 3  # fire once, ems twice
