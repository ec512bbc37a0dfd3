"""`make demo`: a private broker, the simulator, the daemon, and the MQTT traffic on screen.

    python -m hw_sim.demo [--config config/sim.toml] [--duration SECONDS] [--raw]
                          [--keep-ports]

Ctrl-C stops all of it. Lines start with who speaks: [sim] the simulated hardware, [gateway]
the daemon's log, [mqtt] what a CAD subscriber receives, [cad] requests this demo sends.

Every demo is private: its broker and the simulated devices are on free ports (the daemon
reads the config the simulator wrote with them; --keep-ports serves the config's ports as
written), and when another daemon holds the config's state_dir the demo's daemon gets a
temporary one. So two demos, or a demo and the tests, run side by side. A burst of events of
one kind on one channel (a flapping COS line) is shown as its first few lines and then one
summary line every 10 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from gateway.config import Config, load_config
from hw_sim.audio import sim_env
from hw_sim.resolve import config_text, write_atomically
from hw_sim.signals import SignalStop

ROOT = Path(__file__).resolve().parent.parent
_LOG_STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")
_print_lock = threading.Lock()


def say(who: str, text: str) -> None:
    with _print_lock:
        print(f"{time.strftime('%H:%M:%S')} [{who}] {text}", flush=True)


class DemoError(Exception):
    """The demo cannot go on; the message is the one line shown."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_SETPRIV = shutil.which("setpriv")


def spawn(command: list[str], **options: Any) -> subprocess.Popen[bytes]:
    """A child of the demo, in a session of its own: Ctrl-C reaches only the demo, which
    stops the children in order (daemon first, broker last). `setpriv --pdeathsig` has the
    kernel send it SIGTERM when the demo dies, even by SIGKILL, so a killed demo leaves no
    simulator, daemon or broker behind holding ports and CPU."""
    prefix = [_SETPRIV, "--pdeathsig", "TERM", "--"] if _SETPRIV else []
    return subprocess.Popen([*prefix, *command], start_new_session=True, **options)


def start_broker(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.access(binary, os.X_OK):
        raise DemoError("mosquitto is not installed: `make demo` installs it")
    conf = workdir / "mosquitto.conf"
    # As root, mosquitto would switch to its own user and lose access to our temp folder.
    user = "user root\n" if os.geteuid() == 0 else ""
    for _ in range(3):  # a free port can be taken before mosquitto binds it: try another
        port = free_port()
        # set_tcp_nodelay: what the README asks of a console's broker (PTT latency).
        conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n{user}"
        )
        proc = spawn([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                if proc.poll() is None:
                    return proc, port
            time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        assert proc.stderr is not None
        error = proc.stderr.read().decode(errors="replace").strip()
        if "in use" not in error:
            raise DemoError(f"mosquitto did not start: {error or 'no answer on its port'}")
    raise DemoError("mosquitto did not start: three free ports were taken before it bound them")


def wait_for_sim(written: Path, sim: subprocess.Popen[bytes], said: deque[str]) -> None:
    """The simulator writes the daemon's config once every device, sound cards included,
    is served: the daemon must not look for them before."""
    deadline = time.monotonic() + 30
    while not written.exists():
        if sim.poll() is not None:
            time.sleep(0.2)  # let the relay print its last words: the reason
            why = "its last line above says why" if said else "it said nothing"
            raise DemoError(
                f"the simulator stopped (exit status {sim.returncode}) before serving its "
                f"devices; {why}"
            )
        if time.monotonic() > deadline:
            raise DemoError("the simulator did not serve its devices within 30 s")
        time.sleep(0.05)


def relay(stream: IO[bytes], who: str, said: deque[str] | None = None) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode(errors="replace").rstrip()
        if line.startswith("[sim] "):
            line = line[6:]
        line = _LOG_STAMP.sub("", line)  # the demo stamps every line itself
        if said is not None:
            said.append(line)
        say(who, line)


def daemon_state_dir(config: Config, workdir: Path) -> Path | None:
    """None: the config's state_dir; a temporary one when another daemon holds it (two
    daemons on one state_dir would share one outbox: the second one refuses to start)."""
    from gateway.lock import probe

    state_dir = config.gateway.state_dir
    found = probe(state_dir)
    if found.lock is not None:
        found.lock.release()  # only a look: the daemon takes it in a moment
    if found.state == "free":
        return None
    why = found.holder.describe() + " holds it" if found.holder else found.reason
    own = workdir / "state"
    say("demo", f"state_dir {state_dir} is in use ({why}): this demo's daemon uses {own}")
    return own


FLOOD_SHOWN = 4
"""Lines of one kind about one source shown per window before the rest are summed up."""
FLOOD_WINDOW_S = 10.0
FLOOD_QUIET_S = 2.0
"""A flood this long without a line is over: its summary comes at once, not at the window's
end."""


@dataclass
class _Held:
    since: float
    last: float
    count: int = 0
    kinds: set[str] = field(default_factory=set)


class FloodSummary:
    """Repeated lines of one family (cos.on/cos.off, channel state) about one source: the
    first FLOOD_SHOWN within FLOOD_WINDOW_S are shown, the rest are counted and told in one
    line per window, or as soon as the flood stops ("ems-south cos.off/cos.on x 37 more in
    the last 10 s"). A flapping COS line otherwise fills the screen and hides everything
    else. Thread-safe."""

    def __init__(
        self,
        *,
        shown: int = FLOOD_SHOWN,
        window_s: float = FLOOD_WINDOW_S,
        quiet_s: float = FLOOD_QUIET_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._shown = shown
        self._window_s = window_s
        self._quiet_s = quiet_s
        self._clock = clock
        self._lock = threading.Lock()
        self._recent: dict[tuple[str, str], deque[float]] = {}
        self._held: dict[tuple[str, str], _Held] = {}

    def admit(self, source: str, family: str, kind: str) -> bool:
        """True: show this line; False: it is counted into the next summary."""
        with self._lock:
            now = self._clock()
            key = (source, family)
            recent = self._recent.setdefault(key, deque())
            while recent and now - recent[0] > self._window_s:
                recent.popleft()
            recent.append(now)
            held = self._held.get(key)
            if held is None:
                if len(recent) <= self._shown:
                    return True
                held = self._held[key] = _Held(since=now, last=now)
            held.count += 1
            held.last = now
            held.kinds.add(kind)
            return False

    def due(self, *, final: bool = False) -> list[str]:
        """The summaries due now: a window has passed, or the flood has stopped (`final`:
        every one, as the demo ends)."""
        lines = []
        with self._lock:
            now = self._clock()
            for key, held in list(self._held.items()):
                quiet = final or now - held.last >= self._quiet_s
                if not quiet and now - held.since < self._window_s:
                    continue
                if held.count:
                    kinds = "/".join(sorted(held.kinds))
                    lines.append(
                        f"{key[0]:<12} {kinds} x {held.count} more in the last "
                        f"{now - held.since:.0f} s"
                    )
                if quiet:
                    del self._held[key]
                    self._recent.pop(key, None)  # the next line starts afresh
                else:
                    self._held[key] = _Held(since=now, last=held.last)
        return lines


def _flood_family(topic: str, body: dict[str, Any]) -> tuple[str, str, str] | None:
    """(source, family, kind) of a line that can come in floods; None for the others."""
    parts = topic.split("/")
    if topic == "event" or topic.endswith("/event"):
        kind = str(body.get("type"))
        family = kind.split(".", maxsplit=1)[0]
        fault = body.get("data", {}).get("fault")
        if fault:  # fault.raised/fault.cleared of one fault: one family per fault
            family, kind = f"{family} {fault}", f"{kind} {fault}"
        return str(body.get("source_id")), family, kind
    if len(parts) == 3 and parts[2] in ("state", "audio"):
        return parts[1], parts[2], f"{parts[2]} changes"
    return None


class TrafficPrinter:
    """Subscribes like a CAD system would and prints each message in one readable line."""

    def __init__(self, port: int, prefix: str, raw: bool) -> None:
        self.prefix = prefix
        self.raw = raw
        self.flood = FloodSummary()
        self._last_state: dict[str, Any] = {}
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(f"{prefix}/#", qos=1)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        topic: str = msg.topic
        if "/request/" in topic:
            return
        try:
            body = json.loads(msg.payload) if msg.payload else None
        except ValueError:
            body = None
        if self.raw or not isinstance(body, dict):
            say("mqtt", f"{topic} {msg.payload.decode(errors='replace')}")
            return
        sub = topic[len(self.prefix) + 1 :]
        line = self._describe(sub, body)
        if not line:
            return
        family = _flood_family(sub, body)
        if family is None or self.flood.admit(*family):
            say("mqtt", line)

    def _describe(self, topic: str, body: dict[str, Any]) -> str | None:
        if topic == "status":
            return f"gateway {body['state'].upper()} (session {body['session']})"
        if topic.endswith("/state") and topic.startswith("channels/"):
            key = (body["state"], body["ptt"], body["cos"], body["device"], tuple(body["faults"]))
            if self._last_state.get(topic) == key:
                return None
            self._last_state[topic] = key
            faults = ",".join(body["faults"]) or "none"
            ptt = "ON" if body["ptt"] else "off"
            cos = "ON" if body["cos"] else "off"
            return (
                f"{body['channel']:<12} state {body['state']:<12} ptt={ptt} cos={cos}"
                f" device={body['device']} faults={faults}"
            )
        if topic == "state":
            return None  # gateway health: shown by `status` requests, not worth a line each
        if topic.startswith("channels/") and topic.endswith("/audio"):
            activity_key = (body["active"], body["device"])
            if self._last_state.get(topic) == activity_key:
                return None  # levels come every second; show only activity changes
            self._last_state[topic] = activity_key
            activity = "ACTIVE" if body["active"] else "quiet"
            return (
                f"{body['channel']:<12} audio {activity} {body['rms_dbfs']:.0f} dBFS "
                f"(floor {body['floor_dbfs']:.0f}) device={body['device']}"
            )
        if topic.startswith(("alarms/", "modules/")) and topic.endswith("/state"):
            fields = ("state", "input", "acknowledged", "module_online")
            described = tuple(body.get(f) for f in fields)
            if self._last_state.get(topic) == described:
                return None
            self._last_state[topic] = described
            shown = " ".join(f"{f}={body[f]}" for f in fields if f in body)
            return f"{topic.split('/')[1]:<12} state {shown}"
        if topic.startswith("channels/") and topic.endswith("/tty"):
            shown = "ON" if body.get("active") else "off"
            return (
                f"{topic.split('/')[1]:<12} tty {shown} baud={body.get('baud')} "
                f"last_line={body.get('last_line')!r}"
            )
        if topic == "event" or topic.endswith("/event"):
            data = body.get("data", {})
            what = body["type"]
            if what.startswith("fault."):
                verb = "RAISED" if what == "fault.raised" else "cleared"
                what = f"FAULT {verb} {data['fault']}: {data['message']}"
            elif what.startswith("ptt."):
                what = f"{what} ({data.get('reason')})"
            elif what.startswith(("alarm.", "trouble.")):
                detail = data.get("message") or (
                    f"{data['priority']}, input {data['input']}"
                    if "input" in data
                    else f"acknowledged by {data.get('acknowledged_by')}"
                )
                what = (
                    f"{what.upper() if what == 'alarm.raised' else what} {data['name']}: {detail}"
                )
                if body["type"] == "alarm.restored":
                    self._acknowledge_later(body["source_id"])
            elif what.startswith("module."):
                what = f"{what} {data['message']}"
            elif what == "tty.text":
                if not data["line"]:
                    return None  # characters as they arrive: CAD shows them; one line here
                what = f"tty.text LINE: {data['text']}"
                self._reply_tty(body["source_id"])
            elif what == "dtmf.digit":
                return None  # the string is one line when it ends
            elif what == "dtmf.digits":
                what = f"dtmf.digits {data['digits']}"
            elif what == "page.detected":
                what = f"page.detected {data['name']}"
            elif what == "unit.id":
                what = f"unit.id {data['unit']} ({data['kind']})"
            elif what == "emergency.raised":
                what = f"EMERGENCY.RAISED unit {data['unit']}"
            elif what == "selcall.detected":
                sent = f" (tones {data['tones']})" if data["tones"] != data["digits"] else ""
                what = f"selcall.detected {data['standard'].upper()} {data['digits']}{sent}"
            elif what.startswith(("tty.", "gateway.", "outbox.")):
                what = f"{what} {json.dumps(data)}"
            elif what == "recall.saved":
                what = f"{what} {data['seconds']:.1f} s ({data['reason']}) -> {data['path']}"
            elif what == "recording.saved":
                rec = data["recording"]
                extra = "".join(
                    f", {label} {value}"
                    for label, value in (
                        ("by", rec["requested_by"]),
                        ("faults", ",".join(rec["faults"])),
                        ("text", rec["tty_text"].strip().replace("\n", " / ")[:60]),
                    )
                    if value
                )
                what = (
                    f"{what} #{rec['id']} {rec['direction']} {rec['duration_s']:.1f} s "
                    f"{rec['status']}{extra} -> {rec['path']}"
                )
            return f"{body['source_id']:<12} event #{body['seq']} {what}"
        if "/response/" in topic:
            detail = body.get("error") or json.dumps(body.get("data"))
            parts = topic.split("/")
            target = parts[1] if len(parts) == 4 else "gateway"
            return f"{target:<12} response {parts[-1]}: {body['status']} {detail}"
        return f"{topic} {body}"

    def _reply_tty(self, channel: str) -> None:
        """The call taker answers a TTY caller from CAD."""

        def reply() -> None:
            text = "911 WHAT IS YOUR ADDRESS GA"
            say("cad", f"{channel:<12} request tty: {text}")
            self.client.publish(
                f"{self.prefix}/channels/{channel}/request/tty",
                json.dumps({"text": text, "transaction": "tty-reply"}),
                qos=1,
            )

        timer = threading.Timer(0.5, reply)
        timer.daemon = True
        timer.start()

    def _acknowledge_later(self, alarm_id: str) -> None:
        """CAD's operator acknowledges a latched alarm a moment after it restores."""

        def ack() -> None:
            say("cad", f"{alarm_id:<12} request ack (the operator acknowledges)")
            self.client.publish(
                f"{self.prefix}/alarms/{alarm_id}/request/ack",
                json.dumps({"transaction": f"ack-{alarm_id}"}),
                qos=1,
            )

        timer = threading.Timer(1.0, ack)
        timer.daemon = True
        timer.start()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def cad_requests(port: int, prefix: str, channels: list[str], stop: threading.Event) -> None:
    """Acts as CAD: keys a radio for a few seconds now and then, and asks for status."""
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    count = 0
    try:
        while not stop.wait(6 if count else 4):
            channel = channels[count % len(channels)]
            count += 1
            if count % 3 == 0:
                say("cad", f"{channel:<12} request recall of the last 10 s")
                client.publish(
                    f"{prefix}/channels/{channel}/request/recall",
                    json.dumps({"seconds": 10, "transaction": f"recall-{count}"}),
                    qos=1,
                )
                continue
            transaction = f"cad-{count}"
            say("cad", f"{channel:<12} request ptt on for 3 s (transaction {transaction})")
            client.publish(
                f"{prefix}/channels/{channel}/request/ptt",
                json.dumps({"state": "on", "duration_s": 3, "transaction": transaction}),
                qos=1,
            )
    finally:
        client.loop_stop()
        client.disconnect()


def _daemon_config(written: Path, config: Config, workdir: Path) -> Path:
    """The config the daemon reads: the simulator's (its ports), on a free state_dir."""
    state_dir = daemon_state_dir(config, workdir)
    if state_dir is None:
        return written
    path = workdir / "daemon.toml"
    text = config_text(load_config(written), state_dir=state_dir, note=", for the demo")
    write_atomically(path, text)
    return path


def _stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    say("demo", "stopping: daemon first (it releases every PTT), then simulator, broker")
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        time.sleep(0.3)  # let the last lines (offline status) arrive


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hw_sim.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", default=str(ROOT / "config" / "sim.toml"))
    parser.add_argument("--duration", type=float, help="stop by itself after this many seconds")
    parser.add_argument("--raw", action="store_true", help="print raw topics and JSON payloads")
    parser.add_argument(
        "--keep-ports",
        action="store_true",
        help="serve the devices on the config's ports, not free ones (a busy one is an error)",
    )
    args = parser.parse_args(argv)
    config = load_config(args.config)
    prefix = config.prefix
    stop = threading.Event()
    stopper = SignalStop(stop)
    procs: list[subprocess.Popen[bytes]] = []
    printer: TrafficPrinter | None = None
    failed = False
    with tempfile.TemporaryDirectory(prefix="consolegw-demo-") as tmp:
        workdir = Path(tmp)
        try:
            broker, port = start_broker(workdir)
            procs.append(broker)
            say("demo", f"private MQTT broker on 127.0.0.1:{port}; watch it yourself with:")
            say("demo", f"  mosquitto_sub -p {port} -t '{prefix}/#' -v")
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            audio_dir = workdir / "audio"
            written = workdir / "sim.toml"
            sim = spawn(
                [
                    sys.executable,
                    "-m",
                    "hw_sim",
                    "-c",
                    args.config,
                    *([] if args.keep_ports else ["--free-ports"]),
                    "--write-config",
                    str(written),
                    "--scenario",
                    "demo",
                    "--audio-workdir",
                    str(audio_dir),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
            )
            procs.append(sim)
            sim_said: deque[str] = deque(maxlen=5)
            assert sim.stdout is not None
            threading.Thread(target=relay, args=(sim.stdout, "sim", sim_said), daemon=True).start()
            printer = TrafficPrinter(port, prefix, args.raw)
            wait_for_sim(written, sim, sim_said)
            daemon = spawn(
                [
                    sys.executable,
                    "-m",
                    "gateway",
                    "run",
                    "-c",
                    str(_daemon_config(written, config, workdir)),
                    "--broker",
                    f"mqtt://127.0.0.1:{port}",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env={**env, **sim_env(audio_dir)},  # the daemon sees the simulated cards
                cwd=ROOT,
            )
            procs.append(daemon)
            assert daemon.stdout is not None
            threading.Thread(target=relay, args=(daemon.stdout, "gateway"), daemon=True).start()
            threading.Thread(
                target=cad_requests,
                args=(port, prefix, [c for c, s in config.channels.items() if s.radio], stop),
                daemon=True,
            ).start()
            deadline = None if args.duration is None else time.monotonic() + args.duration
            while not stopper.poll():  # polled: see hw_sim.signals
                time.sleep(0.2)
                for line in printer.flood.due():
                    say("mqtt", line)
                if deadline is not None and time.monotonic() > deadline:
                    break
                for proc, who in ((daemon, "the daemon"), (sim, "the simulator")):
                    if proc.poll() is not None:
                        raise DemoError(f"{who} stopped (exit status {proc.returncode})")
        except DemoError as exc:
            say("demo", f"ERROR: {exc}")
            failed = True
        finally:
            stop.set()
            if printer is not None:
                for line in printer.flood.due(final=True):
                    say("mqtt", line)
            _stop_all(procs)
            if printer is not None:
                printer.close()
    say("demo", "stopped" if not failed else "stopped after an error (see above)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
