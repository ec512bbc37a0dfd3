"""Alarm latency: a simulated input flips -> the event reaches an MQTT subscriber.

    python bench/alarm_latency.py [--modules 32] [--poll-ms 50] [--flips 300]

32 simulated IO modules, each its own Modbus TCP endpoint on loopback (as Ethernet modules
like ADAM-6050 or ioLogik E1210 are), one alarm input each, debounce 0, polled every 50 ms by
the daemon (a subprocess, with the default config: fsync on). Inputs flip at random modules
every 100 ms; latency runs from the flip to the alarm.raised/alarm.cleared event arriving at a
paho subscriber. The daemon's CPU share comes from /proc over the flipping window. The
baseline the target is set against is the poll interval itself: a flip waits up to one
interval for the next poll. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stats import percentile  # noqa: E402
from gateway.config import load_config  # noqa: E402
from hw_sim.console import SimConsole  # noqa: E402
from tests.mqtt_tools import Broker, Daemon, Subscriber, free_port  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def build_config(tmp: Path, broker: Broker, modules: int, poll_ms: float) -> str:
    parts = [
        f"""
[gateway]
id = "bench"
state_dir = "{tmp}/state"
log_level = "warning"
[mqtt]
url = "{broker.url}"
"""
    ]
    for i in range(modules):
        parts.append(
            f"""
[modbus.links.l{i}]
host = "127.0.0.1"
port = {free_port()}
[modbus.modules.m{i}]
link = "l{i}"
device_id = 1
preset = "e1210"
poll_ms = {poll_ms}
[alarms.a{i}]
module = "m{i}"
channel = 0
debounce_ms = 0
"""
        )
    return "".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--modules", type=int, default=32)
    parser.add_argument("--poll-ms", type=float, default=50.0)
    parser.add_argument("--flips", type=int, default=300)
    args = parser.parse_args()
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        broker = Broker(tmp / "broker")
        broker.start()
        config_path = tmp / "gw.toml"
        config_path.write_text(build_config(tmp, broker, args.modules, args.poll_ms))
        console = SimConsole(load_config(config_path))
        console.start()
        daemon = Daemon(config_path)
        daemon.start()
        sub = Subscriber(broker.host, broker.port, ["consolegw/bench/alarms/+/event"])
        try:
            ready = Subscriber(broker.host, broker.port, ["consolegw/bench/modules/+/state"])
            ready.wait(
                lambda m: (
                    len({x.topic for x in m if x.json()["state"] == "online"}) >= args.modules
                ),
                timeout=60,
                what="every module online",
            )
            ready.close()
            assert daemon.proc is not None
            levels = [False] * args.modules
            sent: list[tuple[int, bool, float]] = []
            cpu0, wall0 = cpu_seconds(daemon.proc.pid), time.monotonic()
            for _ in range(args.flips):
                i = rng.randrange(args.modules)
                levels[i] = not levels[i]
                sent.append((i, levels[i], time.monotonic()))
                console.set_alarm_input(f"a{i}", levels[i])
                time.sleep(0.1)
            cpu1, wall1 = cpu_seconds(daemon.proc.pid), time.monotonic()
            time.sleep(1.0)
            latencies = match_events(sub, sent)
        finally:
            sub.close()
            daemon.stop()
            console.stop()
            broker.stop()
    cpu_fraction = (cpu1 - cpu0) / (wall1 - wall0)
    p50, p99 = statistics.median(latencies), percentile(latencies, 0.99)
    target = args.poll_ms + 15
    print(
        f"{len(latencies)} of {len(sent)} flips seen; latency p50 {p50:.1f} ms, p99 "
        f"{p99:.1f} ms (target p99 <= {target:.0f} ms), max {max(latencies):.1f} ms"
    )
    print(f"daemon CPU: {cpu_fraction * 100:.1f}% of one core (target < 25%)")
    print(
        json.dumps(
            {
                "bench": "alarm_latency",
                "modules": args.modules,
                "poll_ms": args.poll_ms,
                "flips": len(sent),
                "seen": len(latencies),
                "p50_ms": round(p50, 2),
                "p99_ms": round(p99, 2),
                "max_ms": round(max(latencies), 2),
                "baseline_poll_ms": args.poll_ms,
                "cpu_fraction": round(cpu_fraction, 4),
            }
        )
    )


def match_events(sub: Subscriber, sent: list[tuple[int, bool, float]]) -> list[float]:
    """Pair each flip with the first event for that alarm and direction after it."""
    arrivals: dict[str, list[tuple[float, bool]]] = {}
    for message in sub.snapshot():
        event = message.json()
        if event["type"] in ("alarm.raised", "alarm.cleared"):
            arrivals.setdefault(event["source_id"], []).append(
                (message.at, event["type"] == "alarm.raised")
            )
    latencies = []
    for i, level, at in sent:
        for arrived, raised in arrivals.get(f"a{i}", []):
            if arrived >= at and raised == level:
                latencies.append((arrived - at) * 1000)
                break
    return latencies


if __name__ == "__main__":
    main()
