"""The rigctld radio kind through the whole daemon: a channel keyed over MQTT drives Debian's
real rigctld (dummy rig), its PTT read back, its loss a fault and its return a recovery."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.drivers.test_rigctld import Rigctld, rig_ptt
from tests.mqtt_tools import Broker, Daemon, Subscriber, wait_for

pytestmark = [pytest.mark.slow]


def test_a_rigctld_channel_keys_reads_back_and_survives_rigctld(
    tmp_path: Path,
    broker: Broker,
    daemon_factory: Callable[..., Daemon],
    subscriber_factory: Callable[..., Subscriber],
) -> None:
    rig = Rigctld(tmp_path).start()
    gid = "gw" + uuid.uuid4().hex[:8]
    sub = subscriber_factory([f"consolegw/{gid}/#"])
    daemon = daemon_factory(
        f"""
[gateway]
id = "{gid}"
state_dir = "{tmp_path}/state"

[mqtt]
url = "{broker.url}"

[channels.hf.radio]
kind = "rigctld"
port = {rig.port}
"""
    )
    daemon.start()
    try:

        def state() -> dict[str, Any] | None:
            found = sub.on("/channels/hf/state")
            return found[-1].json() if found else None

        wait_for(lambda: (s := state()) and s["device"] == "online", 20, "hf online")
        answer = sub.request(f"consolegw/{gid}/channels/hf/request/ptt", {"state": "on"})
        assert answer["status"] == "ok" and answer["data"]["ptt"] is True
        assert answer["data"]["ptt_readback"] is True
        assert rig_ptt(rig.port) == "1"
        sub.wait_event("ptt.on", source_id="hf")
        rig.signal(signal.SIGKILL)  # rigctld dies while the radio is keyed
        lost = sub.wait_event("fault.raised", fault="device_lost", source_id="hf")
        assert "rigctld" in lost["data"]["message"] or str(rig.port) in lost["data"]["message"]
        sub.wait_event("ptt.off", source_id="hf", reason="device_lost")
        rig.restart()
        sub.wait_event("fault.cleared", fault="device_lost", source_id="hf", timeout=20)
        assert rig_ptt(rig.port) == "0", "a reopened radio starts unkeyed"
        again = sub.request(f"consolegw/{gid}/channels/hf/request/ptt", {"state": "on"})
        assert again["data"]["ptt"] is True and rig_ptt(rig.port) == "1"
        off = sub.request(f"consolegw/{gid}/channels/hf/request/ptt", {"state": "off"})
        assert off["data"]["ptt"] is False and rig_ptt(rig.port) == "0"
        assert "Traceback" not in daemon.log()
    finally:
        daemon.stop()
        rig.stop()
