"""Real parts for tests: a private mosquitto, a paho subscriber, the daemon as a subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mosquitto_binary() -> str:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("mosquitto is not installed: run `make test`, which installs it")


def nodelay(client: paho.Client) -> None:
    """Disable Nagle on a paho client's socket, as an interactive MQTT client should: paho
    leaves it on, and a request then waits up to 40 ms for the broker's delayed ACK."""
    sock = client.socket()
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


class Broker:
    """A mosquitto of our own on a free loopback port, with persistence so it can restart."""

    def __init__(self, workdir: Path, *, extra_conf: str = "", port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        self.extra_conf = extra_conf
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def write_conf(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        listener = (
            ""
            if "listener" in self.extra_conf
            else (f"listener {self.port} 127.0.0.1\nallow_anonymous true\n")
        )
        self.conf.write_text(
            f"{listener}"
            f"persistence true\npersistence_location {self.workdir}/\n"
            f"log_dest file {self.log}\nlog_type error\nlog_type warning\nlog_type notice\n"
            f"max_queued_messages 0\n"
            # As root, mosquitto would switch to its own user and lose access to the
            # test's private temp folders.
            f"{'user root' if os.geteuid() == 0 else ''}\n"
            f"{self.extra_conf}\n"
        )

    def start(self) -> None:
        self.write_conf()
        self._stderr = (self.workdir / "mosquitto.stderr").open("ab")
        self.proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                said = [
                    p.read_text(errors="replace")
                    for p in (self.log, self.workdir / "mosquitto.stderr")
                    if p.exists()
                ]
                raise RuntimeError(f"mosquitto exited: {' '.join(said)}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # clean stop: mosquitto saves its persistent state
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    qos: int
    properties: Any = None
    at: float = field(default_factory=time.monotonic)

    def json(self) -> Any:
        return json.loads(self.payload)


class Subscriber:
    """A paho MQTT client (v5 unless `protocol` says otherwise) that records what it
    receives, with condition waits."""

    def __init__(
        self,
        broker_host: str,
        broker_port: int,
        topics: list[str],
        *,
        client_id: str = "",
        persistent: bool = False,
        username: str | None = None,
        password: str | None = None,
        tls: dict[str, Any] | None = None,
        protocol: MQTTProtocolVersion = paho.MQTTv5,
    ) -> None:
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._topics = topics
        self._connected = threading.Event()
        self.subscribed = threading.Event()  # every topic's SUBACK came
        self.session_present: bool | None = None
        self._subacks = 0
        v5 = protocol == paho.MQTTv5
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=protocol,
            # 3.1.1 asks for a persistent session in the constructor, v5 in connect().
            clean_session=None if v5 else not persistent,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls is not None:
            self.client.tls_set(**tls)
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        props = None
        if persistent and v5:
            # A session that outlives disconnections: what a CAD subscriber should use.
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 3600
        if v5:
            self.client.connect(
                broker_host, broker_port, clean_start=not persistent, properties=props
            )
        else:
            self.client.connect(broker_host, broker_port)
        nodelay(self.client)
        self.client.loop_start()
        if not self._connected.wait(10):
            raise RuntimeError("subscriber could not connect")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self.session_present = bool(flags.session_present)
        for topic in self._topics:
            client.subscribe(topic, qos=1)
        self._connected.set()

    def _on_subscribe(self, client: Any, userdata: Any, mid: Any, codes: Any, props: Any) -> None:
        self._subacks += 1
        if self._subacks >= len(self._topics):
            self.subscribed.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._lock:
            self.messages.append(
                Received(msg.topic, bytes(msg.payload), bool(msg.retain), msg.qos, msg.properties)
            )

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.messages)

    def on(self, suffix: str) -> list[Received]:
        return [m for m in self.snapshot() if m.topic.endswith(suffix)]

    def events(self, event_type: str | None = None) -> list[dict[str, Any]]:
        found = [m.json() for m in self.snapshot() if m.topic.endswith("/event")]
        return [e for e in found if event_type is None or e["type"] == event_type]

    def wait(
        self,
        predicate: Callable[[list[Received]], Any],
        timeout: float = 10.0,
        what: str = "messages",
    ) -> Any:
        return wait_for(lambda: predicate(self.snapshot()), timeout, what)

    def wait_event(self, event_type: str, timeout: float = 10.0, **data: Any) -> dict[str, Any]:
        def match() -> dict[str, Any] | None:
            for event in self.events(event_type):
                if all(event.get(k) == v or event["data"].get(k) == v for k, v in data.items()):
                    return event
            return None

        result: dict[str, Any] = wait_for(match, timeout, f"event {event_type} {data}")
        return result

    def request(
        self,
        topic: str,
        body: dict[str, Any] | bytes,
        *,
        retain: bool = False,
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        """Publish a request and wait for the response on the matching response topic."""
        response_topic = topic.replace("/request/", "/response/")
        before = len(self.on(response_topic))
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.client.publish(topic, payload, qos=1, retain=retain)
        found = self.wait(
            lambda msgs: [m for m in msgs if m.topic == response_topic][before:],
            timeout,
            f"response on {response_topic}",
        )
        result: dict[str, Any] = found[0].json()
        return result

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class ResettingProxy:
    """A TCP relay to a broker whose client-side connections can be reset (RST, not FIN):
    what a firewall, a NAT timing out or a broker host losing power does to a link."""

    def __init__(self, upstream: Broker) -> None:
        self.upstream = upstream
        self.host = "127.0.0.1"
        self._listener = socket.create_server((self.host, 0))
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self.accepted = 0
        self._clients: list[socket.socket] = []
        self._reset_asked = threading.Event()
        self._reset_done = threading.Event()
        self._reset_count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="reset-proxy")
        self._thread.start()

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ)
        peers: dict[socket.socket, socket.socket] = {}

        def drop(end: socket.socket, *, rst: bool = False) -> None:
            if end not in peers:
                return
            sel.unregister(end)
            peers.pop(end)
            with contextlib.suppress(ValueError):
                self._clients.remove(end)
            if rst:  # linger 0: close() sends RST; the peer's next read fails ECONNRESET
                end.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            end.close()

        while not self._stop.is_set():
            if self._reset_asked.is_set():
                self._reset_asked.clear()
                clients = list(self._clients)
                for client in clients:
                    server = peers.get(client)
                    drop(client, rst=True)
                    if server is not None:
                        drop(server)
                self._reset_count = len(clients)
                self._reset_done.set()
            for key, _ in sel.select(0.02):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._listener:
                    self._accept(sel, peers)
                    continue
                if sock not in peers:
                    continue  # dropped earlier in this round
                other = peers[sock]
                try:
                    data = sock.recv(65536)
                    if data:
                        other.sendall(data)
                        continue
                except OSError:
                    pass
                drop(sock)
                drop(other)
        for end in list(peers):
            drop(end)
        sel.close()

    def _accept(
        self, sel: selectors.BaseSelector, peers: dict[socket.socket, socket.socket]
    ) -> None:
        client, _ = self._listener.accept()
        try:
            server = socket.create_connection((self.upstream.host, self.upstream.port), 2)
        except OSError:
            client.close()
            return
        self.accepted += 1
        peers[client], peers[server] = server, client
        self._clients.append(client)
        for end in (client, server):
            sel.register(end, selectors.EVENT_READ)

    def reset(self) -> int:
        """Reset every client connection (and close its upstream half); how many."""
        self._reset_done.clear()
        self._reset_asked.set()
        if not self._reset_done.wait(5):
            raise RuntimeError("the proxy did not reset its connections")
        return self._reset_count

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()


class Daemon:
    """`consolegw run` in a subprocess, as systemd would run it."""

    def __init__(
        self,
        config_path: Path,
        *,
        env: dict[str, str] | None = None,
        entry: Sequence[str] = ("-m", "gateway"),
    ) -> None:
        self.config_path = config_path
        self.entry = list(entry)
        """What follows the interpreter before `run`: a bench may wrap the daemon."""
        self.log_path = config_path.with_suffix(".log")
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, *self.entry, "run", "-c", str(self.config_path)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=ROOT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 20) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        code = self.proc.returncode
        self.proc = None
        return code
