"""Fuzzed config files (issue #11): whatever a config file holds, `consolegw check-config` and
the daemon's start path answer with a Config or a ConfigError that names the file (exit 0 or
2), never a traceback.

The inputs are mutations of the two shipped configs: bytes flipped, cut, inserted (non-UTF-8
too), lines deleted, duplicated or given other values, keys renamed, values swapped for every
other TOML type, deep nesting. Most examples run in-process; a few go through the real CLI.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import cli
from gateway.config import Config, load_config
from gateway.errors import ConfigError
from tests.cli_tools import consolegw
from tests.mqtt_tools import ROOT

SEEDS = [(ROOT / "config" / name).read_bytes() for name in ("sim.toml", "example.toml")]
SETTINGS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class Raw(str):
    """TOML text written as it is: numbers no Python int may print, nan, deep nesting."""


def deep(levels: int, kind: str) -> Raw:
    if kind == "array":
        return Raw("[" * levels + "]" * levels)
    return Raw("{a = " * levels + "1" + "}" * levels)


# What a mutated value may become: every TOML type, and the strings that broke things.
SPECIAL_STRINGS = [
    "",
    " ",
    "a\x00b",
    "/" + "a" * 5000,
    "a/" * 3000,
    "~nosuchuser-consolegw/x",
    "../x",
    "/dev/null",
    "mqtt://broker..lan:1883",
    "mqtt://[::1:1883",
    "mqtt://h:99999",
    "mqtts://\x00:1",
    "mqtt://" + "x" * 70 + ":1883",
    "rfc2217://127.0.0.1:99999",
    "sim://127.0.0.1:99999",
    "a" * 70_000,
    "serial",
    "cm108",
    "supervised",
    "(unclosed[regex",
    "\ufffe\U0010ffff\x7f\x9f",
]
RAW_VALUES = [
    Raw("9" * 5000),
    Raw("-" + "9" * 4301),
    Raw("1e999"),
    Raw("nan"),
    Raw("-inf"),
    Raw("0xFFFFFFFFFFFFFFFFFFFF"),
    Raw("1979-05-27"),
    Raw("07:32:00"),
    Raw("1979-05-27T07:32:00Z"),
    Raw("1979-02-30"),
    deep(50, "array"),
    deep(5000, "array"),
    deep(3000, "table"),
]
text_values = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)
leaves = st.one_of(
    st.sampled_from(SPECIAL_STRINGS),
    st.sampled_from(RAW_VALUES),
    text_values,
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.dates(),
    st.times(),
    st.datetimes(),
)
toml_values = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(text_values, children, max_size=4)
    ),
    max_leaves=12,
)


def _string(value: str) -> str:
    out = []
    for c in value:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or c == "\x7f":
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def to_toml(value: Any) -> str:
    """A value as TOML text (tables inline): the test's own writer, stdlib has none."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(to_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_string(k)} = {to_toml(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def to_document(data: dict[str, Any]) -> bytes:
    return "".join(f"{_string(k)} = {to_toml(v)}\n" for k, v in data.items()).encode()


def _slots(node: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) in a parsed document: each place a mutation can hit."""
    found: list[tuple[Any, Any]] = []
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, child in items:
        found.append((node, key))
        if isinstance(child, dict | list):
            found.extend(_slots(child))
    return found


@st.composite
def structural_mutations(draw: st.DrawFn) -> bytes:
    """A shipped config parsed, changed where TOML's types matter, and written again."""
    doc: dict[str, Any] = tomllib.loads(draw(st.sampled_from(SEEDS)).decode())
    for _ in range(draw(st.integers(1, 4))):
        container, key = draw(st.sampled_from(_slots(doc)))
        action = draw(st.sampled_from(["replace", "replace", "replace", "rename", "delete"]))
        if action == "replace" or isinstance(container, list):
            container[key] = draw(toml_values)
        elif action == "rename":
            new = draw(
                st.sampled_from([key.upper(), key + "s", key[:-1], "", "source", "a.b"])
                | text_values
            )
            container[new] = container.pop(key)
        else:
            del container[key]
        if not doc:
            break
    return to_document(doc)


_VALUE_LINE = re.compile(rb"^(\s*[A-Za-z0-9_.\"-]+\s*=\s*)(.*)$")


@st.composite
def byte_mutations(draw: st.DrawFn) -> bytes:
    """A shipped config edited as text: its tables stay, its bytes and lines do not."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    rnd = draw(st.randoms())  # positions spread over the file, not bunched at its start
    for _ in range(draw(st.integers(1, 6))):
        action = draw(
            st.sampled_from(
                ["flip", "truncate", "insert", "delete_line", "dup_line", "value", "value"]
            )
        )
        if action in ("flip", "truncate", "insert"):
            at = rnd.randrange(max(1, len(data)))
            if action == "flip" and data:
                data[at] = draw(st.integers(0, 255))
            elif action == "truncate":
                del data[at:]
            else:
                data[at:at] = draw(
                    st.binary(max_size=16)
                    | st.sampled_from(
                        [
                            b"\xff\xfe",
                            b"\xc3(",
                            b"\xed\xa0\x80",  # a UTF-8-encoded surrogate
                            b"\x00",
                            b"\n[[channels]]\n",
                            b"\n[" + b".".join([b"t"] * 20_000) + b"]\nk = 1\n",
                            b"\n[channels." + b".".join([b"c"] * 100) + b"]\n",
                            b'\nsource = "x"\n',
                        ]
                    )
                )
            continue
        lines = bytes(data).split(b"\n")
        at = rnd.randrange(len(lines))
        if action == "delete_line":
            del lines[at]
        elif action == "dup_line":
            lines.insert(at, lines[at])
        else:
            candidates = [i for i, line in enumerate(lines) if _VALUE_LINE.match(line)]
            if candidates:
                i = rnd.choice(candidates)
                match = _VALUE_LINE.match(lines[i])
                assert match is not None
                lines[i] = match.group(1) + to_toml(draw(toml_values)).encode()
        data = bytearray(b"\n".join(lines))
    return bytes(data)


config_files = st.one_of(byte_mutations(), structural_mutations())


def assert_names_file(exc: ConfigError, path: Path) -> None:
    message = str(exc)
    assert message, "empty ConfigError"
    for line in message.splitlines():
        assert line.startswith(f"{path}: "), f"a line does not name the file: {line!r}"


def outcome(call: Callable[[], Config], path: Path) -> Config | None:
    """The call returns a Config or raises ConfigError naming the file; anything else fails."""
    try:
        config = call()
    except ConfigError as exc:
        assert_names_file(exc, path)
        return None
    assert isinstance(config, Config)
    return config


def check_in_process(path: Path) -> None:
    outcome(lambda: load_config(path, check_files=False), path)
    # What `consolegw run -c FILE --broker URL` does before anything runs...
    config = outcome(lambda: cli._load(str(path), "mqtt://127.0.0.1:1883"), path)
    if config is not None:
        # ...and the daemon's objects built from it (no device is opened, no task runs).
        outcome(lambda: (cli.build_gateway(config), config)[1], path)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("config-fuzz")


def test_seeds_load(workdir: Path) -> None:
    for i, seed in enumerate(SEEDS):
        path = workdir / f"seed{i}.toml"
        path.write_bytes(seed)
        assert load_config(path, check_files=False).channels


@settings(SETTINGS, max_examples=500)
@given(data=config_files)
def test_mutated_config_loads_or_is_refused(workdir: Path, data: bytes) -> None:
    path = workdir / "mutated.toml"
    path.write_bytes(data)
    check_in_process(path)


@pytest.fixture(scope="module")
def site(workdir: Path) -> Path:
    """The files example.toml names in /etc/consolegw: a password and a CA certificate."""
    folder = workdir / "site"
    folder.mkdir()
    (folder / "mqtt.password").write_text("secret\n")
    subprocess.run(
        [
            *(
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ),
            *("-nodes", "-days", "2", "-subj", "/CN=consolegw fuzz CA"),
            *("-keyout", "ca.key", "-out", "ca.crt"),
        ],
        cwd=folder,
        check=True,
        capture_output=True,
    )
    return folder


def site_config(site: Path, data: bytes, name: str = "site.toml") -> Path:
    path = site / name
    path.write_bytes(data.replace(b"/etc/consolegw/", b""))  # relative: next to the file
    return path


def test_example_config_next_to_its_files(site: Path) -> None:
    path = site_config(site, SEEDS[1])
    assert cli.build_gateway(cli._load(str(path))).config.mqtt.tls is not None


@settings(SETTINGS, max_examples=150)
@given(data=structural_mutations())
def test_mutated_config_next_to_its_files(site: Path, data: bytes) -> None:
    # With the files there, check_files and the daemon's start go further than /etc allows.
    check_in_process(site_config(site, data))


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("mqtt.password", b"caf\xe9\n", "mqtt.password_file: mqtt.password: not UTF-8"),
        ("mqtt.password", b"p" * 70_000, "mqtt.password_file: mqtt.password: longer than"),
        ("ca.crt", b"not a certificate\n", "mqtt.tls.ca_file: not a usable CA file"),
    ],
)
def test_site_file_the_daemon_cannot_use(
    tmp_path: Path, site: Path, name: str, content: bytes, problem: str
) -> None:
    # These passed check-config once and stopped the daemon with a traceback as it started.
    for other in ("mqtt.password", "ca.crt"):
        (tmp_path / other).write_bytes((site / other).read_bytes())
    (tmp_path / name).write_bytes(content)
    path = site_config(tmp_path, SEEDS[1])
    with pytest.raises(ConfigError) as caught:
        cli.build_gateway(cli._load(str(path)))
    assert_names_file(caught.value, path)
    assert problem in str(caught.value).replace(f"{tmp_path}/", "")


def test_module_of_relays_only_builds(workdir: Path) -> None:
    # Valid (check-config says OK) yet the daemon's start raised: no alarm input to poll.
    path = workdir / "relays.toml"
    path.write_text(
        '[gateway]\nid = "relays"\n[modbus.links.bus]\nhost = "127.0.0.1"\n'
        '[modbus.modules.relays]\nlink = "bus"\noutputs = { siren = 0 }\n'
    )
    assert cli.build_gateway(load_config(path)).modules


# Inputs that once escaped as something other than ConfigError, each with the key named.
REGRESSIONS = [
    (b'[gateway]\nid = "caf\xe9"\n', "not UTF-8 text"),
    (b"x = " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deeply"),
    (b"x = " + b"{a = " * 3000 + b"1" + b"}" * 3000 + b"\n", "nested too deeply"),
    (b"[outbox]\nmax_events = " + b"9" * 5000 + b"\n", "4300 digits"),
    (b'[gateway]\nstate_dir = "a\\u0000b"\n', "gateway.state_dir: contains a NUL"),
    (b'[mqtt]\npassword_file = "/' + b"a" * 5000 + b'"\n', "mqtt.password_file: cannot check"),
    (b'[mqtt]\npassword_file = "~nosuchuser-consolegw/pw"\n', "mqtt.password_file: cannot"),
    (b'[mqtt]\nurl = "mqtt://broker..lan:1883"\n', "mqtt.url: host name"),
    (b'[mqtt]\nprefix = "a\\u0000b"\n', "mqtt.prefix: contains the control"),
    (b'[mqtt]\nclient_id = "' + b"c" * 70_000 + b'"\n', "mqtt.client_id: is longer"),
    (b'[metrics]\nhost = "a..b"\n', "metrics.host: host name"),
    (b"[channels.a]\ncos_stuck_s = inf\n", "channels.a.cos_stuck_s: Input should be a finite"),
    (b'source = "elsewhere.toml"\n', "source: unknown key"),
    (
        b'[channels.a.radio]\nkind = "cm108"\nvendor_id = 4660\n',
        "channels.a.radio: product_id is required",
    ),
    (
        b'[channels.a.radio]\nkind = "cm108"\nvendor_id = 70000\nproduct_id = 1\n',
        "channels.a.radio.vendor_id",
    ),
    (
        b'[channels.a.radio]\nkind = "cm108"\nptt_gpio = 2\ncos_bit = 9\n',
        "channels.a.radio: cos_bit 9 is GPIO2",
    ),
    (b'[channels.a.radio]\nkind = "serial"\nurl = " /dev/ttyS0"\n', "channels.a.radio.url"),
    (
        b'[audio.devices.card]\ndevice = "x"\nsamplerate = 4000\nblocksize = 8000\n',
        "audio.devices.card: blocksize",
    ),
]


@pytest.mark.parametrize(("data", "problem"), REGRESSIONS)
def test_regression_in_process(workdir: Path, data: bytes, problem: str) -> None:
    path = workdir / "regression.toml"
    path.write_bytes(data)
    with pytest.raises(ConfigError) as caught:
        cli.build_gateway(cli._load(str(path)))
    assert_names_file(caught.value, path)
    assert problem in str(caught.value)


def assert_exit_2(result: subprocess.CompletedProcess[str], *names: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    for name in names:
        assert name in result.stderr, result.stderr


@pytest.mark.parametrize("index", [0, 1, 4, 7, 13])
def test_regression_through_the_cli(tmp_path: Path, index: int) -> None:
    data, problem = REGRESSIONS[index]
    path = tmp_path / "bad.toml"
    path.write_bytes(data)
    assert_exit_2(consolegw("check-config", str(path)), f"{path}: ", problem)


def test_daemon_start_refuses_what_check_config_refuses(tmp_path: Path) -> None:
    # The broker URL that passed the check once and crashed the daemon as it connected.
    path = tmp_path / "bad.toml"
    path.write_bytes(REGRESSIONS[7][0])
    result = consolegw("run", "-c", str(path))
    assert_exit_2(result, f"{path}: mqtt.url")
    path.write_bytes(REGRESSIONS[13][0])  # refused by the CM108 driver, not by validation
    assert_exit_2(consolegw("run", "-c", str(path), "--broker", "mqtt://127.0.0.1:1"), "vendor")


@pytest.mark.parametrize(
    "name",
    ["missing.toml", ".", "x" * 300 + ".toml", "/".join(["d"] * 3000) + ".toml"],
    ids=["missing", "directory", "long-name", "long-path"],
)
def test_unreadable_path_through_the_cli(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    assert_exit_2(consolegw("check-config", str(path)), str(path)[:200])


@settings(SETTINGS, max_examples=8)
@given(data=config_files)
def test_mutated_config_through_the_cli(workdir: Path, data: bytes) -> None:
    path = workdir / "cli.toml"
    path.write_bytes(data)
    result = consolegw("check-config", str(path))
    assert result.returncode in (0, 2), (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    if result.returncode == 2:
        assert f"{path}: " in result.stderr
