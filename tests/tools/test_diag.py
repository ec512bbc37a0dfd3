"""`consolegw diag` against simulated hardware served in-process (no daemon): the checks go
through the shipped drivers over RFC 2217, the USB simulator, Modbus TCP and PortAudio (the
simulated sound card is a private PulseAudio server behind an ALSA device, hw_sim.audio)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
import pytest
from numpy.typing import NDArray
from paho.mqtt.enums import CallbackAPIVersion

from drivers import audio
from drivers.audio import AudioCapture, AudioPlayback
from gateway.cli import main
from gateway.config import Config, load_config
from gateway.lock import StateDirLocked, acquire
from gateway.tools.diag import (
    CHECKS,
    TONE_DBFS,
    TTY_MESSAGE,
    CheckResult,
    DiagContext,
    band_power,
    register_check,
    run_diag,
    tone_envelope,
)
from hw_sim.audio import Silence, Tone
from hw_sim.console import Cm108SimRadio, SerialSimRadio, SimConsole
from hw_sim.resolve import config_text
from tests.mqtt_tools import ROOT, Broker, free_port
from tests.sim_tools import ConsoleUnderTest
from tests.tools.helpers import tools_config, until

KEY = "0.3"


@pytest.fixture
def sim(tmp_path: Path, broker: Broker) -> Iterator[tuple[Path, Config, SimConsole]]:
    gid, text = tools_config(tmp_path, broker)
    path = tmp_path / f"{gid}.toml"
    path.write_text(text)
    console, config = _serve(path)
    yield path, config, console
    console.stop()


def _serve(path: Path) -> tuple[SimConsole, Config]:
    """The config's devices, on ports the system picks as they are bound (a port picked
    first and bound later can be taken meanwhile by another test); `path` is rewritten with
    them, for diag."""
    console = SimConsole(load_config(path), free_ports=True)
    console.start()
    path.write_text(config_text(load_config(path), ports=console.ports))
    return console, load_config(path)


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


def test_healthy_console_passes(
    sim: tuple[Path, Config, SimConsole], capsys: pytest.CaptureFixture[str]
) -> None:
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


def test_faults_fail_with_a_reason(
    sim: tuple[Path, Config, SimConsole], capsys: pytest.CaptureFixture[str]
) -> None:
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
    # No channel has audio here: the tone and TTY checks say so once each.
    assert results[("tone", "-")]["status"] == results[("tty", "-")]["status"] == "SKIP"
    assert report["summary"] == {"PASS": 2, "FAIL": 3, "SKIP": 2}


def test_carrier_present_is_not_keyed_over(
    sim: tuple[Path, Config, SimConsole], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _, console = sim
    _serial(console, "fire").carrier(True)
    code, report = _diag(capsys, "-c", str(path), "--yes", "--checks", "ptt", "--only", "fire")
    result = _results(report)[("ptt", "fire")]
    assert code == 0 and result["status"] == "SKIP" and "carrier present" in result["detail"]
    assert _keyed_history(console, "fire") == []
    assert ("ptt", "ems") not in _results(report)  # --only


def test_nothing_keyed_without_confirmation(
    sim: tuple[Path, Config, SimConsole], capsys: pytest.CaptureFixture[str]
) -> None:
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


@contextlib.contextmanager
def _online(broker: Broker, config: Config) -> Iterator[None]:
    """The retained `online` status a running daemon leaves on its broker; cleared after."""
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    topic = f"{config.prefix}/status"
    online = json.dumps({"state": "online", "session": 7, "ts": "2026-01-01T00:00:00.000Z"})
    client.publish(topic, online, qos=1, retain=True).wait_for_publish(5)
    try:
        yield
    finally:
        client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
        client.loop_stop()
        client.disconnect()


def test_running_daemon_blocks_hardware_checks(
    sim: tuple[Path, Config, SimConsole], broker: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    path, config, console = sim
    with _online(broker, config):
        code, report = _diag(capsys, "-c", str(path), "--yes")
    results = _results(report)
    assert code == 1
    assert results[("daemon", "-")]["status"] == "FAIL"
    assert "daemon is online" in results[("daemon", "-")]["detail"]
    assert results[("ptt", "-")]["status"] == "SKIP"
    assert results[("modbus", "-")]["status"] == "SKIP"
    for check in ("tone", "tty"):
        assert results[(check, "-")]["status"] == "SKIP"
        assert "daemon is online" in results[(check, "-")]["detail"]
    assert _keyed_history(console, "fire") == []


# -- the daemon guard: the state_dir lock, then the broker ----------------------------------


def _dead_broker() -> str:
    return f"mqtt://127.0.0.1:{free_port()}"  # nobody listens there


def _replace_line(text: str, start: str, line: str) -> str:
    """`text` with its (one) line starting with `start` replaced by `line`."""
    lines = text.splitlines()
    (index,) = [i for i, old in enumerate(lines) if old.startswith(start)]
    lines[index] = line
    return "\n".join(lines) + "\n"


def _no_broker(text: str) -> str:
    return _replace_line(text, 'url = "mqtt://', f'url = "{_dead_broker()}"')


def _write(tmp_path: Path, text: str) -> tuple[Path, Config]:
    path = tmp_path / f"diag-{uuid.uuid4().hex[:6]}.toml"
    path.write_text(text)
    return path, load_config(path)


def test_running_daemon_holds_the_lock_and_diag_refuses(
    console_factory: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real daemon: a second one on its state_dir refuses to start, naming the state_dir
    and the first one's pid; diag, given a broker nobody answers on, still refuses."""
    cut: ConsoleUnderTest = console_factory()
    assert cut.daemon.proc is not None
    pid = cut.daemon.proc.pid
    config = load_config(cut.daemon.config_path)
    second = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "-c", str(cut.daemon.config_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
        check=False,
    )
    assert second.returncode == 1, second.stderr
    assert f"state_dir {config.gateway.state_dir} " in second.stderr
    assert f"pid {pid} " in second.stderr and "Traceback" not in second.stderr
    assert cut.daemon.proc.poll() is None  # the first one runs on, untouched

    code, report = _diag(
        capsys, "-c", str(cut.daemon.config_path), "--yes", "--broker", _dead_broker()
    )
    results = _results(report)
    assert code == 1
    daemon = results[("daemon", "-")]
    assert daemon["status"] == "FAIL" and f"pid {pid} " in daemon["detail"], daemon
    assert daemon["data"]["lock_holder"]["pid"] == pid
    for check in ("ptt", "modbus", "tone", "tty"):
        assert results[(check, "-")]["status"] == "SKIP"
        assert "the daemon runs" in results[(check, "-")]["detail"]
    # The daemon's channels never saw a diag key-up.
    assert all(not s.json()["ptt"] for s in cut.sub.on("/channels/fire/state"))


def test_lock_held_refuses_ptt_unless_forced(
    sim: tuple[Path, Config, SimConsole], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, console = sim[0].read_text(), sim[2]
    path, config = _write(tmp_path, text)
    with acquire(config.gateway.state_dir):  # what a running daemon holds
        code, report = _diag(capsys, "-c", str(path), "--yes", "--checks", "ptt")
        results = _results(report)
        assert code == 1 and results[("daemon", "-")]["status"] == "FAIL"
        assert f"pid {os.getpid()} " in results[("daemon", "-")]["detail"]
        assert results[("ptt", "-")]["status"] == "SKIP"
        assert "--force" in results[("ptt", "-")]["detail"]
        assert _keyed_history(console, "fire") == []

        code, report = _diag(
            capsys, "-c", str(path), "--yes", "--checks", "ptt", "--only", "fire", "--force"
        )
        results = _results(report)
        assert "--force: the hardware is checked anyway" in results[("daemon", "-")]["detail"]
        assert results[("ptt", "fire")]["status"] == "PASS"
        assert _keyed_history(console, "fire") == [True, False]
        assert code == 1  # the daemon check still fails: it does run


def test_no_broker_but_free_lock_proves_the_daemon_stopped(
    sim: tuple[Path, Config, SimConsole], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The old gap: with the broker unreachable diag keyed radios on a guess. Now the lock
    decides; and diag holds it while it checks, so no daemon can start under it."""
    text, console = sim[0].read_text(), sim[2]
    path, config = _write(tmp_path, _no_broker(text))
    state_dir = config.gateway.state_dir
    acquire(state_dir).release()  # a daemon ran here once and stopped
    seen: list[str] = []

    async def daemon_tries_to_start(ctx: DiagContext) -> list[CheckResult]:
        try:
            acquire(state_dir).release()
        except StateDirLocked as exc:
            seen.append(str(exc))
        return [CheckResult("start_test", "-", "PASS", "tried")]

    register_check("start_test", "test only", daemon_tries_to_start)
    try:
        code, report = _diag(capsys, "-c", str(path), "--yes", "--checks", "ptt,start_test")
    finally:
        del CHECKS["start_test"]
    results = _results(report)
    daemon = results[("daemon", "-")]
    assert daemon["status"] == "PASS" and "unreachable" in daemon["detail"], daemon
    assert "diag holds it" in daemon["detail"]
    assert results[("ptt", "fire")]["status"] == "PASS"
    assert _keyed_history(console, "fire") == [True, False]
    assert len(seen) == 1 and f"pid {os.getpid()} " in seen[0]
    assert code == 0
    acquire(state_dir).release()  # released when diag is done


def test_unreadable_lock_and_no_broker_refuse_unless_forced(
    sim: tuple[Path, Config, SimConsole], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, console = sim[0].read_text(), sim[2]
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    text = _replace_line(_no_broker(text), "state_dir", f'state_dir = "{blocker}/state"')
    path, _ = _write(tmp_path, text)
    code, report = _diag(capsys, "-c", str(path), "--yes", "--checks", "ptt")
    results = _results(report)
    daemon = results[("daemon", "-")]
    assert code == 1 and daemon["status"] == "FAIL", daemon
    assert "cannot tell whether the daemon runs" in daemon["detail"]
    assert "Not a directory" in daemon["detail"] and "unreachable" in daemon["detail"]
    assert results[("ptt", "-")]["status"] == "SKIP"
    assert _keyed_history(console, "fire") == []

    code, report = _diag(capsys, "-c", str(path), "--yes", "--checks", "ptt", "--force")
    results = _results(report)
    assert results[("daemon", "-")]["status"] == "SKIP"
    assert results[("ptt", "fire")]["status"] == "PASS" and code == 0


def test_broker_option_asks_that_broker(
    sim: tuple[Path, Config, SimConsole],
    tmp_path: Path,
    broker: Broker,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--broker means what it means for `consolegw run`: the config's mqtt.url replaced."""
    text, console = sim[0].read_text(), sim[2]
    path, config = _write(tmp_path, _no_broker(text))
    with _online(broker, config):
        code, report = _diag(
            capsys, "-c", str(path), "--yes", "--checks", "ptt", "--broker", broker.url
        )
    daemon = _results(report)[("daemon", "-")]
    assert code == 1 and daemon["status"] == "FAIL", daemon
    assert f"online on {broker.url}" in daemon["detail"]
    assert "another config or on another machine" in daemon["detail"]  # no lock held
    assert _results(report)[("ptt", "-")]["status"] == "SKIP"
    assert _keyed_history(console, "fire") == []
    assert main(["diag", "-c", str(path), "--broker", "ftp://nowhere"]) == 2
    assert "--broker ftp://nowhere" in capsys.readouterr().err


def test_simulated_cm108_passes(
    sim: tuple[Path, Config, SimConsole], capsys: pytest.CaptureFixture[str]
) -> None:
    """The CM108 is reached through the section's usb_backend (hw_sim over loopback), as the
    daemon reaches it: listed, matched to its channel, keyed and unkeyed."""
    path, _, console = sim
    code, report = _diag(capsys, "-c", str(path), "--yes", "--checks", "ptt", "--only", "police")
    results = _results(report)
    police = results[("ptt", "police")]
    assert code == 0 and police["status"] == "PASS", police
    assert police["data"]["interface"].startswith("cm108 usb")
    assert [c.keyed for c in _usb(console, "police").sim.ptt_log()] == [True, False]
    (usb,) = report["inventory"]["usb_interfaces"]
    assert usb["backend"].startswith("sim://") and usb["channels"] == ["police"]
    assert not [n for n in report["inventory"]["notes"] if "police" in n]


def test_usage_and_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
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


def test_inventory_without_config_and_human_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diag"]) == 0
    out = capsys.readouterr().out
    assert "Serial ports" in out and "USB radio interfaces" in out and "Audio devices" in out
    assert "nothing checked" in out


async def test_registry_takes_new_checks(sim: tuple[Path, Config, SimConsole]) -> None:
    """The audio work adds tone/TTY loop-back checks this way; they run in order, and a
    check that keys transmitters waits for the technician's go-ahead."""
    _, config, _ = sim
    seen: list[str] = []

    async def loopback(ctx: DiagContext) -> list[CheckResult]:
        seen.append(f"confirmed={ctx.keying_confirmed}")
        return [CheckResult("loopback_test", "fire", "PASS", "tone measured at -20 dBFS")]

    questions: list[str] = []

    def confirm(question: str) -> bool:
        questions.append(question)
        return True

    register_check("loopback_test", "test only", loopback, keys_transmitters=True)
    try:
        report = await run_diag(config=config, checks=["loopback_test"], confirm=confirm)
    finally:
        del CHECKS["loopback_test"]
    assert [r.check for r in report.results] == ["daemon", "loopback_test"]
    assert seen == ["confirmed=True"] and len(questions) == 1 and "fire" in questions[0]
    with pytest.raises(ValueError, match="already registered"):
        register_check("ptt", "again", loopback)


# -- audio loop-back checks -----------------------------------------------------------------

RATE = 8000


@pytest.fixture
def audio_console(
    tmp_path: Path, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Path, Config, SimConsole, str]]:
    """The tools' console plus a simulated stereo card: fire on column 0, ems (with TTY) on
    column 1, police without audio. The card's name is new in every test, so that no stale
    PortAudio entry of an earlier test's card can be opened instead."""
    card = f"diag{uuid.uuid4().hex[:8]}"
    extra = f"""
[audio.devices.card]
device = "consolegw_sim_{card}"
hostapi = "ALSA"
channels = 2

[channels.fire.audio]
device = "card"
column = 0

[channels.ems.audio]
device = "card"
column = 1

[channels.ems.tty]
"""
    gid, text = tools_config(tmp_path, broker, extra=extra)
    path = tmp_path / f"{gid}.toml"
    path.write_text(text)
    console, config = _serve(path)
    try:
        # What the daemon's environment gets: PortAudio must see the simulated card. This
        # process initialised PortAudio long ago, hence the rescan.
        for key, value in console.env.items():
            monkeypatch.setenv(key, value)
        asyncio.run(audio.rescan_devices())
        yield path, config, console, f"consolegw_sim_{card}"
    finally:
        console.stop()


def _tone_level(samples: NDArray[np.float32]) -> float:
    """Level of the 1 kHz test tone in a recording: 1.2 s from 0.1 s after it starts."""
    envelope = tone_envelope(samples, RATE, 1000.0)
    onset = int(np.flatnonzero(envelope >= envelope.max() / 2.0)[0])
    tone, _ = band_power(samples[onset + RATE // 10 : onset + 13 * RATE // 10], RATE, 1000.0)
    return 10.0 * math.log10(tone)


def test_audio_loopback_passes(
    audio_console: tuple[Path, Config, SimConsole, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _, console, _ = audio_console
    ems = console.audio_channels["ems"]
    ems.loopback = True
    ems.sent(clear=True)
    code, report = _diag(capsys, "-c", str(path), "--checks", "tone,tty", "--only", "ems,police")
    results = _results(report)
    tone = results[("tone", "ems")]
    assert tone["status"] == "PASS", tone
    # Within 1 dB of what the simulated card really carried to the input (its own tap), and
    # that is the tone as played: the simulated loop has no loss.
    carried = _tone_level(ems.sent())
    assert abs(carried - TONE_DBFS) < 0.5
    assert abs(tone["data"]["level_dbfs"] - carried) < 1.0
    assert abs(tone["data"]["gain_db"]) < 1.0 and tone["data"]["snr_db"] > 30.0
    assert 0 < tone["data"]["round_trip_ms"] < 3000
    assert "came back at -2" in tone["detail"]
    tty = results[("tty", "ems")]
    assert tty["status"] == "PASS", tty
    assert tty["data"]["decoded"] == TTY_MESSAGE
    for check in ("tone", "tty"):
        assert results[(check, "police")]["status"] == "SKIP"
        assert results[(check, "police")]["detail"] == "no audio configured"
    assert ("tone", "fire") not in results  # --only
    assert code == 0


@pytest.mark.parametrize("check", ["tone", "tty"])
def test_audio_without_loopback_fails(
    audio_console: tuple[Path, Config, SimConsole, str],
    capsys: pytest.CaptureFixture[str],
    check: str,
) -> None:
    path, _, console, _ = audio_console
    assert console.audio_channels["ems"].loopback is False  # nothing comes back
    code, report = _diag(capsys, "-c", str(path), "--checks", check, "--only", "ems,police")
    results = _results(report)
    assert code == 1 and report["result"] == "FAIL"
    result = results[(check, "ems")]
    assert result["status"] == "FAIL", result
    assert result["detail"].startswith("no loopback: check the loopback cable"), result
    assert results[(check, "police")]["status"] == "SKIP"
    if check == "tone":
        assert result["data"]["round_trip_ms"] is None
    else:
        assert result["data"]["decoded"] == ""
    # The test signal really went out on the card's output.
    played = console.audio_channels["ems"].played()
    assert float(np.abs(played).max()) > 0.1


def test_tone_level_way_off_and_lost_device(
    audio_console: tuple[Path, Config, SimConsole, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _, console, card = audio_console
    fire = console.audio_channels["fire"]
    fire.loopback = True
    fire.clip_gain_db = 15.0  # an input gain far too high (not enough to clip a -20 dBFS tone)
    code, report = _diag(capsys, "-c", str(path), "--checks", "tone", "--only", "fire")
    result = _results(report)[("tone", "fire")]
    assert code == 1 and result["status"] == "FAIL", result
    assert "gain of 15" in result["detail"] and abs(result["data"]["gain_db"] - 15.0) < 1.0

    assert console.audio is not None
    console.audio.unplug(card.removeprefix("consolegw_sim_"))
    code, report = _diag(capsys, "-c", str(path), "--checks", "tone", "--only", "fire")
    result = _results(report)[("tone", "fire")]
    assert code == 1 and result["status"] == "FAIL", result
    assert result["detail"].startswith("cannot open audio input card"), result


async def test_cancelled_tone_check_closes_its_streams(
    audio_console: tuple[Path, Config, SimConsole, str],
) -> None:
    """Ctrl-C (SIGINT) cancels the run like this; SIGTERM/SIGHUP too (diag._stoppable)."""
    _, config, console, _ = audio_console
    fire = console.audio_channels["fire"]
    fire.loopback = True
    task = asyncio.create_task(run_diag(config=config, checks=["tone"], only=["fire"]))
    await until(lambda: float(np.abs(fire.played()).max(initial=0.0)) > 0.1, what="the tone")
    assert len(audio._owners) == 2  # capture and playback open (private: no public count)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await until(lambda: not audio._owners, what="both streams closed")
    # The output went quiet: the playback stream is gone, not left running.
    await until(lambda: not np.any(fire.played()[-RATE // 10 :]), what="a silent output")


async def test_sim_loopback_returns_what_was_played(
    audio_console: tuple[Path, Config, SimConsole, str],
) -> None:
    """hw_sim's loop-back: played audio comes back on the same column, sample for sample;
    the output's idle silence leaves the column's source as it was."""
    _, _, console, card = audio_console
    fire, ems = console.audio_channels["fire"], console.audio_channels["ems"]
    fire.source = Silence()
    ems.source = Tone(frequency=440.0, rms_dbfs=-30.0)
    fire.loopback = ems.loopback = True
    rng = np.random.default_rng(7)
    pattern = (rng.uniform(0.05, 0.9, RATE // 4) * rng.choice([-1.0, 1.0], RATE // 4)).astype(
        np.float32
    )
    # Nothing older than these sources may reach the capture: wait until the card carries them.
    await until(
        lambda: not np.any(fire.sent()[-RATE // 4 :]) and np.any(ems.sent()[-RATE // 4 :]),
        what="silence on column 0",
    )
    capture = AudioCapture(device=card, hostapi="ALSA", samplerate=RATE, channels=2)
    playback = AudioPlayback(device=card, hostapi="ALSA", samplerate=RATE, channels=2)
    blocks: list[NDArray[np.float32]] = []
    await capture.open()
    try:
        await playback.open()
        try:
            await playback.play(pattern, column=0)
            async with asyncio.timeout(10.0):
                while len(blocks) * 160 < 2 * RATE:
                    blocks.append((await capture.read()).frames)
        finally:
            await playback.close()
    finally:
        await capture.close()
    heard = np.concatenate(blocks)
    column0, column1 = heard[:, 0], heard[:, 1]
    starts = [
        i
        for i in np.flatnonzero(column0 == pattern[0])
        if np.array_equal(column0[i : i + len(pattern)], pattern)
    ]
    assert len(starts) == 1  # it came back once, whole, with no hole
    assert np.count_nonzero(column0) == len(pattern)  # and nothing else did
    level = 10.0 * math.log10(float(np.mean(np.square(column1[RATE // 2 :], dtype=np.float64))))
    assert abs(level - -30.0) < 0.5
