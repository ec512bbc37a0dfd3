"""Soak: the daemon on the full simulated console for 30 minutes, with faults on a timer.

    python bench/soak.py [--minutes 30] [--quick] [--seed 12]

A private mosquitto (persistence on), the simulated console of config/sim.toml in this
process (radios over RFC 2217 and CM108-over-USB, sound cards through PulseAudio, Modbus IO
modules) moved to free ports and a temp folder, and the daemon (`consolegw run`) as a
subprocess. Traffic runs all along on every channel: carrier pulses (cos.on/off) and PTT
requests (on with a lease, then off, or left to the lease) on each radio, TTY calls on the
911 line, alarm inputs raised, restored and acknowledged. Faults, at periods scaled with the
duration (those of the issue at 30 minutes):

- every 3 min a radio interface or the Modbus link is unplugged for 20 s, then replugged;
- every 5 min the broker stops (a clean mosquitto stop, its state saved) and starts again on
  the same port after 5 s;
- every 10 min every radio is keyed and the daemon is SIGKILLed, then started again.

A CAD subscriber with a persistent session (MQTT v5, clean_start off, QoS 1) records every
event. "made" is the last seq the outbox committed (read from its SQLite file after the
final clean stop); "lost" is a seq in 1..made that never arrived, is not still in the outbox
and is not one the gateway reported dropping (outbox.full/outbox.ok). RSS and open fds of
the daemon come from /proc, sampled through each daemon life after a warm-up; growth is a
least-squares slope within a life (a kill starts a new one), judged on lives of at least
5 minutes. Log lines are the daemon's non-DEBUG lines; since the traffic logs too (each PTT,
each alarm), a line counts against the fault cycle it follows only when its kind (the
message with numbers and ids blanked) does not appear in the undisturbed stretches; the raw
count per cycle is reported too. There is no competitor for a soak: the figures are compared
with the targets, next to a baseline of the undisturbed stretch before the first fault.
`--keep` keeps the working folder (daemon log, outbox, config). The last line is one JSON
object with every figure and "pass".

For a memory question, `--no-kill` keeps one daemon life through the whole run (the other
faults stay) and `--memprofile DIR` (with `--tracemalloc FRAMES`) samples it from inside
(bench/memprofile.py). In such a 15-minute run the RSS slope of a 9-minute window, the
length of a life here, ranged from 1.4 to 7.8 MB/h with the Python heap flat when RSS was
read every 10 s: it moves by up to 1 MB either way from read to read, as much as 5 MB/h
makes in 12 minutes. It is read every SAMPLE_S, and each life's slope comes with its
standard error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import re
import signal
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import tomllib
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.procfs import vm_rss_kb  # noqa: E402
from hw_sim.resolve import dump_toml  # noqa: E402
from tests.mqtt_tools import Broker, Daemon, Received, Subscriber, free_port  # noqa: E402
from tests.sim_tools import ConsoleUnderTest, start_config  # noqa: E402

FULL_S = 30 * 60.0
QUICK_S = 3 * 60.0
UNPLUG_EVERY_S, UNPLUG_FOR_S = 180.0, 20.0
BROKER_EVERY_S, BROKER_DOWN_S = 300.0, 5.0
KILL_EVERY_S = 600.0
WARMUP_S = 60.0
SAMPLE_S = 2.0
"""RSS and fds read this often: a life's RSS moves by about 0.5 MB (sd) from one read to
the next (short-lived buffers), so a 9-minute life's slope needs hundreds of reads to be
a figure and not a draw (its standard error is reported with it)."""
RESTART_DELAY_S = 1.0
"""Between a SIGKILL and the new start (systemd's RestartSec)."""
QUIET_AFTER_S = 10.0
SETTLE_S = 8.0
"""After a fault ends, devices and the broker link are back within this (recovery takes 1-4 s):
open fds are compared only between samples taken with no fault on or settling."""
"""After the last fault ends, the console is undisturbed again after this long."""
JUDGED_LIFE_S = 300.0
"""A daemon life shorter than this (after warm-up) is too short to judge RSS growth on."""

TARGET_RSS_KB_PER_H = 5 * 1024
TARGET_FD_GROWTH = 0
TARGET_LOG_LINES_PER_CYCLE = 5.0
PTT_OFF_REASONS = {"request", "lease_expired", "timeout", "stop", "device_lost", "restart"}
"""What a soak's PTT should end with; device_opened and readback are counted, not expected."""

_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ([A-Z]+) ([\w.]+): ")


# --- the console under test --------------------------------------------------------------


def sim_config(tmp: Path, broker: Broker) -> str:
    """config/sim.toml read as data: loopback ports moved to free ones (a port shared in the
    file stays shared), the state folder in `tmp`, the private broker."""
    data = tomllib.loads((ROOT / "config" / "sim.toml").read_text())
    moved: dict[int, int] = {}

    def port_for(port: int) -> int:
        return free_port() if port == 0 else moved.setdefault(port, free_port())

    def walk(table: dict[str, Any]) -> None:
        for key, value in table.items():
            if isinstance(value, dict):
                walk(value)
            elif key == "port" and isinstance(value, int):
                table[key] = port_for(value)
            elif isinstance(value, str):
                table[key] = re.sub(
                    r"^([a-z0-9+]+://(?:127\.0\.0\.1|localhost):)(\d+)",
                    lambda m: m[1] + str(port_for(int(m[2]))),
                    value,
                )

    walk(data)
    data["gateway"]["state_dir"] = str(tmp / "state")
    data["mqtt"]["url"] = broker.url
    return dump_toml(data)


_TCP_STATES = {"01": "established", "06": "time_wait", "08": "close_wait", "0A": "listen"}


def fd_kinds(pid: int, peers: dict[int, str]) -> Counter[str]:
    """A process's open fds by what they are: a TCP socket by the peer it talks to (`peers`
    names the ports) and its state, a unix socket, a pipe, an anon inode, a path."""
    sockets: dict[str, str] = {}
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                cols = line.split()
                port = int(cols[2].rsplit(":", 1)[1], 16)
                state = _TCP_STATES.get(cols[3], cols[3])
                sockets[cols[9]] = f"tcp {peers.get(port, 'other')} {state}"
    kinds: Counter[str] = Counter()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = str(fd.readlink())
                inode = re.fullmatch(r"socket:\[(\d+)\]", target)
                if inode:
                    kinds[sockets.get(inode[1], "socket (unix, udp, netlink)")] += 1
                else:
                    kinds[re.sub(r":\[\d+\]$", "", target)] += 1
    return kinds


def proc_sample(pid: int) -> tuple[int, int] | None:
    """(VmRSS in kB, open fds) of a process, None once it is gone."""
    rss = vm_rss_kb(pid)
    try:
        fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    except OSError:
        return None
    return None if rss is None else (rss, fds)


# --- the schedule --------------------------------------------------------------------------


@dataclass
class Fault:
    kind: str  # "unplug", "broker", "kill"
    at: float  # seconds from the start, as scheduled
    target: str = ""
    started: float = 0.0  # monotonic
    started_wall: float = 0.0
    ended: float = 0.0  # monotonic: replugged, broker back, daemon restarted
    ended_wall: float = 0.0
    keyed: list[str] = field(default_factory=list)  # kill: radios keyed when it died
    still_keyed: list[str] = field(default_factory=list)  # kill: still keyed at the restart
    unkeyed_after_s: dict[str, float] = field(default_factory=dict)  # kill: dead -> unkeyed


@dataclass(frozen=True)
class Plan:
    duration_s: float
    warmup_s: float
    unplug_for_s: float
    broker_down_s: float
    sample_s: float
    faults: list[Fault]


def plan(duration_s: float, targets: list[str], *, kill: bool = True) -> Plan:
    """Each kind of fault at its period scaled with the duration; none overlaps another.
    Without `kill` the daemon is never SIGKILLed: one life, for a memory profile."""
    scale = duration_s / FULL_S
    warmup = max(10.0, WARMUP_S * scale)
    unplug_for = max(5.0, UNPLUG_FOR_S * scale)
    broker_down = max(3.0, BROKER_DOWN_S * min(1.0, 4 * scale))
    # How long each kind keeps the console disturbed (the daemon reconnects, restarts).
    busy = {"unplug": unplug_for + 6.0, "broker": broker_down + 6.0, "kill": 12.0}
    nominal: list[tuple[float, str]] = []
    for kind, every in (
        ("unplug", UNPLUG_EVERY_S * scale),
        ("broker", BROKER_EVERY_S * scale),
        ("kill", KILL_EVERY_S * scale if kill else 2 * duration_s),
    ):
        k = 1
        while k * every < duration_s:
            nominal.append((k * every, kind))
            k += 1
    end = duration_s - max(10.0, 30.0 * scale)  # an undisturbed tail before the final stop
    faults: list[Fault] = []
    free_at = warmup
    unplugs = 0
    kinds = {kind for _, kind in nominal}
    for nominal_at, kind in sorted(nominal):
        at = max(nominal_at, free_at)
        if at + busy[kind] > end:
            continue
        # A repeat gives way when it would leave no room for a kind not yet run once (a
        # short run still shows every kind).
        unseen = kinds - {f.kind for f in faults} - {kind}
        repeat = any(f.kind == kind for f in faults)
        if repeat and at + busy[kind] + sum(busy[k] for k in unseen) > end:
            continue
        target = targets[unplugs % len(targets)] if kind == "unplug" else ""
        unplugs += kind == "unplug"
        faults.append(Fault(kind, at, target))
        free_at = at + busy[kind]
    return Plan(duration_s, warmup, unplug_for, broker_down, SAMPLE_S, faults)


# --- traffic -------------------------------------------------------------------------------


class Traffic:
    """Carrier, PTT, TTY and alarm traffic on every channel, each from its own thread."""

    def __init__(
        self, cut: ConsoleUnderTest, requester: Subscriber, alarms: list[str], seed: int
    ) -> None:
        self.cut = cut
        self.requester = requester
        self.alarms = alarms
        self.seed = seed
        self.stop = threading.Event()
        self.locks = {ch: threading.Lock() for ch in cut.console.radios}
        """Held through each action on a radio; a kill holds them all to key every radio."""
        self.outcomes: Counter[str] = Counter()
        self._count_lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for i, ch in enumerate(self.cut.console.radios):
            self._spawn(f"radio-{ch}", self._radio, ch, i)
        for i, ch in enumerate(self.cut.console.tty_channels):
            self._spawn(f"tty-{ch}", self._tty, ch, 100 + i)
        if self.alarms:
            self._spawn("alarms", self._alarm, "", 200)

    def _spawn(
        self, name: str, target: Callable[[str, random.Random], None], channel: str, salt: int
    ) -> None:
        rng = random.Random(self.seed * 1000 + salt)
        thread = threading.Thread(target=target, args=(channel, rng), name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def close(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(30)

    def request(self, topic: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """A request and its response; None (counted) when none came: a fault is on."""
        try:
            response = self.requester.request(f"{self.cut.prefix}/{topic}", body, timeout=5)
        except AssertionError:
            self._count("no response")
            return None
        self._count(f"{response['status']} {response.get('code') or ''}".strip())
        return response

    def _count(self, outcome: str) -> None:
        with self._count_lock:
            self.outcomes[outcome] += 1

    def ptt(self, channel: str, state: str, **extra: Any) -> dict[str, Any] | None:
        return self.request(f"channels/{channel}/request/ptt", {"state": state, **extra})

    # Each loop starts with one of each of its actions, so the undisturbed first stretch
    # shows every kind of log line the traffic makes (see log_figures).

    def _radio(self, channel: str, rng: random.Random) -> None:
        tour = ["carrier", "ptt", "lease"]
        while not self.stop.wait(rng.uniform(0.4, 1.5)):
            action = (
                tour.pop(0) if tour else rng.choices(["carrier", "ptt", "lease"], [50, 42, 8])[0]
            )
            with self.locks[channel]:
                if action == "carrier":
                    self.cut.console.carrier(channel, True)
                    time.sleep(rng.uniform(0.4, 1.5))
                    self.cut.console.carrier(channel, False)
                    continue
                lease = rng.uniform(2.0, 6.0)
                self.ptt(channel, "on", duration_s=round(lease, 1), transaction="soak")
                if action == "lease":
                    time.sleep(lease + 0.5)  # the requester goes quiet: the lease ends it
                else:
                    time.sleep(rng.uniform(0.3, 2.0))
                    self.ptt(channel, "off", transaction="soak")

    def _tty(self, channel: str, rng: random.Random) -> None:
        pause = 1.0
        while not self.stop.wait(pause):
            seconds = self.cut.console.tty_call(channel, f"SOAK CALL {rng.randrange(100)} GA")
            self.stop.wait(seconds + 1.0)
            pause = rng.uniform(8.0, 20.0)

    def _alarm(self, _: str, rng: random.Random) -> None:
        console = self.cut.console
        wiring = console.alarm_wiring()
        tour = list(self.alarms)
        while not self.stop.wait(rng.uniform(1.0, 3.0)):
            alarm_id = tour.pop(0) if tour else rng.choice(self.alarms)
            alarm = wiring[alarm_id]
            if alarm.nominal is not None:
                active: bool | float = float(alarm.nominal["alarm"])
                normal: bool | float = float(alarm.nominal["normal"])
            else:
                active, normal = True, False
            console.set_alarm_input(alarm_id, active)
            time.sleep(rng.uniform(0.5, 2.0))
            console.set_alarm_input(alarm_id, normal)
            if alarm.latched:
                time.sleep(0.5)
                self.request(f"alarms/{alarm_id}/request/ack", {"transaction": "soak"})


# --- the run -------------------------------------------------------------------------------


@dataclass
class Life:
    """One daemon process, from its start to its kill or stop."""

    pid: int
    started: float
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (t, rss kB, fds)
    settled: list[tuple[float, int]] = field(default_factory=list)  # (t, fds), no fault on
    end: str = ""
    # What the fds were at the first and the last settled sample after warm-up.
    fds_warm: Counter[str] | None = None
    fds_last: Counter[str] | None = None


class Soak:
    def __init__(
        self,
        tmp: Path,
        duration_s: float,
        seed: int,
        *,
        kill: bool = True,
        memprofile: Path | None = None,
        tracemalloc_frames: int = 0,
        daemon_env: dict[str, str] | None = None,
    ) -> None:
        self.tmp = tmp
        self.duration_s = duration_s
        self.seed = seed
        self.kill_daemon = kill
        self.memprofile = memprofile
        self.tracemalloc_frames = tracemalloc_frames
        self.daemon_env = daemon_env or {}
        self.broker = Broker(tmp / "broker")
        self.lives: list[Life] = []
        self.unexpected_exits: list[int] = []
        self.daemon_lock = threading.Lock()
        self._sampling = threading.Event()
        self.log_path = Path()

    # The daemon ----------------------------------------------------------------------

    def _begin_life(self) -> None:
        assert self.cut.daemon.proc is not None
        self.lives.append(Life(self.cut.daemon.proc.pid, time.monotonic()))

    def _sample(self, final: str = "") -> None:
        life = self.lives[-1]
        got = proc_sample(life.pid)
        now = time.monotonic()
        if got is not None:
            life.samples.append((now, *got))
            if now >= life.started + self.plan.warmup_s and self._settled(now):
                # A device unplugged or a broker away has one connection fewer: not a leak.
                life.settled.append((now, got[1]))
                kinds = fd_kinds(life.pid, self.peers)
                if life.fds_warm is None:
                    life.fds_warm = kinds
                life.fds_last = kinds
        if final:
            life.end = final

    def _settled(self, now: float) -> bool:
        return not any(
            fault.started and (not fault.ended or now < fault.ended + SETTLE_S)
            for fault in self.plan.faults
        )

    def _sampler(self) -> None:
        while not self._sampling.wait(self.plan.sample_s):
            with self.daemon_lock:
                proc = self.cut.daemon.proc
                if proc is None:
                    continue
                code = proc.poll()
                if code is None:
                    self._sample()
                    continue
                # The daemon died by itself: a bug. Start it again, as systemd would.
                self.unexpected_exits.append(code)
                self.lives[-1].end = f"exited {code}"
                self.cut.daemon.stop()
                self.cut.daemon.start()
                self._begin_life()

    # Faults -------------------------------------------------------------------------

    def unplug(self, fault: Fault) -> None:
        console = self.cut.console
        device: Any = console.radios.get(fault.target) or console.links[fault.target]
        device.unplug()
        time.sleep(self.plan.unplug_for_s)
        device.replug()

    def broker_restart(self, fault: Fault) -> None:
        self.broker.stop()
        time.sleep(self.plan.broker_down_s)
        self.broker.start()

    def kill(self, fault: Fault) -> None:
        """Key every radio, SIGKILL the daemon, start it again."""
        radios = self.cut.console.radios
        held = [lock for lock in self.traffic.locks.values() if lock.acquire(timeout=15)]
        try:
            for channel in radios:
                self.traffic.ptt(channel, "on", duration_s=20, transaction="soak-kill")
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and not all(r.keyed for r in radios.values()):
                time.sleep(0.05)
            time.sleep(0.3)  # the keyed state reaches the daemon's journal
            fault.keyed = [ch for ch, radio in radios.items() if radio.keyed]
            with self.daemon_lock:
                self._sample("killed")
                self.cut.daemon.signal(signal.SIGKILL)
                self.cut.daemon.wait()
                self.cut.daemon.stop()
                # An RFC 2217 server drops the lines when the connection goes; a CM108 GPIO
                # keeps its level until the next run unkeys it (README).
                dead = time.monotonic()
                while time.monotonic() < dead + RESTART_DELAY_S:
                    for ch, radio in radios.items():
                        if (
                            ch in fault.keyed
                            and ch not in fault.unkeyed_after_s
                            and not radio.keyed
                        ):
                            fault.unkeyed_after_s[ch] = round(time.monotonic() - dead, 3)
                    time.sleep(0.01)
                fault.still_keyed = [ch for ch, radio in radios.items() if radio.keyed]
                self.cut.daemon.start()
                self._begin_life()
            # What the last run left keyed is unkeyed by the new one before traffic resumes.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and any(r.keyed for r in radios.values()):
                time.sleep(0.1)
        finally:
            for lock in held:
                lock.release()

    # The whole run ------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self.broker.start()
        try:
            return self._run()
        finally:
            self.broker.stop()

    def _run(self) -> dict[str, Any]:
        sub_id = "soak-cad-" + uuid.uuid4().hex[:8]

        def subscriber(topics: list[str]) -> Subscriber:
            return Subscriber(
                self.broker.host, self.broker.port, topics, client_id=sub_id, persistent=True
            )

        def daemon(text: str, name: str, env: dict[str, str]) -> Daemon:
            path = self.tmp / f"{name}.toml"
            path.write_text(text)
            self.log_path = path.with_suffix(".log")
            env = {**env, **self.daemon_env}
            if self.memprofile is None:
                return Daemon(path, env=env)
            # Each life samples itself into memprofile/<pid> (bench/memprofile.py).
            every = min(120.0, self.duration_s / 6)  # a short run gets snapshots too
            wrapper = [str(ROOT / "bench" / "memprofile.py"), "daemon", "--snapshot-s", str(every)]
            wrapper.append(str(self.memprofile))
            if self.tracemalloc_frames:
                wrapper = ["-X", f"tracemalloc={self.tracemalloc_frames}", *wrapper]
            return Daemon(path, env=env, entry=[*wrapper, "--"])

        text = sim_config(self.tmp, self.broker)
        data = tomllib.loads(text)
        gid = data["gateway"]["id"]
        self.config_modules = {
            m: s["link"] for m, s in data.get("modbus", {}).get("modules", {}).items()
        }
        self.ids = [
            *data.get("channels", {}),
            *data.get("alarms", {}),
            *data.get("modbus", {}).get("modules", {}),
            *data.get("modbus", {}).get("links", {}),
        ]
        self.peers = {self.broker.port: "mqtt"}
        for channel_id, channel in data.get("channels", {}).items():
            for key in ("url", "usb_backend"):
                port = re.search(r":(\d+)$", channel.get("radio", {}).get(key, ""))
                if port:
                    self.peers[int(port[1])] = channel_id
        for link_id, link in data.get("modbus", {}).get("links", {}).items():
            if "port" in link:
                self.peers[link["port"]] = link_id
        # tracemalloc slows the daemon's start several times over.
        online_s = 10.0 if self.memprofile is None else 60.0
        self.cut, stop_console = start_config(
            self.tmp, gid, text, daemon, subscriber, online_timeout=online_s
        )
        self.plan = plan(
            self.duration_s,
            [*self.cut.console.radios, *self.cut.console.links],
            kill=self.kill_daemon,
        )
        self._begin_life()
        self.started = time.monotonic()
        self.started_wall = time.time()
        prefix = self.cut.prefix
        requester = Subscriber(
            self.broker.host,
            self.broker.port,
            [f"{prefix}/channels/+/response/+", f"{prefix}/alarms/+/response/+"],
        )
        alarms = sorted(self.cut.console.alarm_wiring())
        self.traffic = Traffic(self.cut, requester, alarms, self.seed)
        sampler = threading.Thread(target=self._sampler, name="sampler", daemon=True)
        try:
            self.traffic.start()
            sampler.start()
            actions = {"unplug": self.unplug, "broker": self.broker_restart, "kill": self.kill}
            for fault in self.plan.faults:
                delay = self.started + fault.at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                fault.started, fault.started_wall = time.monotonic(), time.time()
                say(f"fault {fault.kind} {fault.target}".rstrip())
                actions[fault.kind](fault)
                fault.ended, fault.ended_wall = time.monotonic(), time.time()
            delay = self.started + self.plan.duration_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            say("stopping the traffic")
            self.stop_wall = time.time()
            self.traffic.close()
            for channel in self.cut.console.radios:
                self.traffic.ptt(channel, "off", transaction="soak-end")
            self._settle()
            self._sampling.set()
            sampler.join(30)
            with self.daemon_lock:
                self._sample("stopped")
                self.exit_code = self.cut.daemon.stop()
            time.sleep(2.0)  # what the stop published reaches the subscriber
            self.left_keyed = [ch for ch, r in self.cut.console.radios.items() if r.keyed]
            self.elapsed = time.monotonic() - self.started
            self.messages = self.cut.sub.snapshot()
        finally:
            self.traffic.close()
            self._sampling.set()
            requester.close()
            self.cut.sub.close()
            self.cut.daemon.stop()
            stop_console()
        return figures(self)

    def _settle(self, quiet_s: float = 3.0, patience_s: float = 60.0) -> None:
        """Wait until every event the daemon has sent is in, and nothing new comes."""
        last, since = -1, time.monotonic()
        deadline = time.monotonic() + patience_s
        while time.monotonic() < deadline:
            seqs = {e["seq"] for e in events_of(self.cut.sub.snapshot())}
            top = max(seqs, default=0)
            complete = len(seqs) == top
            if top != last:
                last, since = top, time.monotonic()
            elif complete and time.monotonic() - since >= quiet_s:
                return
            time.sleep(0.2)


def say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


def events_of(messages: list[Received]) -> Iterator[dict[str, Any]]:
    for message in messages:
        if message.topic.endswith("/event"):
            event: dict[str, Any] = message.json()
            event["_at"] = message.at
            yield event


# --- figures -------------------------------------------------------------------------------


def read_outbox(state_dir: Path) -> tuple[int, int, set[int]]:
    """(last committed seq, dropped, seqs still queued) from the stopped daemon's outbox."""
    db = sqlite3.connect(f"file:{state_dir / 'outbox.sqlite3'}?mode=ro", uri=True)
    try:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        queued = {row[0] for row in db.execute("SELECT seq FROM outbox")}
    finally:
        db.close()
    return int(meta.get("seq", 0)), int(meta.get("dropped", 0)), queued


def delivery(soak: Soak) -> dict[str, Any]:
    received = list(events_of(soak.messages))
    by_id = Counter(e["event_id"] for e in received)
    unique: dict[str, dict[str, Any]] = {}
    for event in received:
        unique.setdefault(event["event_id"], event)
    ids_by_seq: dict[int, set[str]] = {}
    for event in unique.values():
        ids_by_seq.setdefault(event["seq"], set()).add(event["event_id"])
    made, dropped, queued = read_outbox(soak.tmp / "state")
    reported = max(
        [e["data"].get("dropped", 0) for e in unique.values() if e["type"].startswith("outbox.")],
        default=0,
    )
    dropped = max(dropped, reported)
    missing = [s for s in range(1, made + 1) if s not in ids_by_seq and s not in queued]
    return {
        "events": sorted(unique.values(), key=lambda e: e["seq"]),
        "events_made": made,
        "events_delivered": len([s for s in ids_by_seq if s <= made]),
        "lost": max(0, len(missing) - dropped),
        "lost_seqs": missing[:20],
        "duplicated": sum(n - 1 for n in by_id.values()),
        "dropped_reported": dropped,
        "undelivered_at_end": len(queued),
        "seq_conflicts": sum(1 for ids in ids_by_seq.values() if len(ids) > 1),
        "beyond_made": len([s for s in ids_by_seq if s > made]),
    }


def ptt_pairs(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Every ptt.on must be followed, on its channel, by a ptt.off."""
    keyed: dict[str, bool] = {}
    reasons: Counter[str] = Counter()
    double_on = off_without_on = ons = 0
    for event in events:
        if event["type"] == "ptt.on":
            ons += 1
            double_on += keyed.get(event["source_id"], False)
            keyed[event["source_id"]] = True
        elif event["type"] == "ptt.off":
            reasons[event["data"].get("reason", "?")] += 1
            off_without_on += not keyed.get(event["source_id"], False)
            keyed[event["source_id"]] = False
    return {
        "ptt_off_other_reasons": sum(n for r, n in reasons.items() if r not in PTT_OFF_REASONS),
        "ptt_on": ons,
        "ptt_off": sum(reasons.values()),
        "ptt_off_reasons": dict(sorted(reasons.items())),
        "ptt_on_unpaired": sorted(ch for ch, k in keyed.items() if k),
        "ptt_double_on": double_on,
        "ptt_off_without_on": off_without_on,
    }


def fault_outcomes(soak: Soak, events: list[dict[str, Any]]) -> dict[str, Any]:
    """What the daemon said about each fault, matched in seq order after the fault began."""
    radios = soak.cut.console.radios
    modules = {m for m, s in soak.cut.console.modules.items()}
    detected = recovered = kill_ok = restart_offs = restart_expected = 0
    reconnects: list[float] = []
    statuses = [(m.at, m.json()) for m in soak.messages if m.topic == f"{soak.cut.prefix}/status"]
    problems: list[str] = []
    kills: list[dict[str, Any]] = []
    for fault in soak.plan.faults:
        if not fault.started:
            continue
        after = [e for e in events if e["_at"] >= fault.started]
        if fault.kind == "unplug" and fault.target in radios:
            raised = next(
                (
                    e
                    for e in after
                    if e["type"] == "fault.raised"
                    and e["source_id"] == fault.target
                    and e["data"].get("fault") == "device_lost"
                ),
                None,
            )
            cleared = raised and next(
                (
                    e
                    for e in after
                    if e["seq"] > raised["seq"]
                    and e["type"] == "fault.cleared"
                    and e["source_id"] == fault.target
                    and e["data"].get("fault") == "device_lost"
                ),
                None,
            )
            detected += raised is not None
            recovered += bool(cleared)
            if not cleared:
                problems.append(f"unplug {fault.target} at {fault.at:.0f} s: raised {bool(raised)}")
        elif fault.kind == "unplug":
            members = {m for m, s in soak.config_modules.items() if s == fault.target} & modules
            offline = {e["source_id"] for e in after if e["type"] == "module.offline"}
            detected += members <= offline
            back = {
                e["source_id"]
                for e in after
                if e["type"] == "module.online" and e["_at"] >= fault.ended - 0.5
            }
            recovered += members <= back
            if not members <= back:
                problems.append(f"unplug {fault.target} at {fault.at:.0f} s: modules not back")
        elif fault.kind == "broker":
            online = [
                at - fault.ended
                for at, s in statuses
                if at >= fault.ended and s.get("state") == "online"
            ]
            if online:
                reconnects.append(online[0])
            else:
                problems.append(f"broker restart at {fault.at:.0f} s: no online status after")
        else:
            unclean = next((e for e in after if e["type"] == "gateway.unclean_stop"), None)
            restart_expected += len(fault.keyed)
            offs = {
                e["source_id"]
                for e in after
                if unclean is not None
                and e["seq"] > unclean["seq"]
                and e["type"] == "ptt.off"
                and e["data"].get("reason") == "restart"
            }
            restart_offs += len(offs & set(fault.keyed))
            said = sorted(unclean["data"].get("left_keyed", [])) if unclean else None
            ok = said is not None and set(fault.keyed) <= set(said) and set(fault.keyed) <= offs
            kill_ok += ok
            kills.append(
                {
                    "at_s": round(fault.started - soak.started, 1),
                    "keyed": fault.keyed,
                    "unkeyed_after_death_s": fault.unkeyed_after_s,
                    "keyed_at_restart": fault.still_keyed,
                    "reported_left_keyed": said,
                    "restart_offs": sorted(offs),
                }
            )
            if not ok:
                problems.append(
                    f"kill at {fault.at:.0f} s: keyed {fault.keyed}, unclean_stop left_keyed "
                    f"{said}, restart offs {sorted(offs)}"
                )
    return {
        "unplugs_detected": detected,
        "unplugs_recovered": recovered,
        "kills_reconciled": kill_ok,
        "kills_while_keyed": sum(1 for f in soak.plan.faults if f.kind == "kill" and f.keyed),
        "restart_offs": restart_offs,
        "restart_offs_expected": restart_expected,
        "broker_reconnect_max_s": round(max(reconnects), 1) if reconnects else None,
        "kills": kills,
        "fault_problems": problems,
    }


def life_figures(soak: Soak) -> list[dict[str, Any]]:
    out = []
    for life in soak.lives:
        warm = [s for s in life.samples if s[0] >= life.started + soak.plan.warmup_s]
        if len(warm) < 2:
            out.append({"pid": life.pid, "end": life.end, "samples": len(warm)})
            continue
        span = warm[-1][0] - warm[0][0]
        ts, rss = [s[0] for s in warm], [s[1] for s in warm]
        fit = statistics.linear_regression(ts, rss)
        slope = fit.slope
        mean_t = statistics.fmean(ts)
        spread = sum((t - mean_t) ** 2 for t in ts)
        residual = sum((r - fit.intercept - slope * t) ** 2 for t, r in zip(ts, rss, strict=True))
        se = math.sqrt(residual / (len(ts) - 2) / spread) if len(ts) > 2 and spread > 0 else None
        out.append(
            {
                "pid": life.pid,
                "end": life.end,
                "seconds": round(span, 1),
                "rss_kb_start": warm[0][1],
                "rss_kb_end": warm[-1][1],
                "rss_kb_per_h": round(slope * 3600),
                "rss_kb_per_h_se": None if se is None else round(se * 3600),
                "rss_samples": len(warm),
                "judged": span >= JUDGED_LIFE_S,
                # Settled samples only (no fault on); None when the life had none.
                "fds_start": life.settled[0][1] if life.settled else None,
                "fds_end": life.settled[-1][1] if life.settled else None,
                "fds_settled_samples": len(life.settled),
                "fds_max": max(s[2] for s in warm),
                "fds_added": dict((life.fds_last or Counter()) - (life.fds_warm or Counter())),
            }
        )
    return out


@dataclass(frozen=True)
class LogLine:
    when: float  # epoch seconds
    level: str
    template: str  # logger and message, numbers and the working folder blanked out


def read_log(path: Path, tmp: Path, ids: list[str]) -> tuple[list[LogLine], int]:
    """The daemon's non-DEBUG log lines (a traceback's lines belong to its record), and how
    many tracebacks it holds. Templates blank the config's ids too: what one channel logs
    in traffic, another may."""
    named = re.compile("|".join(re.escape(i) for i in sorted(ids, key=len, reverse=True)))
    lines: list[LogLine] = []
    tracebacks = 0
    when, level = 0.0, "INFO"
    text = path.read_text(errors="replace") if path.exists() else ""
    for line in text.splitlines():
        match = _LOG_LINE.match(line)
        message = line
        if match:
            stamp = time.mktime(time.strptime(match[1], "%Y-%m-%d %H:%M:%S"))
            when, level = stamp + int(match[2]) / 1000, match[3]
            message = line[match.end(2) + 1 :]
        elif line.startswith("Traceback"):
            tracebacks += 1
        if level != "DEBUG":
            template = named.sub("<id>", message.replace(str(tmp), "...")) if ids else message
            template = re.sub(r"\d+", "N", template)
            lines.append(LogLine(when, level, template))
    return lines, tracebacks


def log_figures(soak: Soak) -> dict[str, Any]:
    """Log lines per fault cycle. Traffic logs too (every PTT, every alarm, at INFO and
    WARNING): a line is counted against the faults only when its template (the message with
    its numbers blanked) never appears in the undisturbed stretches, before the first fault
    and after the last one; it is counted against the last fault that began before it."""
    lines, tracebacks = read_log(soak.log_path, soak.tmp, soak.ids)
    done = sorted((f for f in soak.plan.faults if f.started_wall), key=lambda f: f.started_wall)
    first = done[0].started_wall if done else soak.stop_wall
    quiet = [(soak.started_wall, first)]
    if done:
        quiet.append((done[-1].ended_wall + QUIET_AFTER_S, soak.stop_wall))
    traffic = {ln.template for ln in lines if any(a <= ln.when < b for a, b in quiet)}
    during = [ln for ln in lines if ln.when >= first]
    faulty = [ln for ln in during if ln.template not in traffic]
    by_kind: Counter[str] = Counter()
    for ln in faulty:
        by_kind[next(f.kind for f in reversed(done) if f.started_wall <= ln.when)] += 1
    cycles = Counter(f.kind for f in done)
    return {
        "log_lines": len(lines),
        "log_lines_startup": len([ln for ln in lines if ln.when < soak.started_wall]),
        "log_lines_before_faults": len(
            [ln for ln in lines if soak.started_wall <= ln.when < first]
        ),
        "log_lines_quiet": len([ln for ln in lines if any(a <= ln.when < b for a, b in quiet)]),
        "log_lines_quiet_s": round(sum(b - a for a, b in quiet), 1),
        "log_lines_per_cycle": round(len(faulty) / len(done), 2) if done else None,
        "log_lines_per_cycle_by_kind": {
            k: round(by_kind.get(k, 0) / n, 2) for k, n in sorted(cycles.items())
        },
        "log_lines_per_cycle_all": round(len(during) / len(done), 2) if done else None,
        "log_levels": dict(Counter(ln.level for ln in lines)),
        "log_fault_top": [[n, t] for t, n in Counter(ln.template for ln in faulty).most_common(12)],
        "tracebacks": tracebacks,
    }


def figures(soak: Soak) -> dict[str, Any]:
    d = delivery(soak)
    events = d.pop("events")
    pairs = ptt_pairs(events)
    outcomes = fault_outcomes(soak, events)
    lives = life_figures(soak)
    logs = log_figures(soak)
    cycles = Counter(f.kind for f in soak.plan.faults if f.started)
    first_fault = min((f.started for f in soak.plan.faults if f.started), default=None)
    before = [e for e in events if first_fault is None or e["_at"] < first_fault]
    baseline_s = (first_fault or soak.started + soak.elapsed) - soak.started
    measured = [life for life in lives if "rss_kb_start" in life]
    judged = [life for life in measured if life["judged"]]
    types = Counter(e["type"] for e in events)
    result: dict[str, Any] = {
        "bench": "soak",
        "minutes": round(soak.plan.duration_s / 60, 2),
        "seconds_run": round(soak.elapsed, 1),
        "faults": {k: cycles.get(k, 0) for k in ("unplug", "broker", "kill")},
        "fault_cycles": sum(cycles.values()),
        **d,
        "left_keyed": len(soak.left_keyed),
        "left_keyed_channels": soak.left_keyed,
        **pairs,
        **outcomes,
        "rss_kb_start": measured[0]["rss_kb_start"] if measured else None,
        "rss_kb_end": measured[-1]["rss_kb_end"] if measured else None,
        "rss_kb_per_h_max": max((life["rss_kb_per_h"] for life in judged), default=None),
        "fds_start": measured[0]["fds_start"] if measured else None,
        "fds_end": measured[-1]["fds_end"] if measured else None,
        "fds_growth_max": max(
            (
                life["fds_end"] - life["fds_start"]
                for life in measured
                if life["fds_start"] is not None
            ),
            default=0,
        ),
        "lives": lives,
        **logs,
        "unexpected_exits": soak.unexpected_exits,
        "exit_code": soak.exit_code,
        "requests": dict(sorted(soak.traffic.outcomes.items())),
        "event_types": dict(sorted(types.items())),
        "baseline": {
            "seconds": round(baseline_s, 1),
            "events": len(before),
            "events_per_min": round(len(before) / baseline_s * 60, 1) if baseline_s else None,
            "log_lines": logs["log_lines_before_faults"],
            "log_lines_per_min": round(logs["log_lines_before_faults"] / baseline_s * 60, 1)
            if baseline_s
            else None,
        },
    }
    result["pass"] = all(ok for _, _, ok in targets(result).values())
    return result


def targets(r: dict[str, Any]) -> dict[str, tuple[str, str, bool]]:
    """name -> (measured, target, met)."""
    rss = r["rss_kb_per_h_max"]
    per_cycle = r["log_lines_per_cycle"]
    return {
        "lost": (str(r["lost"]), "0", r["lost"] == 0),
        "left keyed": (str(r["left_keyed"]), "0", r["left_keyed"] == 0),
        "ptt.on without ptt.off": (
            str(len(r["ptt_on_unpaired"]) + r["ptt_double_on"]),
            "0",
            not r["ptt_on_unpaired"] and r["ptt_double_on"] == 0,
        ),
        "ptt.off reason not listed": (
            str(r["ptt_off_other_reasons"]),
            "0",
            r["ptt_off_other_reasons"] == 0,
        ),
        "kills reconciled": (
            f"{r['kills_reconciled']}/{r['faults']['kill']}",
            "all",
            r["kills_reconciled"] == r["faults"]["kill"],
        ),
        "unplugs recovered": (
            f"{r['unplugs_recovered']}/{r['faults']['unplug']}",
            "all",
            r["unplugs_recovered"] == r["faults"]["unplug"],
        ),
        "RSS growth kB/h": (
            "n/a (no life of 5 min)" if rss is None else str(rss),
            f"< {TARGET_RSS_KB_PER_H}",
            rss is None or rss < TARGET_RSS_KB_PER_H,
        ),
        "fd growth in a life": (
            str(r["fds_growth_max"]),
            f"<= {TARGET_FD_GROWTH}",
            r["fds_growth_max"] <= TARGET_FD_GROWTH,
        ),
        "log lines per cycle": (
            str(per_cycle),
            f"<= {TARGET_LOG_LINES_PER_CYCLE:g}",
            per_cycle is None or per_cycle <= TARGET_LOG_LINES_PER_CYCLE,
        ),
        "crashes, tracebacks": (
            f"{len(r['unexpected_exits'])}, {r['tracebacks']}",
            "0, 0",
            not r["unexpected_exits"] and r["tracebacks"] == 0,
        ),
    }


def report(r: dict[str, Any]) -> None:
    f = r["faults"]
    print(
        f"soak {r['seconds_run']:.0f} s: {r['fault_cycles']} fault cycles ({f['unplug']} unplugs, "
        f"{f['broker']} broker restarts, {f['kill']} kill -9, "
        f"{r['kills_while_keyed']} of them with radios keyed)"
    )
    print(
        f"events: {r['events_made']} made, {r['events_delivered']} delivered, {r['lost']} lost, "
        f"{r['duplicated']} duplicated, {r['dropped_reported']} dropped by the gateway, "
        f"{r['undelivered_at_end']} still queued at the end"
    )
    print(
        f"PTT: {r['ptt_on']} on, {r['ptt_off']} off {r['ptt_off_reasons']}; restart offs "
        f"{r['restart_offs']}/{r['restart_offs_expected']}; left keyed {r['left_keyed']}"
    )
    print(
        f"devices: {r['unplugs_detected']} unplugs detected, {r['unplugs_recovered']} recovered; "
        f"broker reconnect max {r['broker_reconnect_max_s']} s"
    )
    for kill in r["kills"]:
        print(
            f"kill -9 at {kill['at_s']:.0f} s: keyed {kill['keyed']}; once dead, unkeyed after "
            f"{kill['unkeyed_after_death_s']} s, still keyed at the restart "
            f"{kill['keyed_at_restart']}; the restart reported {kill['reported_left_keyed']} "
            f"and sent ptt.off (restart) for {kill['restart_offs']}"
        )
    for life in r["lives"]:
        if "rss_kb_start" in life:
            print(
                f"daemon pid {life['pid']} ({life['end']}): {life['seconds']:.0f} s after warm-up, "
                f"RSS {life['rss_kb_start']} -> {life['rss_kb_end']} kB "
                f"({life['rss_kb_per_h']} +- {life['rss_kb_per_h_se']} kB/h from "
                f"{life['rss_samples']} reads"
                f"{'' if life['judged'] else ', too short to judge'}), "
                f"fds {life['fds_start']} -> {life['fds_end']} (max {life['fds_max']}, "
                f"added {life['fds_added']})"
            )
    print(
        f"log: {r['log_lines']} lines (non-DEBUG), {r['log_lines_quiet']} in "
        f"{r['log_lines_quiet_s']:.0f} s undisturbed; per fault cycle "
        f"{r['log_lines_per_cycle']} {r['log_lines_per_cycle_by_kind']} "
        f"({r['log_lines_per_cycle_all']} counting the traffic's lines too)"
    )
    for n, template in r["log_fault_top"]:
        print(f"  fault log {n:>4} x {template[:150]}")
    print(f"requests: {r['requests']}")
    b = r["baseline"]
    print(
        f"baseline (undisturbed first {b['seconds']:.0f} s): {b['events']} events "
        f"({b['events_per_min']}/min), {b['log_lines']} log lines ({b['log_lines_per_min']}/min)"
    )
    for problem in r["fault_problems"]:
        print(f"problem: {problem}")
    print(f"{'target':<26} {'measured':>24} {'target':>10}")
    for name, (measured, target, ok) in targets(r).items():
        print(f"{name:<26} {measured:>24} {target:>10} {'ok' if ok else 'MISSED'}")


def _interrupted(signum: int, frame: Any) -> None:
    # Once: a second signal (timeout(1) passes its own on) must not cut the cleanup short,
    # which would leave a sound server running.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=FULL_S / 60)
    parser.add_argument("--quick", action="store_true", help="about 3 minutes, faults scaled")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument(
        "--keep", action="store_true", help="keep the working folder (daemon log, outbox)"
    )
    parser.add_argument(
        "--no-kill", action="store_true", help="never SIGKILL the daemon: one life to profile"
    )
    parser.add_argument(
        "--memprofile",
        type=Path,
        metavar="DIR",
        help="run the daemon under bench/memprofile.py, sampling its memory into DIR",
    )
    parser.add_argument(
        "--tracemalloc",
        type=int,
        default=0,
        metavar="FRAMES",
        help="with --memprofile: trace Python allocations, FRAMES deep (0: off)",
    )
    parser.add_argument(
        "--daemon-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set in the daemon's environment only (e.g. MALLOC_ARENA_MAX=2); repeatable",
    )
    args = parser.parse_args(argv)
    duration = QUICK_S if args.quick else args.minutes * 60
    options: dict[str, Any] = {
        "kill": not args.no_kill,
        "memprofile": args.memprofile.resolve() if args.memprofile else None,
        "tracemalloc_frames": args.tracemalloc,
        "daemon_env": dict(item.split("=", 1) for item in args.daemon_env),
    }
    # A stop signal unwinds the run, so the broker, daemon and sound servers stop with it
    # (a background job of a non-interactive shell even starts with SIGINT ignored).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupted)
    if args.keep:
        kept = Path(tempfile.mkdtemp(prefix="soak-"))
        say(f"working folder (kept): {kept}")
        result = Soak(kept, duration, args.seed, **options).run()
    else:
        with tempfile.TemporaryDirectory(prefix="soak-") as tmp_name:
            result = Soak(Path(tmp_name), duration, args.seed, **options).run()
    report(result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
