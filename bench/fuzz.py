"""MQTT boundary fuzz (issue #11): hostile messages at a running daemon; none may take it
off the air.

    python bench/fuzz.py [--count 20000] [--quick] [--seed 11]

A private mosquitto, the simulator (`python -m hw_sim`, its own process, audio included) and
the daemon (`consolegw run` as a subprocess) on config/sim.toml moved to free ports and temp
folders. One MQTT v5 client sends --count messages to random topics under the gateway's
prefix: mostly request topics (real and random ids and commands), some other topics; the
payloads are valid requests (status, rebirth, ptt off: never a valid ptt on), invalid JSON,
deep nesting, lone surrogates, 5,000-digit integers, wrong types, empty payloads and a few
hundred 1 MB ones, at QoS 0, 1 and 2, about 5% retained (cleared afterwards). Each message
has its own MQTT v5 correlation data; responses are counted per correlation on the matching
`.../response/<cmd>` topic, with a bounded window of requests in flight so the broker drops
nothing. A daemon that exits is counted, restarted and the run goes on.

Targets: 0 daemon crashes, every request-topic message answered exactly once, RSS growth
under 2 MB over the second half of the run (growth after a 1,000-message warm-up with 1 MB
payloads among them is reported too), at most 5 log lines per 1,000 bad requests, no
ptt.on event and no radio keyed. The last line is one JSON object with every figure and
"pass".
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as paho  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

from bench.procfs import vm_rss_kb  # noqa: E402
from gateway.cli import build_gateway  # noqa: E402
from gateway.config import Config, load_config  # noqa: E402
from hw_sim.audio import sim_env  # noqa: E402
from tests.mqtt_tools import Broker, Daemon, free_port, nodelay, wait_for  # noqa: E402

WINDOW = 32
"""Requests in flight at once: the broker queues, it never has to drop."""
STALL_S = 15.0
"""No response for this long with requests in flight: the daemon is stuck; go on."""
REPLY_PREFIX = "fuzz-replies"
"""Where the MQTT v5 response topic of some requests points (not under the prefix)."""
TARGET_RSS_GROWTH_KB = 2048
TARGET_LOG_LINES_PER_1000_BAD = 5.0
MB = 1024 * 1024

# Printable characters only: mosquitto drops a client whose topic holds a control character.
_TOPIC_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:~ !$%&'()*,;=@"
_TOPIC_CHARS_WIDE = "éüßçΩЖ中文火🚒🚓"
_KEYS = ["state", "duration_s", "transaction", "seconds", "text", "baud", "output", "extra", ""]


# --- the console under test --------------------------------------------------------------


def sim_config(tmp: Path, broker: Broker) -> str:
    """config/sim.toml with free ports, a temp state folder and the private broker."""
    text = (ROOT / "config" / "sim.toml").read_text()
    ports: dict[str, str] = {}

    def moved(match: re.Match[str]) -> str:
        return match.group(1) + ports.setdefault(match.group(2), str(free_port()))

    text = re.sub(r"(//127\.0\.0\.1:)(\d+)", moved, text)
    text = re.sub(r"(?m)^(port = )(\d+)", moved, text)
    text = re.sub(r'(?m)^url = "mqtt://[^"]*"', f'url = "{broker.url}"', text)
    text = re.sub(r'(?m)^state_dir = "[^"]*"', f'state_dir = "{tmp / "state"}"', text)
    return text


def wait_for_simulator(sim: subprocess.Popen[bytes], log: Path, audio_dir: Path) -> None:
    """Until the simulator serves its devices and its sound cards exist: a daemon that
    started first would log its retries inside the measured run."""

    def ready() -> bool:
        if sim.poll() is not None:
            raise RuntimeError(f"the simulator exited: {log.read_text(errors='replace')[-2000:]}")
        served = "] serving " in log.read_text(errors="replace")
        cards = (audio_dir / "asound.conf").exists() and any(audio_dir.glob("*/native"))
        return served and cards

    wait_for(ready, timeout=30, what="the simulator's devices and sound cards")
    time.sleep(0.5)


def _json(payload: bytes) -> Any:
    """A payload's JSON, or None: whatever it is (it may be one of ours, 100,000 deep)."""
    try:
        return json.loads(payload)
    except (ValueError, RecursionError):
        return None


def count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for _ in fh)


_LOG_LINE = re.compile(rb"^\d{4}-\d\d-\d\d [\d:,]+ ([A-Z]+) ([\w.]+): ")


def log_breakdown(path: Path, skip: int) -> Counter[str]:
    """Log lines after the first `skip`, by level and logger ("other" for tracebacks)."""
    found: Counter[str] = Counter()
    with path.open("rb") as fh:
        for i, line in enumerate(fh):
            if i >= skip:
                match = _LOG_LINE.match(line)
                found[f"{match[1].decode()} {match[2].decode()}" if match else "other"] += 1
    return found


# --- the messages --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    reply_topic: str | None
    """The `.../response/<cmd>` topic the router answers on; None for a non-request topic."""
    response_topic: str | None = None
    """The MQTT v5 response topic property, when the message has one."""


def request_reply_topic(prefix: str, topic: str) -> str | None:
    """What CommandRouter answers on, for the topics it answers (non-empty parts only)."""
    if not topic.startswith(prefix + "/"):
        return None
    parts = topic[len(prefix) + 1 :].split("/")
    if not all(parts):
        return None
    if len(parts) == 2 and parts[0] == "request":
        return f"{prefix}/response/{parts[1]}"
    if len(parts) == 4 and parts[0] in ("channels", "alarms", "modules") and parts[2] == "request":
        return f"{prefix}/{parts[0]}/{parts[1]}/response/{parts[3]}"
    return None


def could_key(topic: str, payload: bytes) -> bool:
    """Whether a message could be a PTT on, however leniently read: the bench never sends one."""
    if "ptt" not in topic.lower():
        return False
    body = _json(payload)  # what this lenient parser cannot read, the daemon's cannot either
    if not isinstance(body, dict):
        return False
    state = body.get("state")
    if state is True or state == 1 or isinstance(state, list | dict):
        return True
    if isinstance(state, str):
        text = state.strip().lower()
        return "on" in text or text in ("true", "1", "yes", "y", "t", "key", "keyed", "tx")
    return False


class Messages:
    """Random topics and payloads from one seed; real ids and commands from the config."""

    def __init__(
        self, *, rng: random.Random, config: Config, commands: dict[str, list[str]]
    ) -> None:
        self.rng = rng
        self.prefix = config.prefix
        self.ids = {
            "channels": list(config.channels),
            "alarms": list(config.alarms),
            "modules": list(config.modbus.modules),
        }
        self.commands = commands
        self.guarded = 0
        """Generated bodies replaced because they might have keyed a radio (should stay 0)."""

    def text(self, low: int = 1, high: int = 12) -> str:
        pool = _TOPIC_CHARS + (_TOPIC_CHARS_WIDE if self.rng.random() < 0.2 else "")
        return "".join(self.rng.choice(pool) for _ in range(self.rng.randint(low, high)))

    def request_topic(self) -> tuple[str, str, str]:
        """(topic, scope, command): real ids and commands mostly, random ones too."""
        rng = self.rng
        scope = rng.choices(["gateway", "channels", "alarms", "modules"], [25, 35, 20, 20])[0]
        real = self.commands[scope]
        command = rng.choice(real) if rng.random() < 0.75 else self.text()
        if scope == "gateway":
            return f"{self.prefix}/request/{command}", scope, command
        ids = self.ids[scope]
        target = rng.choice(ids) if ids and rng.random() < 0.75 else self.text(1, 40)
        return f"{self.prefix}/{scope}/{target}/request/{command}", scope, command

    def other_topic(self) -> str:
        rng = self.rng
        channel = rng.choice(self.ids["channels"] or ["x"])
        command = rng.choice(self.commands["channels"])
        p = self.prefix
        return rng.choice(
            [
                f"{p}/request",
                f"{p}/request/",
                f"{p}/request/status/extra",
                f"{p}//request/status",
                f"{p}/channels//request/status",
                f"{p}/channels/{channel}/request",
                f"{p}/channels/{channel}/request/",
                f"{p}/channels/{channel}/request/{command}/more",
                f"{p}/channels/{channel}/response/{command}",
                f"{p}/response/status",
                f"{p}/channels/{channel}/event",
                f"{p}/{self.text()}/{channel}/request/status",
                f"{p}/{self.text()}",
                f"{p}/{self.text()}/{self.text()}/{self.text()}",
                f"{p}/alarms/{self.text()}/request/ack/x",
            ]
        )

    def scalar(self) -> Any:
        rng = self.rng
        return rng.choice(
            [
                None,
                True,
                False,
                0,
                -1,
                2**64,
                1.5,
                -0.0,
                1e308,
                "",
                "x" * rng.randint(1, 300),
                self.text(),
                "\x00\x1f\x7f",
                "\u2028\ufeff",
            ]
        )

    def value(self, depth: int = 0) -> Any:
        rng = self.rng
        roll = rng.random()
        if depth >= 3 or roll < 0.6:
            return self.scalar()
        if roll < 0.8:
            return [self.value(depth + 1) for _ in range(rng.randint(0, 4))]
        return {rng.choice([*_KEYS, self.text()]): self.value(depth + 1) for _ in range(3)}

    def wrong_types(self, command: str) -> dict[str, Any]:
        rng = self.rng
        if command == "ptt":
            return rng.choice(
                [
                    {"state": "off", "duration_s": rng.choice([True, "5", -1, 0, "inf", 10**30])},
                    {"state": rng.choice(["maybe", "", "0ff", None, 2, -1, 0.5])},
                    {"duration_s": 5},
                ]
            )
        if command == "recall":
            return {"seconds": rng.choice([-5, 0, 1e9, None, [], 10**30, "nan", "-1"])}
        if command == "tty":
            return {"text": rng.choice([123, None, "", "x" * 5000, ["a"]]), "baud": "45.45"}
        if command == "set_output":
            return {"output": rng.choice([5, None, "nosuch", ""]), "state": rng.choice([2, None])}
        return rng.choice(
            [
                {"transaction": {"a": [1]}},
                {"transaction": "t" * 200},
                {"transaction": 1.5},
                {"transaction": True},
                {"extra": 1},
                {"seconds": "30"},
            ]
        )

    def deep(self) -> bytes:
        levels = int(10 ** self.rng.uniform(1, 5))  # 10 .. 100,000 levels
        if self.rng.random() < 0.5:
            return b"[" * levels + b"]" * levels
        return b'{"transaction": ' + b'{"a": ' * levels + b"1" + b"}" * levels + b"}"

    def payload(self, command: str) -> tuple[bytes, bool]:
        """(payload, valid): valid only where the bench means a request to succeed.

        Only status, rebirth and ptt off are ever meant valid: a command that acts (recall
        writes a WAV, ack, tty, set_output) gets bodies that are bad however read, so what
        the daemon logs is about refusals, not about work it was rightly asked to do."""
        rng = self.rng
        acts = command not in ("status", "rebirth")
        roll = rng.random()
        if roll < 0.12:
            if command == "ptt":
                return json.dumps({"state": "off"}).encode(), True
            if command in ("status", "rebirth") and (command != "rebirth" or rng.random() < 0.2):
                body = {"transaction": f"fuzz-{rng.randrange(10**6)}"} if rng.random() < 0.5 else {}
                return json.dumps(body).encode(), True
        if roll < 0.22:
            if acts and command != "ptt":  # an empty body is {}: a valid recall or ack
                return json.dumps(self.wrong_types(command)).encode(), False
            return b"", False
        if roll < 0.32:
            return rng.choice(
                [
                    b"{",
                    b'{"state": "off"',
                    b'{"a":}',
                    b"{'transaction': 1}",
                    b'{"a": NaN}',
                    b'{"a": -Infinity}',
                    b'{"a": 1,}',
                    b'{"a": 1}{"b": 2}',
                    b"\xff\xfe{}",
                    b'{"transaction": "\xff"}',
                    b'{"transaction": "\xed\xa0\x80"}',  # a surrogate encoded as UTF-8
                    b'{"transaction": "a\x00b"}',
                    b"\x00",
                    b'{"transaction": 1, "transaction": 2}',
                    b'{"a": 01}',
                    b'"unterminated',
                    b'{"a": "\\x41"}',
                    b'{"a": "\\u12"}',
                    b"\xef\xbb\xbf{}",
                    rng.randbytes(rng.randint(1, 64)),
                ]
            ), False
        if roll < 0.42:
            return self.deep(), False
        if roll < 0.48:
            return rng.choice(
                [
                    b'{"transaction": "\\ud800"}',
                    b'{"transaction": "a\\udfffb"}',
                    b'{"\\udc00": 1}',
                    b'{"text": "\\ud83d"}',
                    b'{"state": "\\udfff"}',
                ]
            ), False
        if roll < 0.54:
            digits = b"9" * 5000
            return rng.choice(
                [
                    b'{"transaction": ' + digits + b"}",
                    b'{"duration_s": ' + digits + b', "state": "off"}',
                    b'{"seconds": -' + digits + b"}",
                    b'{"seconds": 1e' + digits + b"}",
                    digits,
                ]
            ), False
        if roll < 0.70:
            return json.dumps(self.wrong_types(command)).encode(), False
        if roll < 0.74:
            return b" " * rng.randint(70_000, 200_000) + b"{}", False  # over the size limit
        if roll < 0.84:
            return json.dumps(rng.choice([[], "status", None, 7, True])).encode(), False
        fields: dict[str, Any] = {rng.choice(_KEYS): self.value() for _ in range(rng.randint(1, 4))}
        if acts:
            fields["extra"] = 1  # an unknown field: refused, whatever the rest
        return json.dumps(fields).encode(), False

    def big(self) -> bytes:
        """About 1 MB, each of a different kind."""
        rng = self.rng
        makers: list[Callable[[], bytes]] = [
            lambda: rng.randbytes(MB),
            lambda: json.dumps({"transaction": "x" * MB}).encode(),
            lambda: b" " * MB + b"{}",
            lambda: b"[" * (MB // 2) + b"]" * (MB // 2),
            lambda: json.dumps({"text": ["a"] * (MB // 5)}).encode(),
        ]
        return rng.choice(makers)()

    def make(self, big: bool) -> tuple[Message, bool]:
        """One message and whether the bench meant it as a valid request."""
        rng = self.rng
        if big or rng.random() < 0.82:
            topic, _scope, command = self.request_topic()
            payload, valid = (self.big(), False) if big else self.payload(command)
        else:
            topic = self.other_topic()
            payload, valid = self.payload(rng.choice(["status", "ptt", "x"]))[0], False
        if could_key(topic, payload):
            self.guarded += 1
            payload, valid = b'{"state": "off"}', False
        reply = request_reply_topic(self.prefix, topic)
        # Retained: never the daemon's own state topics (that would clobber them), never empty
        # (an empty retained message deletes one; it is not a request).
        retain = (
            bool(payload)
            and rng.random() < 0.05
            and not topic.endswith(("/state", "/status", "/event"))
        )
        response_topic = None
        if reply is not None and rng.random() < 0.05:
            response_topic = rng.choice([f"{REPLY_PREFIX}/{self.text()}", reply])
        message = Message(topic, payload, rng.choice((0, 1, 2)), retain, reply, response_topic)
        return message, valid


# --- the MQTT side -------------------------------------------------------------------------


class Fuzzer:
    """One MQTT v5 client: sends the messages and counts what comes back, per correlation."""

    def __init__(self, port: int, prefix: str) -> None:
        self.port = port
        self.prefix = prefix
        self.cond = threading.Condition()
        self.sent: list[Message] = []
        self.answers: Counter[int] = Counter()
        self.first_status: dict[int, str] = {}
        self.outstanding: set[int] = set()
        self.response_topic_replies = 0
        self.misrouted = 0
        self.answered_non_request: set[int] = set()
        self.events: Counter[str] = Counter()
        self.sessions: list[tuple[str, int]] = []
        self.disconnects = 0
        self.handler_errors = 0
        self.last_response = time.monotonic()
        self._connected = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.max_queued_messages_set(0)
        self.client.connect("127.0.0.1", port)
        nodelay(self.client)
        self.client.loop_start()
        if not self._connected.wait(10):
            raise RuntimeError("the fuzzing client could not connect")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        p = self.prefix
        for topic in (
            f"{p}/response/+",
            f"{p}/+/response/+",
            f"{p}/+/+/response/+",
            f"{p}/channels/+/event",
            f"{p}/status",
            f"{REPLY_PREFIX}/#",
        ):
            client.subscribe(topic, qos=1)
        self._connected.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self.disconnects += 1

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        try:
            self._receive(msg.topic, bytes(msg.payload), msg.properties)
        except Exception as exc:  # the paho thread must live on, whatever arrives
            self.handler_errors += 1
            print(f"fuzzer: cannot handle a message on {msg.topic[:80]!r}: {exc!r}", flush=True)

    def _receive(self, topic: str, payload: bytes, properties: Any) -> None:
        correlation = getattr(properties, "CorrelationData", None)
        if not correlation:
            # The daemon's own messages: its status and channel events (never correlated).
            body = _json(payload)
            if not isinstance(body, dict):
                return
            if topic == f"{self.prefix}/status":
                with self.cond:
                    self.sessions.append((str(body.get("state")), int(body.get("session", -1))))
                    self.cond.notify_all()
            elif topic.endswith("/event"):
                self.events[str(body.get("type"))] += 1
            return
        kind, _, number = bytes(correlation).partition(b":")
        with self.cond:
            if kind not in (b"f", b"o") or not number.isdigit() or int(number) >= len(self.sent):
                self.misrouted += 1
                return
            index = int(number)
            message = self.sent[index]
            if kind == b"o":  # not sent to a request topic: only its own echo may come back
                if topic != message.topic:
                    self.answered_non_request.add(index)
                return
            if topic == message.reply_topic:
                self.answers[index] += 1
                self.last_response = time.monotonic()
                if self.answers[index] == 1:
                    body = _json(payload)
                    status = body.get("status") if isinstance(body, dict) else "unreadable"
                    self.first_status[index] = str(status)
                    self.outstanding.discard(index)
                    self.cond.notify_all()
            elif topic.startswith(REPLY_PREFIX + "/") or topic == message.response_topic:
                self.response_topic_replies += 1
            elif topic != message.topic:
                self.misrouted += 1

    def send(self, message: Message) -> None:
        with self.cond:
            index = len(self.sent)
            self.sent.append(message)
            if message.reply_topic is not None:
                self.outstanding.add(index)
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        kind = b"f" if message.reply_topic is not None else b"o"
        props.CorrelationData = kind + b":" + str(index).encode()
        if message.response_topic is not None:
            props.ResponseTopic = message.response_topic
        info = self.client.publish(
            message.topic, message.payload, qos=message.qos, retain=message.retain, properties=props
        )
        if message.reply_topic is None:
            info.wait_for_publish(timeout=10)  # pace what no response will pace

    def in_flight(self) -> int:
        with self.cond:
            return len(self.outstanding)

    def online_session(self) -> int | None:
        with self.cond:
            last = self.sessions[-1] if self.sessions else None
            return last[1] if last is not None and last[0] == "online" else None

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


# --- the run -------------------------------------------------------------------------------


@dataclass
class Watch:
    """The daemon's process: crashes seen, restarts made, stalls given up on."""

    daemon: Daemon
    fuzzer: Fuzzer
    crashes: int = 0
    restarts: int = 0
    stalls: int = 0
    exit_codes: list[int | None] | None = None
    lost_in_crash: int = 0

    def pid(self) -> int:
        assert self.daemon.proc is not None
        return self.daemon.proc.pid

    def check(self) -> None:
        proc = self.daemon.proc
        if proc is None or proc.poll() is None:
            return
        self.crashes += 1
        self.exit_codes = [*(self.exit_codes or []), proc.returncode]
        tail = self.daemon.log().splitlines()[-3:]
        print(f"daemon exited ({proc.returncode}): {' | '.join(tail)[:300]}", flush=True)
        with self.fuzzer.cond:
            self.lost_in_crash += len(self.fuzzer.outstanding)
            self.fuzzer.outstanding.clear()  # a new process starts a clean MQTT session
        self.daemon.stop()
        before = len(self.fuzzer.sessions)
        self.daemon.start()
        self.restarts += 1
        wait_for(
            lambda: any(s == "online" for s, _ in self.fuzzer.sessions[before:]),
            timeout=60,
            what="the restarted daemon online",
        )
        self.fuzzer.last_response = time.monotonic()

    def wait_window(self, size: int) -> None:
        """Until fewer than `size` requests are in flight; a stuck daemon is given up on."""
        fuzzer = self.fuzzer
        while True:
            with fuzzer.cond:
                if len(fuzzer.outstanding) < size:
                    return
                fuzzer.cond.wait(0.2)
                stuck = time.monotonic() - fuzzer.last_response > STALL_S
            self.check()
            if stuck:
                self.stalls += 1
                print(f"no response for {STALL_S:.0f} s: giving up on those in flight", flush=True)
                with fuzzer.cond:
                    fuzzer.outstanding.clear()
                    fuzzer.last_response = time.monotonic()

    def drain(self, quiet_s: float = 3.0, patience_s: float = 20.0) -> None:
        """Until every request is answered and responses have stopped (or stopped coming)."""
        fuzzer = self.fuzzer
        while True:
            self.check()
            with fuzzer.cond:
                idle = time.monotonic() - fuzzer.last_response
                done = not fuzzer.outstanding
            if (done and idle > quiet_s) or idle > patience_s:
                return
            time.sleep(0.1)


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="consolegw-fuzz-") as tmp_name:
        tmp = Path(tmp_name)
        broker = Broker(tmp / "broker")
        broker.start()
        config_path = tmp / "fuzz.toml"
        config_path.write_text(sim_config(tmp, broker))
        config = load_config(config_path)
        commands: dict[str, list[str]] = {
            str(scope): sorted(names)
            for scope, names in build_gateway(config).router.commands().items()
        }
        audio_dir = tmp / "audio"
        sim_log = (tmp / "sim.log").open("wb")
        sim = subprocess.Popen(
            [
                *(sys.executable, "-m", "hw_sim", "-c", str(config_path)),
                *("--control-port", str(free_port()), "--audio-workdir", str(audio_dir)),
            ],
            stdout=sim_log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            cwd=ROOT,
        )
        daemon = Daemon(config_path, env=sim_env(audio_dir))
        fuzzer: Fuzzer | None = None
        try:
            wait_for_simulator(sim, tmp / "sim.log", audio_dir)
            fuzzer = Fuzzer(broker.port, config.prefix)
            daemon.start()
            try:
                wait_for(fuzzer.online_session, timeout=60, what="the daemon online")
            except AssertionError:
                print(daemon.log()[-3000:], file=sys.stderr)
                raise
            time.sleep(2.0)  # devices found, first states out: the steady state
            return fuzz(
                args=args,
                rng=rng,
                config=config,
                commands=commands,
                daemon=daemon,
                fuzzer=fuzzer,
                tmp=tmp,
            )
        finally:
            if fuzzer is not None:
                fuzzer.close()
            daemon.stop()
            sim.send_signal(signal.SIGTERM)
            try:
                sim.wait(timeout=15)
            except subprocess.TimeoutExpired:
                sim.kill()
                sim.wait()
            sim_log.close()
            broker.stop()


def fuzz(
    *,
    args: argparse.Namespace,
    rng: random.Random,
    config: Config,
    commands: dict[str, list[str]],
    daemon: Daemon,
    fuzzer: Fuzzer,
    tmp: Path,
) -> dict[str, Any]:
    messages = Messages(rng=rng, config=config, commands=commands)
    watch = Watch(daemon, fuzzer)
    warmup = min(1000, args.count // 4)
    # The warm-up sends every kind of message the run does, 1 MB payloads included: RSS
    # before is then the daemon's working size, and growth after it is what the run leaks.
    warmup_big = min(20, args.big // 10, warmup // 10)
    big_at = set(rng.sample(range(warmup), warmup_big)) | set(
        rng.sample(range(warmup, args.count), min(args.big, args.count - warmup))
    )
    valid: set[int] = set()
    retained: set[str] = set()
    payload_bytes = 0
    log_start = count_lines(daemon.log_path)
    start = fuzzer.last_response = time.monotonic()
    rss_before: int | None = None
    pid_before = watch.pid()
    progress_every = max(1, args.count // 10)
    rss_samples: list[int | None] = []
    rss_middle: int | None = None
    for i in range(args.count):
        if i == warmup:
            watch.wait_window(1)
            time.sleep(0.5)
            pid_before = watch.pid()
            rss_before = vm_rss_kb(pid_before)
        if i == (warmup + args.count) // 2:
            watch.wait_window(1)  # sampled at rest, as before and after
            time.sleep(0.5)
            rss_middle = vm_rss_kb(pid_before) if watch.pid() == pid_before else None
        message, meant_valid = messages.make(i in big_at)
        if message.reply_topic is not None:
            watch.wait_window(WINDOW)
        if meant_valid:
            valid.add(i)
        if message.retain:
            retained.add(message.topic)
        payload_bytes += len(message.payload)
        fuzzer.send(message)
        if i % 200 == 0:
            watch.check()
        if (i + 1) % progress_every == 0:
            # A leak grows with every tenth; memory the allocator keeps levels off.
            rss_samples.append(vm_rss_kb(watch.pid()))
            print(f"{i + 1} sent, {fuzzer.in_flight()} in flight, RSS {rss_samples[-1]} kB")
    watch.drain()
    elapsed = time.monotonic() - start
    time.sleep(1.0)
    pid_after = watch.pid()
    rss_after = vm_rss_kb(pid_after)
    log_end = count_lines(daemon.log_path)
    breakdown = log_breakdown(daemon.log_path, log_start)
    # Clean up: every retained topic we set, cleared; then see that none is left.
    for topic in sorted(retained):
        fuzzer.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(timeout=10)
    left = retained_left(fuzzer.port, retained)
    keyed = sum(
        "KEYED" in line for line in (tmp / "sim.log").read_text(errors="replace").splitlines()
    )
    return figures(
        args=args,
        fuzzer=fuzzer,
        watch=watch,
        valid=valid,
        retained=len(retained),
        retained_left=left,
        payload_bytes=payload_bytes,
        rss=(rss_before, rss_middle, rss_after, pid_before == pid_after),
        rss_samples=rss_samples,
        log_lines=log_end - log_start,
        breakdown=breakdown,
        keyed=keyed,
        guarded=messages.guarded,
        elapsed=elapsed,
    )


def retained_left(port: int, topics: set[str]) -> int:
    """Retained messages still on the topics the bench set, seen by a fresh subscriber."""
    if not topics:
        return 0
    seen: set[str] = set()
    lock = threading.Lock()

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        if msg.retain and msg.payload and msg.topic in topics:
            with lock:
                seen.add(msg.topic)

    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    for chunk in _chunks(sorted(topics), 50):
        client.subscribe([(t, 0) for t in chunk])
    time.sleep(1.5)
    client.loop_stop()
    client.disconnect()
    return len(seen)


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def figures(
    *,
    args: argparse.Namespace,
    fuzzer: Fuzzer,
    watch: Watch,
    valid: set[int],
    retained: int,
    retained_left: int,
    payload_bytes: int,
    rss: tuple[int | None, int | None, int | None, bool],
    rss_samples: list[int | None],
    log_lines: int,
    breakdown: Counter[str],
    keyed: int,
    guarded: int,
    elapsed: float,
) -> dict[str, Any]:
    sent = fuzzer.sent
    requests = [i for i, m in enumerate(sent) if m.reply_topic is not None]
    once = sum(1 for i in requests if fuzzer.answers[i] == 1)
    more = sum(1 for i in requests if fuzzer.answers[i] > 1)
    never = sum(1 for i in requests if fuzzer.answers[i] == 0)
    refused = sum(1 for i in requests if fuzzer.first_status.get(i, "ok") != "ok")
    # Bad: what the daemon refused, and what the bench meant as bad and got no answer to.
    bad = refused + sum(1 for i in requests if fuzzer.answers[i] == 0 and i not in valid)
    rss_before, rss_middle, rss_after, same_process = rss
    growth = (
        rss_after - rss_before
        if rss_before is not None and rss_after is not None and same_process
        else None
    )
    # The allocator's high water is reached within the first ~10,000 messages (about 3 MB
    # with 1 MB payloads in the mix) and RSS stays flat after it (measured flat over 30,000
    # more): a leak shows as growth over the second half, which is what the target judges.
    late_growth = (
        rss_after - rss_middle
        if rss_middle is not None and rss_after is not None and same_process
        else None
    )
    per_1000_bad = round(log_lines * 1000 / bad, 2) if bad else None
    result: dict[str, Any] = {
        "bench": "fuzz",
        "count": args.count,
        "seed": args.seed,
        "sent": len(sent),
        "request_topic": len(requests),
        "other_topic": len(sent) - len(requests),
        "meant_valid": len(valid),
        "bad_requests": bad,
        "answered_exactly_once": once,
        "answered_more_than_once": more,
        "never_answered": never,
        "answered_once_fraction": round(once / len(requests), 5) if requests else None,
        "responses_ok": sum(1 for s in fuzzer.first_status.values() if s == "ok"),
        "responses_error": refused,
        "response_topic_replies": fuzzer.response_topic_replies,
        "misrouted_responses": fuzzer.misrouted,
        "answered_non_request": len(fuzzer.answered_non_request),
        "answered_non_request_topics": sorted(
            {sent[i].topic for i in fuzzer.answered_non_request}, key=len
        )[:5],
        "daemon_crashes": watch.crashes,
        "daemon_restarts": watch.restarts,
        "daemon_exit_codes": watch.exit_codes or [],
        "requests_lost_in_crashes": watch.lost_in_crash,
        "stalls": watch.stalls,
        "mqtt_sessions": len({n for s, n in fuzzer.sessions if s == "online"}),
        "client_disconnects": fuzzer.disconnects,
        "client_handler_errors": fuzzer.handler_errors,
        "rss_before_kb": rss_before,
        "rss_after_kb": rss_after,
        "rss_middle_kb": rss_middle,
        "rss_growth_kb": growth,
        "rss_second_half_growth_kb": late_growth,
        "rss_samples_kb": rss_samples,
        "log_lines": log_lines,
        "log_lines_per_1000_bad": per_1000_bad,
        "log_lines_by_logger": dict(breakdown.most_common(8)),
        "ptt_on_events": fuzzer.events["ptt.on"],
        "radio_keyed_seen": keyed,
        "ptt_bodies_guarded": guarded,
        "big_payloads": min(args.big, args.count),
        "payload_mb": round(payload_bytes / MB, 1),
        "retained_set": retained,
        "retained_left": retained_left,
        "elapsed_s": round(elapsed, 1),
        "messages_per_s": round(len(sent) / elapsed, 1) if elapsed else None,
    }
    checks = targets(result)
    result["targets_met"] = {name: ok for name, (_, _, ok) in checks.items()}
    result["pass"] = all(ok for _, _, ok in checks.values())
    return result


def targets(r: dict[str, Any]) -> dict[str, tuple[str, str, bool]]:
    """Each target: (what is wanted, what was measured, met)."""
    growth = r["rss_second_half_growth_kb"]
    per_bad = r["log_lines_per_1000_bad"]
    return {
        "crashes": (
            "0",
            f"{r['daemon_crashes']} (restarts {r['daemon_restarts']}, stalls {r['stalls']})",
            r["daemon_crashes"] == 0 and r["stalls"] == 0,
        ),
        "answered_exactly_once": (
            "100%",
            f"{r['answered_exactly_once']} of {r['request_topic']} "
            f"({100 * (r['answered_once_fraction'] or 0):.2f}%; more than once "
            f"{r['answered_more_than_once']}, never {r['never_answered']})",
            r["answered_exactly_once"] == r["request_topic"],
        ),
        "rss_growth": (
            "< 2048 kB over the second half",
            "unknown (the process changed)"
            if growth is None
            else f"{growth} kB (after the warm-up: {r['rss_growth_kb']} kB)",
            growth is not None and growth < TARGET_RSS_GROWTH_KB,
        ),
        "log_lines": (
            f"<= {TARGET_LOG_LINES_PER_1000_BAD:g} per 1000 bad",
            f"{per_bad} per 1000 bad ({r['log_lines']} lines, {r['bad_requests']} bad)",
            per_bad is not None and per_bad <= TARGET_LOG_LINES_PER_1000_BAD,
        ),
        "ptt_on": (
            "0",
            f"{r['ptt_on_events']} ptt.on events, {r['radio_keyed_seen']} radio keyings",
            r["ptt_on_events"] == 0 and r["radio_keyed_seen"] == 0,
        ),
    }


def report(r: dict[str, Any]) -> None:
    print(
        f"sent {r['sent']} messages ({r['payload_mb']} MB, {r['big_payloads']} of 1 MB) in "
        f"{r['elapsed_s']} s ({r['messages_per_s']}/s): {r['request_topic']} to request topics, "
        f"{r['other_topic']} to other topics, {r['retained_set']} topics retained "
        f"({r['retained_left']} left after cleanup)"
    )
    print(
        f"responses: {r['responses_ok']} ok, {r['responses_error']} refused; "
        f"{r['response_topic_replies']} on MQTT v5 response topics, "
        f"{r['answered_non_request']} answers to non-request topics, "
        f"{r['misrouted_responses']} misrouted"
    )
    print(
        f"daemon: exit codes {r['daemon_exit_codes']}, {r['requests_lost_in_crashes']} requests "
        f"lost in crashes, {r['mqtt_sessions']} MQTT sessions, RSS {r['rss_before_kb']} -> "
        f"{r['rss_after_kb']} kB (each tenth of the run: {r['rss_samples_kb']}); "
        f"log lines by logger {r['log_lines_by_logger']}"
    )
    if r["answered_non_request_topics"]:
        print(f"non-request topics answered, e.g.: {r['answered_non_request_topics']}")
    print(f"{'target':<24} {'wanted':<24} measured")
    for name, (wanted, measured, ok) in targets(r).items():
        print(f"{name:<24} {wanted:<24} {measured}  {'ok' if ok else 'MISSED'}")
    print(f"pass: {r['pass']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, help="messages to send (default 20000)")
    parser.add_argument("--big", type=int, help="1 MB payloads among them (default 300)")
    parser.add_argument("--quick", action="store_true", help="2000 messages, 5 of 1 MB")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)
    count = args.count or (2000 if args.quick else 20_000)
    if args.big is None:
        args.big = 5 if args.quick else max(1, count * 300 // 20_000)
    args.count = count
    if args.count < 4:
        parser.error("--count must be at least 4")
    result = run(args)
    report(result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
