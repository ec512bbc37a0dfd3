"""`consolegw diag` against simulated hardware served in-process (no daemon): the checks go
through the shipped drivers over RFC 2217, the USB simulator and Modbus TCP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.cli import main
from gateway.config import Config, load_config
from gateway.tools.diag import CHECKS, CheckResult, DiagContext, register_check, run_diag
from hw_sim.console import Cm108SimRadio, SerialSimRadio, SimConsole
from tests.mqtt_tools import Broker
from tests.tools.helpers import tools_config

KEY = "0.3"


@pytest.fixture
def sim(tmp_path: Path, broker: Broker) -> Iterator[tuple[Path, Config, SimConsole]]:
    gid, text = tools_config(tmp_path, broker)
    path = tmp_path / f"{gid}.toml"
    path.write_text(text)
    config = load_config(path)
    console = SimConsole(config)
    console.start()
    yield path, config, console
    console.stop()


def _diag(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main(["diag", "--json", "--key-seconds", KEY, *argv])
    out = capsys.readouterr().out
    return code, json.loads(out)


def _results(report: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["check"], r["target"]): r for r in report["checks"]}


def _serial(console: SimConsole, channel: str) -> SerialSimRadio:
    radio = console.radios[channel]
    assert isinstance(radio, SerialSimRadio)
    return radio


def _usb(console: SimConsole, channel: str) -> Cm108SimRadio:
    radio = console.radios[channel]
    assert isinstance(radio, Cm108SimRadio)
    return radio


def _keyed_history(console: SimConsole, channel: str) -> list[bool]:
    return [bool(e.value) for e in _serial(console, channel).sim.events(name="keyed")]


def test_healthy_console_passes(sim, capsys):
    path, _, console = sim
    code, report = _diag(capsys, "-c", str(path), "--yes")
    results = _results(report)
    assert code == 0, report["checks"]
    assert report["result"] == "PASS" and report["summary"]["FAIL"] == 0
    assert results[("daemon", "-")]["status"] == "PASS"
    for channel in ("fire", "ems"):
        result = results[("ptt", channel)]
        assert result["status"] == "PASS", result
        assert result["data"]["readback"] is True and result["data"]["keyup_ms"] is not None
        assert result["data"]["cos_during"] is False
        # The simulated radio really keyed, once, and is unkeyed again.
        assert _keyed_history(console, channel) == [True, False]
    police = results[("ptt", "police")]
    assert police["status"] == "PASS" and "no PTT read-back" in police["detail"]
    assert [c.keyed for c in _usb(console, "police").sim.ptt_log()] == [True, False]
    assert results[("modbus", "io1")]["status"] == "PASS"

    inventory = report["inventory"]
    (usb,) = [d for d in inventory["usb_interfaces"] if d["channels"] == ["police"]]
    assert usb["hid_interface"] is True and usb["model"].startswith("CM1")
    assert usb["serial_number"].startswith("SIM-") and usb["port_path"]
    remote = {p["device"]: p for p in inventory["serial_ports"] if p["device"].startswith("rfc")}
    assert sorted(c for p in remote.values() for c in p["channels"]) == ["ems", "fire"]
    assert [m["module"] for m in inventory["modbus_modules"]] == ["io1"]
    assert inventory["modbus_modules"][0]["alarms"] == ["door"]


def test_faults_fail_with_a_reason(sim, capsys):
    path, _, console = sim
    _serial(console, "fire").unplug()
    _serial(console, "ems").ptt_no_follow(True)  # the PTT line no longer follows
    console.modules["io1"].set_silent(True)
    code, report = _diag(capsys, "-c", str(path), "--yes")
    results = _results(report)
    assert code == 1 and report["result"] == "FAIL"
    assert results[("ptt", "fire")]["status"] == "FAIL"
    assert "cannot open" in results[("ptt", "fire")]["detail"]
    assert results[("ptt", "ems")]["status"] == "FAIL"
    assert "never read back keyed" in results[("ptt", "ems")]["detail"]
    assert not _serial(console, "ems").keyed
    assert results[("ptt", "police")]["status"] == "PASS"
    assert results[("modbus", "io1")]["status"] == "FAIL"
    assert "no valid answer" in results[("modbus", "io1")]["detail"]
    assert report["summary"] == {"PASS": 2, "FAIL": 3, "SKIP": 0}


def test_carrier_present_is_not_keyed_over(sim, capsys):
    path, _, console = sim
    _serial(console, "fire").carrier(True)
    code, report = _diag(capsys, "-c", str(path), "--yes", "--checks", "ptt", "--only", "fire")
    result = _results(report)[("ptt", "fire")]
    assert code == 0 and result["status"] == "SKIP" and "carrier present" in result["detail"]
    assert _keyed_history(console, "fire") == []
    assert ("ptt", "ems") not in _results(report)  # --only


def test_nothing_keyed_without_confirmation(sim, capsys):
    path, _, console = sim
    # stdin is not a terminal under pytest and --yes is absent: keying is refused.
    code, report = _diag(capsys, "-c", str(path))
    results = _results(report)
    assert code == 0
    assert results[("ptt", "-")]["status"] == "SKIP"
    assert "not confirmed" in results[("ptt", "-")]["detail"]
    assert results[("modbus", "io1")]["status"] == "PASS"
    assert _keyed_history(console, "fire") == [] and _keyed_history(console, "ems") == []
    assert _usb(console, "police").sim.ptt_log() == []


def test_running_daemon_blocks_hardware_checks(sim, broker, capsys):
    path, config, console = sim
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    topic = f"{config.prefix}/status"
    online = json.dumps({"state": "online", "session": 7, "ts": "2026-01-01T00:00:00.000Z"})
    client.publish(topic, online, qos=1, retain=True).wait_for_publish(5)
    try:
        code, report = _diag(capsys, "-c", str(path), "--yes")
    finally:
        client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
        client.loop_stop()
        client.disconnect()
    results = _results(report)
    assert code == 1
    assert results[("daemon", "-")]["status"] == "FAIL"
    assert "daemon is online" in results[("daemon", "-")]["detail"]
    assert results[("ptt", "-")]["status"] == "SKIP"
    assert results[("modbus", "-")]["status"] == "SKIP"
    assert _keyed_history(console, "fire") == []


def test_usage_and_config_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["diag", "--checks", "nonsense"])
    assert exc.value.code == 2
    assert "unknown check(s) nonsense" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["diag", "--key-seconds", "0"])
    assert exc.value.code == 2
    bad = tmp_path / "bad.toml"
    bad.write_text("[channels.x]\ntx_timeout_s = -1\n")
    assert main(["diag", "-c", str(bad)]) == 2
    assert "channels.x.tx_timeout_s" in capsys.readouterr().err


def test_inventory_without_config_and_human_output(capsys):
    assert main(["diag"]) == 0
    out = capsys.readouterr().out
    assert "Serial ports" in out and "USB radio interfaces" in out and "Audio devices" in out
    assert "nothing checked" in out


async def test_registry_takes_new_checks(sim):
    """The audio work adds tone/TTY loop-back checks this way; they run in order, and a
    check that keys transmitters waits for the technician's go-ahead."""
    _, config, _ = sim
    seen: list[str] = []

    async def loopback(ctx: DiagContext) -> list[CheckResult]:
        seen.append(f"confirmed={ctx.keying_confirmed}")
        return [CheckResult("loopback_test", "fire", "PASS", "tone measured at -20 dBFS")]

    register_check("loopback_test", "test only", loopback, keys_transmitters=True)
    try:
        questions: list[str] = []
        report = await run_diag(
            config=config,
            checks=["loopback_test"],
            confirm=lambda q: questions.append(q) is None,
        )
    finally:
        del CHECKS["loopback_test"]
    assert [r.check for r in report.results] == ["daemon", "loopback_test"]
    assert seen == ["confirmed=True"] and len(questions) == 1 and "fire" in questions[0]
    with pytest.raises(ValueError, match="already registered"):
        register_check("ptt", "again", loopback)
