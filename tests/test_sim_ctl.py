"""`python -m hw_sim.ctl`, the README's fault-injection command, against a running simulator's
control port (real TCP, real simulated devices; no daemon needed)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config import load_config
from gateway.radios import KINDS
from gateway.radios.cm108 import Cm108RadioSection
from gateway.radios.serial import SerialRadioSection
from hw_sim import ctl
from hw_sim.cm108 import SimCM108
from hw_sim.console import RADIO_SIMULATORS, ControlServer, SerialSimRadio, SimConsole
from hw_sim.resolve import SimPortError, config_text
from hw_sim.serial_radio import SimulatedSerialRadio
from tests.mqtt_tools import ROOT, Broker, free_port
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
    console = SimConsole(load_config(path), free_ports=True)
    console.start()
    server = ControlServer(console, 0)
    server.start()
    yield console, server.port
    server.stop()
    console.stop()


def run(port: int, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code = ctl.main([*args, "--port", str(port)])
    return code, json.loads(capsys.readouterr().out)


def test_readme_commands_reach_the_devices(
    control: tuple[SimConsole, int], capsys: pytest.CaptureFixture[str]
) -> None:
    console, port = control
    assert run(port, capsys, "fire", "carrier", "on") == (
        0,
        {"ok": True, "device": "fire", "keyed": False},
    )
    fire = console.radios["fire"]
    assert isinstance(fire, SerialSimRadio)
    assert fire.sim.state().cts is True
    code, answer = run(port, capsys, "io1", "input", "on", "--channel", "3")
    assert code == 0 and console.modules["io1"].input(3) is True
    assert run(port, capsys, "door", "input", "on")[0] == 0
    assert console.modules["io1"].input(0) is True
    assert run(port, capsys, "bus", "unplug")[0] == 0
    code, answer = run(port, capsys, "-", "list")
    assert code == 0 and "fire" in answer["radios"] and answer["alarms"] == ["door"]


def test_unknown_action_is_answered_with_the_known_ones(
    control: tuple[SimConsole, int], capsys: pytest.CaptureFixture[str]
) -> None:
    _, port = control
    code, answer = run(port, capsys, "fire", "explode")
    assert code == 1 and not answer["ok"]
    assert "carrier" in answer["error"] and "unplug" in answer["error"]


def test_every_radio_kind_says_how_it_is_simulated() -> None:
    """A kind added to the gateway's registry must get an entry (a simulator, or None for a
    real peer): the console dispatches by kind, not by section class."""
    assert set(RADIO_SIMULATORS) == set(KINDS)


@pytest.mark.parametrize("simulator", [SimulatedSerialRadio, SimCM108])
def test_both_radio_simulators_name_their_faults_alike(simulator: type) -> None:
    """The control port's radio actions (carrier, cos_stuck, cos_flap, ptt_no_follow,
    unplug, replug) are the same methods on either simulator."""
    faults = (
        "set_carrier",
        "set_cos_stuck",
        "set_cos_flap",
        "set_ptt_no_follow",
        "unplug",
        "replug",
    )
    for name in faults:
        assert callable(getattr(simulator, name, None)), name


def test_a_rigctld_channel_gets_no_simulated_radio(tmp_path: Path, broker: Broker) -> None:
    _, text = channel_config(tmp_path, broker)
    text += """
[channels.hf]
name = "HF link"

[channels.hf.radio]
kind = "rigctld"
port = 4532
"""
    path = tmp_path / "rigctld.toml"
    path.write_text(text)
    console = SimConsole(load_config(path), free_ports=True)
    assert sorted(console.radios) == ["ems", "fire", "police"]


def test_unreachable_simulator(capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl.main(["fire", "carrier", "on", "--port", str(free_port())]) == 1
    assert "cannot reach the simulator" in capsys.readouterr().err


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port someone else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_free_ports_serve_whatever_the_config_says(
    tmp_path: Path, broker: Broker, busy_port: int
) -> None:
    """With free_ports the config's ports do not matter (here fire's and police's are taken):
    the devices get ports of their own, and the config written with them loads and names
    them."""
    _, text = channel_config(tmp_path, broker)
    fire_port = re.findall(r"rfc2217://127\.0\.0\.1:(\d+)", text)[0]
    usb_port = re.findall(r"sim://127\.0\.0\.1:(\d+)", text)[0]
    path = tmp_path / "busy.toml"
    path.write_text(
        text.replace(f":{fire_port}", f":{busy_port}").replace(f":{usb_port}", f":{busy_port}")
    )
    console = SimConsole(load_config(path), free_ports=True)
    console.start()
    try:
        ports = console.ports
        assert sorted(key[1] for key in ports) == ["ems", "fire", "police"]
        assert busy_port not in ports.values()
        resolved = tmp_path / "resolved.toml"
        resolved.write_text(config_text(load_config(path), ports=ports))
        config = load_config(resolved)
        fire = config.channels["fire"].radio
        assert isinstance(fire, SerialRadioSection)
        assert fire.url == f"rfc2217://127.0.0.1:{ports[('channels', 'fire', 'radio', 'url')]}"
        police = config.channels["police"].radio
        assert isinstance(police, Cm108RadioSection)
        assert police.usb_backend is not None and police.usb_backend.endswith(
            f":{ports[('channels', 'police', 'radio', 'usb_backend')]}"
        )
        for port in ports.values():
            socket.create_connection(("127.0.0.1", port), 2).close()
    finally:
        console.stop()


def test_a_busy_pinned_port_is_named_and_nothing_stays_bound(
    tmp_path: Path, broker: Broker, busy_port: int
) -> None:
    _, text = channel_config(tmp_path, broker)
    fire_port, ems_port = map(int, re.findall(r"rfc2217://127\.0\.0\.1:(\d+)", text))
    path = tmp_path / "pinned.toml"
    path.write_text(text.replace(f":{ems_port}", f":{busy_port}"))
    console = SimConsole(load_config(path))
    with pytest.raises(SimPortError) as caught:
        console.start()
    message = str(caught.value)
    assert message == (
        f"cannot serve the RFC 2217 serial radio of ems on 127.0.0.1:{busy_port} "
        "(channels.ems.radio.url): address in use (another simulator or demo still "
        "running?); stop it, or let the simulator pick free ports (--free-ports)"
    )
    # What started before the failure (fire's port) was stopped again.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", fire_port), 2)


def test_standalone_simulator_says_how_to_run_the_daemon(
    tmp_path: Path, broker: Broker, busy_port: int
) -> None:
    """`python -m hw_sim`: free ports, the config for the daemon, the ctl's port; and a
    busy control port is one line too."""
    _, text = channel_config(tmp_path, broker)
    path = tmp_path / "sim.toml"
    path.write_text(text)
    command = [sys.executable, "-m", "hw_sim", "-c", str(path)]
    busy = subprocess.run(
        [*command, "--control-port", str(busy_port), "--free-ports", "--write-config", "x"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert busy.returncode == 1
    assert busy.stderr.strip() == (
        f"hw_sim: cannot serve the simulator's control port on 127.0.0.1:{busy_port} "
        "(--control-port): address in use (another simulator or demo still running?); stop "
        "it, or let the simulator pick free ports (--free-ports)"
    )
    written = tmp_path / "for-the-daemon.toml"
    sim = subprocess.Popen(
        [*command, "--free-ports", "--write-config", str(written)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    try:
        assert sim.stdout is not None
        lines = [sim.stdout.readline() for _ in range(3)]
        assert lines[0].startswith("[sim] serving fire, ems, police; control port ")
        port = int(lines[0].rsplit(" ", 1)[1])
        hint = f"python -m hw_sim.ctl --port {port} DEVICE ACTION [VALUE]"
        assert lines[1] == f"[sim] fault injection: {hint}\n"
        assert lines[2] == f"[sim] the daemon on these devices: consolegw run -c {written}\n"
        assert load_config(written).gateway.state_dir == load_config(path).gateway.state_dir
        assert ctl.main(["fire", "carrier", "on", "--port", str(port)]) == 0
    finally:
        sim.terminate()
        assert sim.wait(timeout=20) == 0
