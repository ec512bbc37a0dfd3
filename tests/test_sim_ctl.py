"""`python -m hw_sim.ctl`, the README's fault-injection command, against a running simulator's
control port (real TCP, real simulated devices; no daemon needed)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.config import load_config
from hw_sim import ctl
from hw_sim.console import ControlServer, SimConsole
from tests.mqtt_tools import Broker, free_port
from tests.sim_tools import channel_config

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:serial.rfc2217")


@pytest.fixture
def control(tmp_path: Path, broker: Broker) -> Iterator[tuple[SimConsole, int]]:
    _, text = channel_config(tmp_path, broker)
    text += f"""
[modbus.links.bus]
host = "127.0.0.1"
port = {free_port()}

[modbus.modules.io1]
link = "bus"
device_id = 1
preset = "generic"

[alarms.door]
module = "io1"
channel = 0
name = "Rear door"
"""
    path = tmp_path / "sim.toml"
    path.write_text(text)
    console = SimConsole(load_config(path))
    console.start()
    server = ControlServer(console, 0)
    server.start()
    yield console, server.port
    server.stop()
    console.stop()


def run(port: int, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    code = ctl.main([*args, "--port", str(port)])
    return code, json.loads(capsys.readouterr().out)


def test_readme_commands_reach_the_devices(control, capsys):
    console, port = control
    assert run(port, capsys, "fire", "carrier", "on") == (
        0,
        {"ok": True, "device": "fire", "keyed": False},
    )
    assert console.radios["fire"].sim.state().cts is True
    code, answer = run(port, capsys, "io1", "input", "on", "--channel", "3")
    assert code == 0 and console.modules["io1"].input(3) is True
    assert run(port, capsys, "door", "input", "on")[0] == 0
    assert console.modules["io1"].input(0) is True
    assert run(port, capsys, "bus", "unplug")[0] == 0
    code, answer = run(port, capsys, "-", "list")
    assert code == 0 and "fire" in answer["radios"] and answer["alarms"] == ["door"]


def test_unknown_action_is_answered_with_the_known_ones(control, capsys):
    _, port = control
    code, answer = run(port, capsys, "fire", "explode")
    assert code == 1 and not answer["ok"]
    assert "carrier" in answer["error"] and "unplug" in answer["error"]


def test_unreachable_simulator(capsys):
    assert ctl.main(["fire", "carrier", "on", "--port", str(free_port())]) == 1
    assert "cannot reach the simulator" in capsys.readouterr().err
