"""RabbitMQ as a real MQTT peer for tests: a private node (RabbitBroker) and a three-node
cluster on loopback (RabbitCluster), in the shape of tests/mqtt_tools.py's Broker.

Every node has its own name (rabbit-<random>-<label>@localhost), its own free ports (MQTT,
Erlang distribution, and those of the CLI that talks to it), its own data, log, config and
plugin files under its workdir, and an Erlang cookie of its own (HOME points into the
workdir), so two test runs at once share nothing but epmd on port 4369: every Erlang node of
the machine registers there, by design. The first node started on a machine without an epmd
starts one (`epmd -daemon`, in a session of its own); it is left running, never killed
here, as other Erlang nodes may be registered with it.

AMQP listeners are off, the management plugin is not enabled, and MQTT takes clients with no
credentials as `guest` (RabbitMQ lets guest in from loopback only, which is where tests are).
Users with a password and topic permissions are loaded from a definitions file at boot
(`users=`), which costs nothing, or added to a running node with `add_users()` (one CLI call).

Why a boot takes seconds (docs/broker-rabbitmq.md, "Start times"): the Erlang VM and
RabbitMQ's prelaunch, then the boot steps, then the MQTT plugin, which on a node's first boot
waits 3 to 6 s (a random 11 to 20 rounds of 300 ms, not configurable) for cluster peers
before it elects itself the leader of its client-ID tracking Raft cluster. A restart with the
same data, and a node that joins a running cluster, skip that wait.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.mqtt_tools import free_port

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
"""The Debian package's own scripts: /usr/sbin/rabbitmq-* would `su rabbitmq` when run as
root, and that user cannot read the tests' private folders."""


class RabbitMissing(RuntimeError):
    """rabbitmq-server is not installed (`make test` installs it: Makefile DEB_PACKAGES)."""


def rabbitmq_available() -> bool:
    return os.access(RABBITMQ_BIN / "rabbitmq-server", os.X_OK)


@dataclass(frozen=True)
class RabbitUser:
    """A user of the default vhost. Topic permissions are regular expressions matched
    against the AMQP routing key, that is the MQTT topic with `/` written as `.`
    (`consolegw/gw1/status` is matched as `consolegw.gw1.status`)."""

    name: str
    password: str
    topic_write: str = ".*"
    topic_read: str = ".*"


def _password_hash(password: str) -> str:
    # RabbitMQ's rabbit_password_hashing_sha256: a 4-byte salt, then sha256(salt + password).
    salt = secrets.token_bytes(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def _definitions(users: Sequence[RabbitUser]) -> str:
    """A definitions document (the format of `rabbitmqctl export_definitions`)."""
    everyone = [RabbitUser("guest", "guest"), *users]
    return json.dumps(
        {
            "vhosts": [{"name": "/"}],
            "users": [
                {
                    "name": user.name,
                    "password_hash": _password_hash(user.password),
                    "hashing_algorithm": "rabbit_password_hashing_sha256",
                    "tags": ["administrator"] if user.name == "guest" else [],
                }
                for user in everyone
            ],
            "permissions": [
                {"user": user.name, "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}
                for user in everyone
            ],
            "topic_permissions": [
                {
                    "user": user.name,
                    "vhost": "/",
                    "exchange": "amq.topic",
                    "write": user.topic_write,
                    "read": user.topic_read,
                }
                for user in users
            ],
        },
        indent=1,
    )


def mqtt311_connect(
    client_id: str = "",
    *,
    clean_session: bool = True,
    keepalive: int = 30,
    protocol_level: int = 4,
    will: tuple[str, bytes, int, bool] | None = None,
    username: str | None = None,
    password: str | None = None,
) -> bytes:
    """A CONNECT packet, by hand: for probes that need bytes no client library sends (a v5
    CONNECT read as raw bytes, a client that vanishes without DISCONNECT). `will` is
    (topic, payload, qos, retain). Level 5 adds the empty property list v5 requires."""

    def text(value: str | bytes) -> bytes:
        raw = value.encode() if isinstance(value, str) else value
        return len(raw).to_bytes(2, "big") + raw

    flags = 0x02 if clean_session else 0
    payload = text(client_id)
    if will is not None:
        topic, message, qos, retain = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += (b"\x00" if protocol_level == 5 else b"") + text(topic) + text(message)
    if username is not None:
        flags |= 0x80
        payload += text(username)
    if password is not None:
        flags |= 0x40
        payload += text(password)
    variable = text("MQTT") + bytes([protocol_level, flags]) + keepalive.to_bytes(2, "big")
    if protocol_level == 5:
        variable += b"\x00"
    body = variable + payload
    length = b""
    size = len(body)
    while True:
        byte, size = size % 128, size // 128
        length += bytes([byte | (0x80 if size else 0)])
        if not size:
            break
    return b"\x10" + length + body


def read_packet(sock: socket.socket) -> bytes:
    """One MQTT packet (fixed header included); what came before the peer closed, b"" if
    nothing did."""
    raw = sock.recv(1)
    size, shift = 0, 0
    while raw:
        byte = sock.recv(1)
        raw += byte
        if not byte:
            return raw
        size |= (byte[0] & 0x7F) << shift
        shift += 7
        if not byte[0] & 0x80:
            break
    while raw and size:
        chunk = sock.recv(size)
        if not chunk:
            break
        raw += chunk
        size -= len(chunk)
    return raw


class RabbitBroker:
    """One RabbitMQ node with the MQTT plugin, on free loopback ports. `start()` returns once
    an MQTT 3.1.1 client is answered CONNACK 0; `restart()` reuses the data, name and ports."""

    def __init__(
        self,
        workdir: Path,
        *,
        nodename: str | None = None,
        home: Path | None = None,
        users: Sequence[RabbitUser] = (),
        extra_conf: str = "",
        seed_node: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.host = "127.0.0.1"
        self.port = free_port()
        self.dist_port = free_port()
        self.nodename = nodename or f"rabbit-{secrets.token_hex(4)}@localhost"
        # The cookie lives in $HOME/.erlang.cookie; the nodes of one cluster share a home.
        self.home = home or workdir / "home"
        self.conf = workdir / "rabbitmq.conf"
        self.log = workdir / "rabbit.log"
        self.pid_file = workdir / "beam.pid"
        self.users = users
        self.extra_conf = extra_conf
        self.seed_node = seed_node
        self.proc: subprocess.Popen[bytes] | None = None
        self.start_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        """The environment of this node's server and of the CLI that talks to it."""
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        # A CLI run is an Erlang node too, with a listen port from a range (35672-35682 by
        # default, shared by the machine): each call gets a free one of its own instead.
        ctl_port = str(free_port())
        return {
            **inherited,
            "HOME": str(self.home),
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_MNESIA_BASE": str(self.workdir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.workdir / "log"),
            "RABBITMQ_LOGS": str(self.log),
            "RABBITMQ_PID_FILE": str(self.pid_file),
            "RABBITMQ_CONFIG_FILE": str(self.conf),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.workdir / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(self.workdir / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.workdir / "enabled_plugins"),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CTL_DIST_PORT_MIN": ctl_port,
            "RABBITMQ_CTL_DIST_PORT_MAX": ctl_port,
            # Distribution on loopback only, and no busy-waiting schedulers eating the CPU
            # that other tests share.
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "RABBITMQ_SCHEDULER_BUSY_WAIT_THRESHOLD": "none",
        }

    def write_files(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        cookie = self.home / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(secrets.token_hex(16))
            cookie.chmod(0o400)  # Erlang refuses a cookie file others can read
        (self.workdir / "rabbitmq-env.conf").write_text("")  # not /etc/rabbitmq's
        (self.workdir / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
        definitions = self.workdir / "definitions.json"
        definitions.write_text(_definitions(self.users))
        seed = (
            "cluster_formation.peer_discovery_backend = classic_config\n"
            f"cluster_formation.classic_config.nodes.1 = {self.seed_node}\n"
            if self.seed_node
            else ""
        )
        self.conf.write_text(
            "listeners.tcp = none\n"  # no AMQP
            f"mqtt.listeners.tcp.default = {self.host}:{self.port}\n"
            "mqtt.allow_anonymous = true\n"
            "mqtt.default_user = guest\n"
            "mqtt.default_pass = guest\n"
            f"load_definitions = {definitions}\n"
            "log.console = false\n"
            "log.file.level = info\n"
            f"{seed}"
            f"{self.extra_conf}\n"
        )

    def launch(self) -> None:
        """Start the node's process without waiting for it (RabbitCluster boots two at once)."""
        if not rabbitmq_available():
            raise RabbitMissing("rabbitmq-server is not installed: run `make test`")
        self.write_files()
        self.pid_file.unlink(missing_ok=True)
        self._started_at = time.monotonic()
        with (self.workdir / "rabbitmq.stdout").open("ab") as out:
            # The script stays as the parent of the Erlang VM (beam.smp), whose pid RabbitMQ
            # writes to RABBITMQ_PID_FILE.
            self.proc = subprocess.Popen(
                [str(RABBITMQ_BIN / "rabbitmq-server")],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env(),
                cwd=self.workdir,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"RabbitMQ node {self.nodename} exited:\n{self.log_tail()}")
            if self._answers_mqtt():
                self.start_seconds = time.monotonic() - self._started_at
                return
            time.sleep(0.1)
        raise RuntimeError(f"RabbitMQ node {self.nodename} not ready:\n{self.log_tail()}")

    def _answers_mqtt(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=2) as sock:
                sock.sendall(mqtt311_connect())
                answer = read_packet(sock)
                sock.sendall(b"\xe0\x00")  # DISCONNECT
                return answer == b"\x20\x02\x00\x00"
        except OSError:
            return False

    def start(self, timeout: float = 60.0) -> None:
        self.launch()
        self.wait_ready(timeout)

    def beam_pid(self) -> int:
        return int(self.pid_file.read_text().strip())

    def kill(self) -> None:
        """SIGKILL the Erlang VM: the node dies with every connection it holds, as in a crash
        or a power cut; its script then exits."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.beam_pid(), signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def freeze(self) -> None:
        """SIGSTOP the Erlang VM: the node stops answering while every TCP connection it holds
        stays open (no FIN, no RST), as when its machine loses power or its network. Its
        clients find out by their keepalive, its peers by the Erlang distribution's tick
        (`net_ticktime`, 60 s unless set). `stop()` and `kill()` end a frozen node too."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.beam_pid(), signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT the VM (nothing if it was not frozen), so that it can take a SIGTERM."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                os.kill(self.beam_pid(), signal.SIGCONT)

    def stop(self) -> None:
        """A clean stop: the script passes SIGTERM to the VM, which stops RabbitMQ in order."""
        if self.proc is None:
            return
        self.thaw()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def restart(self, timeout: float = 60.0) -> None:
        self.stop()
        self.start(timeout)

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """Run `rabbitmqctl -n <this node> ARGS`; its output, or RuntimeError."""
        done = subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.nodename, *args],
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout

    def add_users(self, users: Sequence[RabbitUser]) -> None:
        """Add users to the running node (its cluster): one `import_definitions` call."""
        path = self.workdir / f"users-{secrets.token_hex(4)}.json"
        path.write_text(_definitions(users))
        self.ctl("import_definitions", str(path))

    def log_tail(self, lines: int = 30) -> str:
        said = []
        for path in (self.log, self.workdir / "rabbitmq.stdout"):
            if path.exists():
                said.extend(path.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(said)


class RabbitCluster:
    """Three RabbitMQ nodes on loopback, each with its own MQTT port, one cluster.

    Node A boots alone; B and C boot together and join A on their first boot (classic-config
    peer discovery, what `rabbitmqctl join_cluster` does without the three CLI calls a node:
    stop_app, join_cluster, start_app). `start()` checks that A sees all three."""

    names = ("a", "b", "c")

    def __init__(self, workdir: Path, *, extra_conf: str = "") -> None:
        self.workdir = workdir
        token = secrets.token_hex(4)
        names = {name: f"rabbit-{token}-{name}@localhost" for name in self.names}
        self.nodes: dict[str, RabbitBroker] = {
            name: RabbitBroker(
                workdir / name,
                nodename=names[name],
                home=workdir / "home",  # one cookie for the three
                extra_conf=extra_conf,
                seed_node=None if name == "a" else names["a"],
            )
            for name in self.names
        }
        self.start_seconds: float | None = None

    def __getitem__(self, name: str) -> RabbitBroker:
        return self.nodes[name]

    def start(self, timeout: float = 90.0) -> None:
        began = time.monotonic()
        self.nodes["a"].start(timeout)
        joiners = [self.nodes[name] for name in self.names[1:]]
        for node in joiners:
            node.launch()
        for node in joiners:
            node.wait_ready(timeout)
        members = self.running_nodes()
        expected = {node.nodename for node in self.nodes.values()}
        if members != expected:
            raise RuntimeError(f"cluster formed as {sorted(members)}, not {sorted(expected)}")
        self.start_seconds = time.monotonic() - began

    def ensure_running(self, timeout: float = 60.0) -> None:
        """Start again every node found dead (a probe that failed before its restart)."""
        for node in self.nodes.values():
            if node.proc is None or node.proc.poll() is not None:
                node.proc = None
                node.start(timeout)

    def running_nodes(self, via: str = "a") -> set[str]:
        """The nodes that `via` sees running (one CLI call)."""
        status = json.loads(self.nodes[via].ctl("cluster_status", "--formatter", "json"))
        return set(status["running_nodes"])

    def kill(self, name: str) -> None:
        self.nodes[name].kill()

    def restart(self, name: str, timeout: float = 60.0) -> None:
        node = self.nodes[name]
        node.stop()
        node.start(timeout)

    def freeze(self, name: str) -> None:
        self.nodes[name].freeze()

    def stop(self) -> None:
        for node in self.nodes.values():  # all at once: each stop takes a second or two
            if node.proc is not None and node.proc.poll() is None:
                node.thaw()
                node.proc.terminate()
        for node in self.nodes.values():
            node.stop()
