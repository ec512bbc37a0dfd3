"""Events/s and publish-to-receive latency through the durable outbox, next to bare paho.

    python bench/event_throughput.py [--events 20000] [--no-fsync]

Both runs go through the same private mosquitto to the same kind of subscriber (paho, QoS 1)
in one process, so one clock times send and receive. The baseline is a bare paho QoS 1
publish loop (no durability); ours commits every event to SQLite (fsync on, as the default
config) before publishing and deletes it on PUBACK. Latency is measured at full load (the
queueing a burst sees) and at a steady 1,000 events/s (what one event sees on a busy console).
The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as paho  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from bench.stats import percentile  # noqa: E402
from gateway.commands import CommandRouter  # noqa: E402
from gateway.config import MqttSection  # noqa: E402
from gateway.events import CosData  # noqa: E402
from gateway.mqtt import MqttLink  # noqa: E402
from gateway.outbox import Outbox  # noqa: E402
from gateway.publisher import Publisher  # noqa: E402
from tests.mqtt_tools import Broker  # noqa: E402

PAYLOAD_PAD = "x" * 180  # our events are ~300 bytes; give the baseline the same size


class Receiver:
    """Counts messages and notes when each sequence number first arrived."""

    def __init__(self, port: int, topic: str) -> None:
        self.arrived: dict[int, float] = {}
        self.done = threading.Event()
        self.expected = 0
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        time.sleep(0.3)

    def expect(self, count: int) -> None:
        with self._lock:
            self.arrived.clear()
            self.expected = count
            self.done.clear()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        now = time.perf_counter()
        seq = int(json.loads(msg.payload)["seq"])
        with self._lock:
            self.arrived.setdefault(seq, now)
            if len(self.arrived) >= self.expected:
                self.done.set()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def latencies_ms(sent: dict[int, float], arrived: dict[int, float]) -> dict[str, float]:
    lat = [(arrived[s] - t) * 1000 for s, t in sent.items() if s in arrived]
    return {
        "p50_ms": round(statistics.median(lat), 3),
        "p99_ms": round(percentile(lat, 0.99), 3),
    }


def run_baseline(port: int, receiver: Receiver, count: int, rate: float | None) -> dict[str, Any]:
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.max_inflight_messages_set(64)  # the same window as the outbox's default
    client.connect("127.0.0.1", port)
    client.loop_start()
    receiver.expect(count)
    sent: dict[int, float] = {}
    infos = []
    start = time.perf_counter()
    for seq in range(1, count + 1):
        if rate is not None:
            _pace(start, seq, rate)
        sent[seq] = time.perf_counter()
        body = json.dumps({"seq": seq, "type": "cos.on", "pad": PAYLOAD_PAD})
        infos.append(client.publish("bench/base/event", body, qos=1))
    for info in infos:
        info.wait_for_publish(30)
    receiver.done.wait(60)
    elapsed = max(receiver.arrived.values()) - start
    client.loop_stop()
    client.disconnect()
    return {
        "events": count,
        "received": len(receiver.arrived),
        "events_per_s": round(len(receiver.arrived) / elapsed, 1),
        **latencies_ms(sent, receiver.arrived),
    }


def _pace(start: float, seq: int, rate: float) -> None:
    due = start + seq / rate
    delay = due - time.perf_counter()
    if delay > 0:
        time.sleep(delay)


async def run_outbox(
    port: int, receiver: Receiver, count: int, rate: float | None, *, fsync: bool, state: Path
) -> dict[str, Any]:
    outbox = Outbox(
        path=state / f"outbox-{time.monotonic_ns()}.sqlite3", max_events=10**7, fsync=fsync
    )
    outbox.open()
    publisher = Publisher(prefix="bench/gw", gateway_id="gw", outbox=outbox)
    link = MqttLink(
        mqtt=MqttSection(url=f"mqtt://127.0.0.1:{port}"),
        publisher=publisher,
        router=CommandRouter(prefix="bench/gw", gateway_id="gw"),
        version="bench",
        in_flight=64,
        client_id=f"bench-{time.monotonic_ns()}",
    )
    task = asyncio.create_task(link.run())
    await link.wait_connected()
    receiver.expect(count)
    sent: dict[int, float] = {}
    data = CosData()
    start = time.perf_counter()
    for i in range(1, count + 1):
        if rate is not None:
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        elif i % 256 == 0:
            await asyncio.sleep(0)  # let the pump and commits run, as a busy daemon would
        now = time.perf_counter()
        seq = publisher.emit("channel", "bench", "cos.on", data)
        sent[seq] = now
    await asyncio.to_thread(receiver.done.wait, 60)
    elapsed = max(receiver.arrived.values()) - start
    link.stop()
    await asyncio.wait_for(task, 10)
    outbox.close()
    return {
        "events": count,
        "received": len(receiver.arrived),
        "events_per_s": round(len(receiver.arrived) / elapsed, 1),
        **latencies_ms(sent, receiver.arrived),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--steady-rate", type=float, default=1000.0)
    parser.add_argument("--no-fsync", action="store_true", help="outbox without fsync per commit")
    args = parser.parse_args()
    fsync = not args.no_fsync
    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(Path(tmp) / "broker")
        broker.start()
        try:
            base_rx = Receiver(broker.port, "bench/base/event")
            ours_rx = Receiver(broker.port, "bench/gw/channels/bench/event")
            steady = max(1000, args.events // 10)
            results = {
                "baseline_burst": run_baseline(broker.port, base_rx, args.events, None),
                "outbox_burst": asyncio.run(
                    run_outbox(
                        broker.port, ours_rx, args.events, None, fsync=fsync, state=Path(tmp)
                    )
                ),
                "baseline_steady": run_baseline(broker.port, base_rx, steady, args.steady_rate),
                "outbox_steady": asyncio.run(
                    run_outbox(
                        broker.port, ours_rx, steady, args.steady_rate, fsync=fsync, state=Path(tmp)
                    )
                ),
            }
            base_rx.close()
            ours_rx.close()
        finally:
            broker.stop()
    print(f"{'run':<16} {'events/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'received':>9}")
    for name, r in results.items():
        print(
            f"{name:<16} {r['events_per_s']:>10} {r['p50_ms']:>9} {r['p99_ms']:>9} "
            f"{r['received']:>9}"
        )
    ratio = results["outbox_burst"]["events_per_s"] / results["baseline_burst"]["events_per_s"]
    print(
        f"outbox/baseline throughput ratio: {ratio:.2f} (target >= 0.5); "
        f"outbox {results['outbox_burst']['events_per_s']} events/s (target >= 5000)"
    )
    summary = {
        "bench": "event_throughput",
        "fsync": fsync,
        "events": args.events,
        "outbox_events_per_s": results["outbox_burst"]["events_per_s"],
        "baseline_events_per_s": results["baseline_burst"]["events_per_s"],
        "ratio": round(ratio, 3),
        "outbox_burst_p50_ms": results["outbox_burst"]["p50_ms"],
        "outbox_burst_p99_ms": results["outbox_burst"]["p99_ms"],
        "baseline_burst_p50_ms": results["baseline_burst"]["p50_ms"],
        "baseline_burst_p99_ms": results["baseline_burst"]["p99_ms"],
        "steady_rate": args.steady_rate,
        "outbox_steady_p50_ms": results["outbox_steady"]["p50_ms"],
        "outbox_steady_p99_ms": results["outbox_steady"]["p99_ms"],
        "baseline_steady_p50_ms": results["baseline_steady"]["p50_ms"],
        "baseline_steady_p99_ms": results["baseline_steady"]["p99_ms"],
        "lost": sum(r["events"] - r["received"] for r in results.values()),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
