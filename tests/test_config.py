"""Config validation and `consolegw check-config`: errors name file, key and problem; exit 2."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.errors import ConfigError
from tests.mqtt_tools import ROOT, Broker, Daemon, Subscriber, wait_for


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )


def test_sim_config_is_valid() -> None:
    result = check(ROOT / "config" / "sim.toml")
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_example_config_is_valid_but_for_its_site_files() -> None:
    # It names /etc/consolegw files a real console has; here only those may be missing.
    config = load_config(ROOT / "config" / "example.toml", check_files=False)
    assert len(config.channels) == 4
    result = check(ROOT / "config" / "example.toml")
    assert result.returncode == 2 and "file not found: /etc/consolegw/" in result.stderr
    assert "put this console's file there, or remove the key" in result.stderr


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ('[mqtt]\nurl = "http://x"\n', "mqtt.url", "mqtt://"),
        ('[gateway]\nid = "bad id/1"\n', "gateway.id", "pattern"),
        ('[outbox]\nmax_events = "many"\n', "outbox.max_events", "integer"),
        ('[mqtt]\nhostname = "x"\n', "mqtt.hostname", "unknown key"),
        ("[channels.north]\ntx_timeout_s = -1\n", "channels.north.tx_timeout_s", "greater"),
        ('[channels.north.radio]\nkind = "serial"\n', "channels.north.radio.url", "required"),
        (
            '[channels.north.radio]\nkind = "serial"\nurl = "/dev/ttyUSB0"\nptt = []\n',
            "channels.north.radio.ptt",
            "rts",
        ),
        ('[channels.north.radio]\nkind = "carrier-pigeon"\n', "channels.north.radio", "kind"),
        (
            '[channels.north.radio]\nkind = "cm108"\nptt_gpio = 9\n',
            "channels.north.radio.ptt_gpio",
            "less than or equal to 8",
        ),
        (
            '[channels.north.radio]\nkind = "cm108"\ncos_bit = 3\n',
            "channels.north.radio.cos_bit",
            "VOLDN",
        ),
        (
            "[channels.north]\nmax_lease_s = 90\ntx_timeout_s = 60\n",
            "channels.north",
            "max_lease_s",
        ),
        ('[mqtt]\npassword_file = "nope.txt"\n', "mqtt.password_file", "file not found"),
        (
            '[audio.devices.card]\ndevice = "x"\nsamplerate = 44100\n'
            '[channels.line.audio]\ndevice = "card"\n',
            "audio.devices.card.samplerate",
            'recorder.format = "opus" takes 8000, 12000, 16000, 24000, 48000 Hz',
        ),
        ('[recorder]\nformat = "mp3"\n', "recorder.format", "'opus' or 'flac'"),
        ("[recorder]\nmax_s = 1\n", "recorder.max_s", "greater than or equal to 10"),
    ],
)
def test_bad_config_names_file_key_and_problem(
    tmp_path: Path, text: str, key: str, problem: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    result = check(path)
    assert result.returncode == 2, result
    assert f"{path}: {key}" in result.stderr, result.stderr
    assert problem in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


MODBUS = """
[modbus.links.bus]
host = "127.0.0.1"
[modbus.modules.io1]
link = "bus"
preset = "e1210"
"""


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        (MODBUS + '[alarms.a]\nmodule = "io9"\nchannel = 0\n', "alarms.a.module", "io9"),
        (
            MODBUS + '[alarms.a]\nmodule = "io1"\nchannel = 16\n',
            "alarms.a.channel",
            "no digital input channel 16",
        ),
        (
            MODBUS + '[alarms.a]\nmodule = "io1"\nchannel = 0\nkind = "supervised"\n',
            "alarms.a",
            "nominal",
        ),
        (
            MODBUS + '[alarms.a]\nmodule = "io1"\nchannel = 0\nkind = "supervised"\n'
            "nominal = { normal = 1, alarm = 2 }\n",
            "alarms.a.channel",
            "no analog input",
        ),
        (MODBUS.replace('link = "bus"', 'link = "rs485"'), "modbus.modules.io1.link", "rs485"),
        (
            MODBUS + "outputs = { siren = 0 }\n",
            "modbus.modules.io1.outputs.siren",
            "no output channel 0",
        ),
        ("[modbus.links.bus]\nport = 502\n", "modbus.links.bus", "host"),
        (
            '[modbus.links.bus]\nhost = "h"\nserial_port = "/dev/ttyS0"\n',
            "modbus.links.bus",
            "exactly one",
        ),
    ],
)
def test_bad_alarm_config(tmp_path: Path, text: str, key: str, problem: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    result = check(path)
    assert result.returncode == 2, result
    assert f"{path}: {key}" in result.stderr, result.stderr
    assert problem in result.stderr, result.stderr


def test_toml_syntax_error_has_line_number(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('[gateway]\nid = "x\n')
    result = check(path)
    assert result.returncode == 2
    assert str(path) in result.stderr and "line 2" in result.stderr


def test_missing_file_exits_2(tmp_path: Path) -> None:
    result = check(tmp_path / "absent.toml")
    assert result.returncode == 2 and "file not found" in result.stderr


def test_run_with_bad_config_exits_2_before_touching_anything(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[gateway]\nstate_dir = 5\n")
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "-c", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=30,
    )
    assert result.returncode == 2 and "gateway.state_dir" in result.stderr


def test_relative_paths_resolve_next_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "gw.toml"
    path.write_text('[gateway]\nid = "gw"\nstate_dir = "state"\n[channels.north]\n')
    assert load_config(path).gateway.state_dir == tmp_path / "sub" / "state"


def test_defaults_make_a_valid_prefix(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text('[gateway]\nid = "pos-7"\n[channels.north]\n')
    config = load_config(path)
    assert config.prefix == "consolegw/pos-7"
    assert config.mqtt.port == 1883


def test_config_error_type(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text("[mqtt]\nkeepalive_s = 1\n")
    with pytest.raises(ConfigError, match=r"mqtt\.keepalive_s"):
        load_config(path)


def test_unusable_state_dir_is_a_one_line_failure(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    path = tmp_path / "gw.toml"
    path.write_text(f'[gateway]\nid = "gw"\nstate_dir = "{blocker}/state"\n[channels.north]\n')
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "-c", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=30,
    )
    assert result.returncode == 1
    assert "gateway.state_dir" in result.stderr and "Traceback" not in result.stderr


SERIAL = '[channels.{id}.radio]\nkind = "serial"\nurl = "{url}"\n'


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("", "gateway.id", "required"),
        ("[channels.north]\n", "gateway.id", "required"),
        ('[gateway]\nstate_dir = "/tmp"\n[channels.north]\n', "gateway.id", "its own"),
        ('[gateway]\nid = "pos-1"\n', "(top level)", "nothing to run"),
        ('[gateway]\nid = "pos-1"\n', "(top level)", "gateway.standby = true runs it"),
        (
            '[gateway]\nid = "pos-1"\nstandby = true\n[channels.north]\n',
            "gateway.standby",
            "remove standby to run them",
        ),
        (
            '[gateway]\nid = "pos-1"\n'
            + SERIAL.format(id="a", url="rfc2217://Serial-1:4001")
            + SERIAL.format(id="b", url="rfc2217://serial-1:4001"),
            "channels.b.radio.url",
            "is channel a's too",
        ),
    ],
)
def test_whole_file_mistakes_are_errors(tmp_path: Path, text: str, key: str, problem: str) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(text)
    result = check(path)
    assert result.returncode == 2, result
    assert f"{path}: {key}: " in result.stderr and problem in result.stderr, result.stderr


def test_one_port_under_two_names_is_one_port(tmp_path: Path) -> None:
    device = tmp_path / "ttyUSB0"
    device.touch()
    by_id = tmp_path / "usb-FTDI_FT232R-if00-port0"
    by_id.symlink_to(device)
    path = tmp_path / "gw.toml"
    path.write_text(
        '[gateway]\nid = "pos-1"\n'
        + SERIAL.format(id="fire", url=device)
        + SERIAL.format(id="ems", url=by_id)
    )
    with pytest.raises(ConfigError, match=r"channels\.ems\.radio\.url: .* channel fire's too"):
        load_config(path)


def test_standby_runs_nothing_and_says_so(tmp_path: Path) -> None:
    # What the package installs: an id, standby, nothing else.
    path = tmp_path / "gw.toml"
    path.write_text('[gateway]\nid = "pos-1"\nstandby = true\n')
    result = check(path)
    assert result.returncode == 0, result
    assert f"{path}: OK: gateway pos-1, standby, 0 channels" in result.stdout
    assert f"warning: {path}: gateway.standby: true: this console runs no radio" in (result.stderr)


def test_a_standby_console_publishes_its_state_and_keys_nothing(
    tmp_path: Path,
    broker: Broker,
    daemon_factory: Callable[..., Daemon],
    subscriber_factory: Callable[..., Subscriber],
) -> None:
    sub = subscriber_factory(["consolegw/pos-standby/#"])
    daemon = daemon_factory(
        f'[gateway]\nid = "pos-standby"\nstandby = true\nstate_dir = "{tmp_path / "state"}"\n'
        f'[mqtt]\nurl = "mqtt://{broker.host}:{broker.port}"\n'
    )
    daemon.start()
    state = wait_for(lambda: sub.on("/state"), 20, "the gateway state")[-1].json()
    assert state["standby"] is True and state["channels"] == []
    assert state["started"] <= state["ts"]  # the fleet view's uptime
    assert "gateway.standby: true" in daemon.log()
    assert daemon.stop() == 0


def test_inverted_ptt_is_a_warning_not_an_error(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(
        '[gateway]\nid = "pos-1"\n'
        + SERIAL.format(id="fire", url="rfc2217://127.0.0.1:4001")
        + "ptt_invert = true\n"
    )
    result = check(path)
    assert result.returncode == 0, result
    assert f"warning: {path}: channels.fire.radio.ptt_invert: true keys the radio" in (
        result.stderr
    )


@pytest.mark.parametrize(
    ("mqtt", "key", "problem"),
    [
        ('url = "mqtt://a:1"\nurls = ["mqtt://b:1"]', "mqtt", "url or urls"),
        ('urls = ["mqtt://a:1", "mqtt://a:1"]', "mqtt.urls", "twice"),
        ('urls = ["mqtt://a:1", "http://b"]', "mqtt.urls", "entry 2"),
        ('protocol = "4"', "mqtt.protocol", "3.1.1"),
    ],
)
def test_broker_list_mistakes(tmp_path: Path, mqtt: str, key: str, problem: str) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(f'[gateway]\nid = "pos-1"\n[mqtt]\n{mqtt}\n[channels.north]\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert f"{path}: {key}: " in str(caught.value) and problem in str(caught.value)


def test_urls_make_url_the_first_broker(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(
        '[gateway]\nid = "pos-1"\n[mqtt]\nurls = ["mqtt://a:1884", "mqtts://b"]\n[channels.north]\n'
    )
    mqtt = load_config(path).mqtt
    assert mqtt.url == "mqtt://a:1884" and (mqtt.host, mqtt.port) == ("a", 1884)
    assert [(b.host, b.port, b.tls) for b in mqtt.brokers] == [
        ("a", 1884, False),
        ("b", 8883, True),
    ]


@pytest.mark.parametrize(
    "fix", ['[recorder]\nformat = "flac"\n', "[recorder]\nenabled = false\n", "record = false\n"]
)
def test_a_44_1_khz_card_is_recorded_as_flac_or_not_at_all(tmp_path: Path, fix: str) -> None:
    audio = '[audio.devices.card]\ndevice = "x"\nsamplerate = 44100\n'
    line = '[channels.line.audio]\ndevice = "card"\n'
    text = '[gateway]\nid = "pos-1"\n' + (
        audio + line + fix if fix.startswith("record ") else fix + audio + line
    )
    path = tmp_path / "ok.toml"
    path.write_text(text)
    assert load_config(path).channels["line"].audio is not None
