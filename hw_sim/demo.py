"""`make demo`: a private broker, the simulator, the daemon, and the MQTT traffic on screen.

    python -m hw_sim.demo [--config config/sim.toml] [--duration SECONDS] [--raw]

Ctrl-C stops all of it. Lines start with who speaks: [sim] the simulated hardware, [gateway]
the daemon's log, [mqtt] what a CAD subscriber receives, [cad] requests this demo sends.
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
from pathlib import Path
from typing import IO, Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from gateway.config import load_config
from hw_sim.audio import sim_env

ROOT = Path(__file__).resolve().parent.parent
_LOG_STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")
_print_lock = threading.Lock()


def say(who: str, text: str) -> None:
    with _print_lock:
        print(f"{time.strftime('%H:%M:%S')} [{who}] {text}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_broker(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    conf = workdir / "mosquitto.conf"
    # As root, mosquitto would switch to its own user and lose access to our temp folder.
    user = "user root\n" if os.geteuid() == 0 else ""
    # set_tcp_nodelay: what the README asks of a console's broker (PTT latency).
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n{user}"
    )
    proc = subprocess.Popen(
        [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError("mosquitto did not start (is it installed? `make demo` installs it)")


def wait_for_audio_sim(workdir: Path, sim: subprocess.Popen[bytes]) -> None:
    """The daemon must not look for sound cards before the simulator has made them."""
    deadline = time.monotonic() + 20
    while not (workdir / "asound.conf").exists() or not list(workdir.glob("*/native")):
        if sim.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the simulator did not start its sound cards")
        time.sleep(0.05)
    time.sleep(0.5)


def relay(stream: IO[bytes], who: str) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode(errors="replace").rstrip()
        if line.startswith("[sim] "):
            line = line[6:]
        line = _LOG_STAMP.sub("", line)  # the demo stamps every line itself
        say(who, line)


class TrafficPrinter:
    """Subscribes like a CAD system would and prints each message in one readable line."""

    def __init__(self, port: int, prefix: str, raw: bool) -> None:
        self.prefix = prefix
        self.raw = raw
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
        line = self._describe(topic[len(self.prefix) + 1 :], body)
        if line:
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
        if topic.endswith("/event"):
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
            elif what.startswith("tty."):
                what = f"{what} {json.dumps(data)}"
            elif what == "recall.saved":
                what = f"{what} {data['seconds']:.1f} s ({data['reason']}) -> {data['path']}"
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hw_sim.demo", description=__doc__)
    parser.add_argument("--config", default=str(ROOT / "config" / "sim.toml"))
    parser.add_argument("--duration", type=float, help="stop by itself after this many seconds")
    parser.add_argument("--raw", action="store_true", help="print raw topics and JSON payloads")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    prefix = config.prefix
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    procs: list[subprocess.Popen[bytes]] = []
    printer: TrafficPrinter | None = None
    with tempfile.TemporaryDirectory(prefix="consolegw-demo-") as tmp:
        try:
            port = free_port()
            procs.append(start_broker(Path(tmp), port))
            say("demo", f"private MQTT broker on 127.0.0.1:{port}; watch it yourself with:")
            say("demo", f"  mosquitto_sub -p {port} -t '{prefix}/#' -v")
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            audio_dir = Path(tmp) / "audio"
            sim = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "hw_sim",
                    "-c",
                    args.config,
                    "--scenario",
                    "demo",
                    "--control-port",
                    str(free_port()),
                    "--audio-workdir",
                    str(audio_dir),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
            )
            procs.append(sim)
            printer = TrafficPrinter(port, prefix, args.raw)
            wait_for_audio_sim(audio_dir, sim)
            daemon = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gateway",
                    "run",
                    "-c",
                    args.config,
                    "--broker",
                    f"mqtt://127.0.0.1:{port}",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env={**env, **sim_env(audio_dir)},  # the daemon sees the simulated cards
                cwd=ROOT,
            )
            procs.append(daemon)
            for proc, who in ((sim, "sim"), (daemon, "gateway")):
                assert proc.stdout is not None
                threading.Thread(target=relay, args=(proc.stdout, who), daemon=True).start()
            threading.Thread(
                target=cad_requests,
                args=(port, prefix, [c for c, s in config.channels.items() if s.radio], stop),
                daemon=True,
            ).start()
            deadline = None if args.duration is None else time.monotonic() + args.duration
            while not stop.wait(0.2):
                if deadline is not None and time.monotonic() > deadline:
                    break
                if daemon.poll() is not None or sim.poll() is not None:
                    say("demo", "a process ended unexpectedly; stopping")
                    break
            stop.set()
        finally:
            say("demo", "stopping: daemon first (it releases every PTT), then simulator, broker")
            for proc in reversed(procs):
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                time.sleep(0.3)  # let the last lines (offline status) arrive
            if printer is not None:
                printer.close()
    say("demo", "stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
