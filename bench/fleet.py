"""Fleet: N console gateways on one broker and one CAD subscriber, on this machine.

    python bench/fleet.py [--gateways 20] [--seconds 60] [--requests 300] [--no-cluster]
                          [--skip-mosquitto] [--freeze] [--net-ticktime S]

Each gateway is the real daemon (a subprocess, as in production) with one serial radio
channel, simulated behind RFC 2217 on loopback; the bench toggles every other radio's
carrier (cos.on / cos.off events) all along. While the fleet streams, PTT requests go to one
chosen gateway, one at a time, and the time from the request's publish to the simulated radio's
PTT line change is measured, interleaved with the broker's own publish-to-deliver time
between two clients in this process: the part no gateway can remove. CAD subscribes to
every gateway's events; an event is lost when its `seq` is missing at CAD at the end.

Two runs: mosquitto (MQTT 5), then a three-node RabbitMQ cluster (MQTT 3.1.1) with the
gateways on node A (`mqtt.urls` lists A, B, C) and CAD on node B with a persistent session;
node A is killed half-way (SIGKILL: its connections end at once; or, with --freeze, SIGSTOP:
a machine gone silent, its connections left open, which the other nodes notice only after
net_ticktime) and each gateway's fail-over time is taken from its own log.
Per-daemon and broker CPU (share of one core) and RSS come from /proc.

The last line is one JSON object. Targets: 0 lost, PTT p99 within 2x the broker's p99 round
trip under fleet load, fail-over to a surviving node under 5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as paho  # noqa: E402

from bench.procfs import cpu_seconds, vm_rss_kb  # noqa: E402
from bench.ptt_latency import BrokerRoundTrip  # noqa: E402
from bench.stats import percentile  # noqa: E402
from hw_sim.serial_radio import SimState, SimulatedSerialRadio  # noqa: E402
from tests.mqtt_tools import Broker, Daemon, Received, Subscriber, free_port  # noqa: E402
from tests.rabbitmq import RabbitCluster, rabbitmq_available  # noqa: E402

TOGGLE_S = 0.5
"""Each radio's carrier changes this often: two events a second per gateway."""
PAUSE_S = 0.02
"""Between measurements: a dispatcher's PTT presses are seconds apart, not back to back."""
FAILOVER_TARGET_S = 5.0
CAD_TOPICS = [
    "consolegw/+/event",
    "consolegw/+/channels/+/event",
    "consolegw/+/channels/+/state",
    "consolegw/+/channels/+/response/+",
]
"""What CAD takes: every event, the channel states (online) and the PTT responses."""
PTT_TARGET_RATIO = 2.0


@dataclass
class Member:
    gid: str
    radio: SimulatedSerialRadio
    daemon: Daemon
    toggles: int = 0


@dataclass
class RunFigures:
    broker: str
    gateways: int
    seconds: float = 0.0
    events_made: int = 0
    events_delivered: int = 0
    duplicated: int = 0
    lost: int = 0
    ptt_ms: list[float] = field(default_factory=list)
    rtt_ms: list[float] = field(default_factory=list)
    daemon_cpu: list[float] = field(default_factory=list)  # share of one core, each daemon
    daemon_rss_kb: list[int] = field(default_factory=list)
    broker_cpu: float | None = None
    broker_rss_kb: int | None = None
    ptt_lost: int = 0  # requests unanswered (published to a node as it died)
    failover_s: list[float] = field(default_factory=list)
    not_failed_over: int = 0

    def summary(self) -> dict[str, Any]:
        p99, b99 = percentile(self.ptt_ms, 0.99), percentile(self.rtt_ms, 0.99)
        out: dict[str, Any] = {
            "broker": self.broker,
            "gateways": self.gateways,
            "seconds": round(self.seconds, 1),
            "events_made": self.events_made,
            "events_delivered": self.events_delivered,
            "events_per_s": round(self.events_delivered / self.seconds, 1),
            "duplicated": self.duplicated,
            "lost": self.lost,
            "ptt_requests": len(self.ptt_ms),
            "ptt_unanswered": self.ptt_lost,
            "ptt_p50_ms": round(statistics.median(self.ptt_ms), 3),
            "ptt_p99_ms": round(p99, 3),
            "broker_rtt_p50_ms": round(statistics.median(self.rtt_ms), 3),
            "broker_rtt_p99_ms": round(b99, 3),
            "ratio_p99": round(p99 / b99, 2),
            "daemon_cpu_pct_mean": round(100 * statistics.mean(self.daemon_cpu), 2),
            "daemon_cpu_pct_max": round(100 * max(self.daemon_cpu), 2),
            "daemon_rss_mb_mean": round(statistics.mean(self.daemon_rss_kb) / 1024, 1),
            "broker_cpu_pct": None if self.broker_cpu is None else round(100 * self.broker_cpu, 2),
            "broker_rss_mb": None
            if self.broker_rss_kb is None
            else round(self.broker_rss_kb / 1024, 1),
        }
        if self.failover_s or self.not_failed_over:
            out["failover_max_s"] = round(max(self.failover_s), 2) if self.failover_s else None
            out["failover_p50_s"] = (
                round(statistics.median(self.failover_s), 2) if self.failover_s else None
            )
            out["not_failed_over"] = self.not_failed_over
        return out


def gateway_config(tmp: Path, gid: str, radio: SimulatedSerialRadio, mqtt: str) -> str:
    return f"""
[gateway]
id = "{gid}"
state_dir = "{tmp}/state-{gid}"
log_level = "info"
[mqtt]
{mqtt}
[outbox]
fsync = false
[channels.ch1]
tx_timeout_s = 3600
max_lease_s = 3600
[channels.ch1.radio]
kind = "serial"
url = "{radio.url}"
ptt = ["rts"]
cos = "cts"
"""


@contextmanager
def fleet(tmp: Path, n: int, mqtt: str) -> Iterator[list[Member]]:
    members: list[Member] = []
    try:
        for i in range(n):
            gid = f"pos-{i + 1:02d}"
            radio = SimulatedSerialRadio(port=free_port(), ptt_line="rts", cos_line="cts")
            radio.start()
            path = tmp / f"{gid}.toml"
            path.write_text(gateway_config(tmp, gid, radio, mqtt))
            members.append(Member(gid, radio, Daemon(path)))
        for member in members:
            member.daemon.start()
        yield members
    finally:
        for member in members:
            member.daemon.stop()
            member.radio.stop()


def _keyed_is(keyed: bool) -> Callable[[SimState], bool]:
    return lambda state: state.keyed == keyed


def _responses_beyond(topic: str, before: int) -> Callable[[list[Received]], bool]:
    return lambda m: len([x for x in m if x.topic == topic]) > before


def _online(gids: set[str]) -> Callable[[list[Received]], bool]:
    def check(messages: list[Received]) -> bool:
        seen = {
            m.topic.split("/")[1]
            for m in messages
            if m.topic.endswith("/channels/ch1/state") and m.json().get("device") == "online"
        }
        return gids <= seen

    return check


class Toggler:
    """Every radio's carrier, on and off, all along (from one thread, spread over the
    period so the fleet's events do not come in one burst)."""

    def __init__(self, members: list[Member]) -> None:
        self._members = members
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="toggler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        for member in self._members:  # every carrier off: the last change is an event too
            if member.toggles % 2:
                member.radio.set_carrier(False)
                member.toggles += 1

    def _run(self) -> None:
        step = TOGGLE_S / len(self._members)
        while not self._stop.is_set():
            for member in self._members:
                if self._stop.wait(step):
                    return
                member.toggles += 1
                member.radio.set_carrier(member.toggles % 2 == 1)


def measure_ptt(
    target: Member,
    sub: Subscriber,
    round_trip: BrokerRoundTrip,
    *,
    requests: int,
    figures: RunFigures,
    halfway: Callable[[], None] | None = None,
) -> None:
    topic = f"consolegw/{target.gid}/channels/ch1/request/ptt"
    response = topic.replace("/request/", "/response/")
    for i in range(requests):
        if halfway is not None and i == requests // 2:
            halfway()
        time.sleep(PAUSE_S)
        figures.rtt_ms.append(round_trip.once())
        time.sleep(PAUSE_S)
        keyed = i % 2 == 0
        before = len([m for m in sub.snapshot() if m.topic == response])
        target.radio.clear_events()
        start = time.monotonic()
        sub.client.publish(topic, json.dumps({"state": "on" if keyed else "off"}), qos=1)
        try:
            target.radio.wait_blocking(_keyed_is(keyed), timeout_s=5)
            sub.wait(_responses_beyond(response, before), timeout=5)
        except (TimeoutError, AssertionError):
            # Across a fail-over a request published to the dying node is lost with it:
            # the PTT press a dispatcher repeats. Not a latency sample.
            figures.ptt_lost += 1
            say(f"  PTT request {i} unanswered ({'on' if keyed else 'off'})")
            continue
        change = [e for e in target.radio.events(name="keyed") if e.value == keyed]
        if change:  # (none: the line was there already, after a lost request)
            figures.ptt_ms.append((change[0].t - start) * 1000)


def count_events(cad: Subscriber, members: list[Member], figures: RunFigures) -> None:
    by_gateway: dict[str, list[int]] = {m.gid: [] for m in members}
    cos = 0
    for message in cad.snapshot():
        if not message.topic.endswith("/event"):
            continue
        try:
            event = message.json()
        except ValueError:
            continue
        gid = str(event.get("gateway"))
        if gid in by_gateway:
            by_gateway[gid].append(int(event["seq"]))
            cos += str(event.get("type", "")).startswith("cos.")
    delivered = duplicated = lost = 0
    for seqs in by_gateway.values():
        unique = set(seqs)
        delivered += len(unique)
        duplicated += len(seqs) - len(unique)
        if unique:
            lost += len(set(range(1, max(unique) + 1)) - unique)
    figures.events_made = sum(m.toggles for m in members)
    figures.events_delivered = delivered
    figures.duplicated = duplicated
    figures.lost = lost
    say(f"  cos events at CAD {cos} for {figures.events_made} carrier changes made")


def settle(cad: Subscriber, quiet_s: float = 2.0, limit_s: float = 30.0) -> None:
    deadline = time.monotonic() + limit_s
    last = -1
    while time.monotonic() < deadline:
        count = len(cad.snapshot())
        if count == last:
            return
        last = count
        time.sleep(quiet_s)


def sample_processes(
    members: list[Member],
    broker_pids: list[int],
    figures: RunFigures,
    began: dict[int, float],
    seconds: float,
) -> None:
    for member in members:
        assert member.daemon.proc is not None
        pid = member.daemon.proc.pid
        used = cpu_seconds(pid)
        if used is not None:
            figures.daemon_cpu.append((used - began[pid]) / seconds)
        rss = vm_rss_kb(pid)
        if rss is not None:
            figures.daemon_rss_kb.append(rss)
    cpu = [cpu_seconds(pid) for pid in broker_pids]
    if broker_pids and all(c is not None for c in cpu):
        figures.broker_cpu = (
            sum((c or 0.0) - began[pid] for c, pid in zip(cpu, broker_pids, strict=True)) / seconds
        )
        figures.broker_rss_kb = sum(vm_rss_kb(pid) or 0 for pid in broker_pids)


def cpu_marks(members: list[Member], broker_pids: list[int]) -> dict[int, float]:
    pids = [m.daemon.proc.pid for m in members if m.daemon.proc is not None] + broker_pids
    return {pid: cpu_seconds(pid) or 0.0 for pid in pids}


def run_mosquitto(args: argparse.Namespace) -> RunFigures:
    figures = RunFigures("mosquitto 5", args.gateways)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        broker = Broker(tmp / "broker", extra_conf="set_tcp_nodelay true")
        broker.start()
        cad = Subscriber(
            broker.host,
            broker.port,
            CAD_TOPICS,
        )
        try:
            with fleet(tmp, args.gateways, f'url = "{broker.url}"') as members:
                cad.wait(_online({m.gid for m in members}), 60, "every gateway online")
                run_fleet(
                    args,
                    members,
                    cad,
                    BrokerRoundTrip(broker.port, host=broker.host),
                    figures=figures,
                    broker_pids=[broker.proc.pid] if broker.proc else [],
                )
        finally:
            cad.close()
            broker.stop()
    return figures


def run_fleet(
    args: argparse.Namespace,
    members: list[Member],
    cad: Subscriber,
    round_trip: BrokerRoundTrip,
    *,
    figures: RunFigures,
    broker_pids: list[int],
    halfway: Callable[[], None] | None = None,
) -> None:
    # The measured gateway is quiet; all the others stream.
    target = members[len(members) // 2]
    toggler = Toggler([m for m in members if m is not target])
    began = cpu_marks(members, broker_pids)
    start = time.monotonic()
    toggler.start()
    time.sleep(2.0)
    measure_ptt(target, cad, round_trip, requests=args.requests, figures=figures, halfway=halfway)
    left = args.seconds - (time.monotonic() - start)
    if left > 0:
        time.sleep(left)
    toggler.stop()
    figures.seconds = time.monotonic() - start
    sample_processes(members, broker_pids, figures, began, figures.seconds)
    round_trip.close()
    settle(cad)
    count_events(cad, members, figures)


def run_cluster(args: argparse.Namespace) -> RunFigures:
    how = "frozen (SIGSTOP)" if args.freeze else "killed"
    tick = "" if args.net_ticktime is None else f", net_ticktime {args.net_ticktime} s"
    figures = RunFigures(f"RabbitMQ 3 nodes, 3.1.1, node A {how}{tick}", args.gateways)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        extra = "" if args.net_ticktime is None else f"net_ticktime = {args.net_ticktime}\n"
        cluster = RabbitCluster(tmp / "cluster", extra_conf=extra)
        say("  starting the RabbitMQ cluster")
        cluster.start()
        a, b, c = (cluster[name] for name in ("a", "b", "c"))
        urls = ", ".join(f'"mqtt://{n.host}:{n.port}"' for n in (a, b, c))
        # CAD on B, with a persistent session: it outlives the gateways' moves.
        cad = Subscriber(
            b.host,
            b.port,
            CAD_TOPICS,
            client_id=f"cad-{os.getpid()}",
            persistent=True,
            protocol=paho.MQTTv311,
        )
        try:
            mqtt = f"urls = [{urls}]\nkeepalive_s = 5\nreturn_to_first_s = 0"
            with fleet(tmp, args.gateways, mqtt) as members:
                cad.wait(_online({m.gid for m in members}), 90, "every gateway online")
                killed: dict[str, float] = {}

                def kill_a() -> None:
                    say(f"  node A {how}")
                    killed["at"] = time.monotonic()
                    if args.freeze:
                        cluster.freeze("a")
                    else:
                        cluster.kill("a")
                    threading.Thread(
                        target=watch_failovers,
                        args=(members, killed["at"], figures, max(30.0, args.seconds)),
                        daemon=True,
                    ).start()

                broker_pids = [node.beam_pid() for node in (b, c)]
                run_fleet(
                    args,
                    members,
                    cad,
                    BrokerRoundTrip(b.port, host=b.host, protocol=paho.MQTTv311),
                    figures=figures,
                    broker_pids=broker_pids,
                    halfway=kill_a,
                )
        finally:
            cad.close()
            cluster.stop()
    return figures


def watch_failovers(
    members: list[Member], since: float, figures: RunFigures, within_s: float
) -> None:
    waiting = {m.gid: m for m in members}
    deadline = since + within_s
    while waiting and time.monotonic() < deadline:
        for gid, member in list(waiting.items()):
            if member.daemon.log().count("MQTT connected to") >= 2:
                figures.failover_s.append(time.monotonic() - since)
                del waiting[gid]
        time.sleep(0.05)
    figures.not_failed_over = len(waiting)
    for gid, member in waiting.items():  # what they say instead: the bench's finding
        lines = [ln for ln in member.daemon.log().splitlines() if "gateway.mqtt" in ln]
        say(f"  {gid} did not fail over; its last MQTT lines:")
        for line in lines[-4:]:
            say(f"    {line[:300]}")


def say(text: str) -> None:
    print(text, flush=True)


def report(figures: RunFigures) -> dict[str, Any]:
    s = figures.summary()
    say(f"{figures.broker}: {figures.gateways} gateways for {s['seconds']} s")
    say(
        f"  events: {s['events_delivered']} delivered ({s['events_per_s']}/s), "
        f"{s['duplicated']} twice, {s['lost']} lost"
    )
    say(
        f"  PTT request -> line p50 {s['ptt_p50_ms']} ms, p99 {s['ptt_p99_ms']} ms "
        f"({s['ptt_requests']} requests); broker round trip p50 {s['broker_rtt_p50_ms']} ms, "
        f"p99 {s['broker_rtt_p99_ms']} ms; ratio p99 {s['ratio_p99']} "
        f"(target <= {PTT_TARGET_RATIO})"
    )
    say(
        f"  per daemon: CPU {s['daemon_cpu_pct_mean']}% of a core (max "
        f"{s['daemon_cpu_pct_max']}%), RSS {s['daemon_rss_mb_mean']} MB; broker: CPU "
        f"{s['broker_cpu_pct']}%, RSS {s['broker_rss_mb']} MB"
    )
    if "failover_max_s" in s:
        say(
            f"  fail-over after node A's death: p50 {s['failover_p50_s']} s, max "
            f"{s['failover_max_s']} s, {s['not_failed_over']} not failed over "
            f"(target < {FAILOVER_TARGET_S} s)"
        )
    return s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gateways", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--no-cluster", action="store_true", help="mosquitto only")
    parser.add_argument(
        "--freeze",
        action="store_true",
        help="SIGSTOP node A instead of SIGKILL: a machine gone without closing its "
        "connections (power, network), which its peers detect only by net_ticktime",
    )
    parser.add_argument(
        "--net-ticktime",
        type=int,
        default=None,
        help="the cluster's net_ticktime in seconds (RabbitMQ's default: 60)",
    )
    parser.add_argument(
        "--skip-mosquitto", action="store_true", help="the RabbitMQ cluster run only"
    )
    args = parser.parse_args()
    if args.gateways < 2:
        parser.error("--gateways: at least 2 (one is measured while the others stream)")
    runs = [] if args.skip_mosquitto else [report(run_mosquitto(args))]
    if not args.no_cluster:
        if rabbitmq_available():
            runs.append(report(run_cluster(args)))
        else:
            say("RabbitMQ not installed: the cluster run is skipped")
    verdict = all(
        r["lost"] == 0
        and r["ratio_p99"] <= PTT_TARGET_RATIO
        and r.get("not_failed_over", 0) == 0
        and (r.get("failover_max_s") or 0.0) < FAILOVER_TARGET_S
        for r in runs
    )
    print(json.dumps({"bench": "fleet", "runs": runs, "pass": verdict}))


if __name__ == "__main__":
    main()
