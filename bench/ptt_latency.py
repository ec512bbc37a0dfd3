"""PTT latency: MQTT request published -> the simulated radio sees its PTT line change.

    python bench/ptt_latency.py [--requests 1000]

The daemon runs as a subprocess (as in production) against a private mosquitto and a
simulated serial radio behind RFC 2217 on loopback. Each request alternates on/off and the
next starts once its response has arrived. The baseline, measured against the same broker
and interleaved with the requests, is the broker's own publish-to-deliver time between two
paho clients: the part of the latency no gateway can remove. time.monotonic is one clock for
every process here.

It runs twice: against mosquitto as shipped (Nagle on) and with `set_tcp_nodelay true`, the
setting the README recommends. The last line is one JSON object with p50_ms, p99_ms,
baseline_p99_ms and ratio_p99 for mosquitto as shipped, and the same with the setting.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as paho  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion  # noqa: E402

from bench.stats import percentile  # noqa: E402
from hw_sim.serial_radio import SimState, SimulatedSerialRadio  # noqa: E402
from tests.mqtt_tools import Broker, Daemon, Received, Subscriber, free_port, nodelay  # noqa: E402

_PAUSE_S = 0.01


def _keyed_is(keyed: bool) -> Callable[[SimState], bool]:
    return lambda state: state.keyed == keyed


def _more_ptt_responses_than(before: int) -> Callable[[list[Received]], bool]:
    return lambda m: len([x for x in m if x.topic.endswith("ch1/response/ptt")]) > before


class BrokerRoundTrip:
    """publish -> on_message between two paho clients, one message at a time."""

    def __init__(
        self,
        port: int,
        *,
        host: str = "127.0.0.1",
        protocol: MQTTProtocolVersion = paho.MQTTv5,
    ) -> None:
        self._got = threading.Event()
        self._arrived = 0.0
        self._count = 0
        self._topic = f"bench/rtt/{os.getpid()}"  # a broker other runs may share
        self._sub = paho.Client(CallbackAPIVersion.VERSION2, protocol=protocol)
        self._sub.on_message = self._on_message
        self._sub.connect(host, port)
        nodelay(self._sub)
        self._sub.subscribe(self._topic, qos=1)
        self._sub.loop_start()
        self._pub = paho.Client(CallbackAPIVersion.VERSION2, protocol=protocol)
        self._pub.connect(host, port)
        nodelay(self._pub)
        self._pub.loop_start()
        time.sleep(0.3)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        self._arrived = time.monotonic()
        self._got.set()

    def once(self) -> float:
        """One round trip, in ms; the payload is the size of a PTT request."""
        self._got.clear()
        self._count += 1
        start = time.monotonic()
        self._pub.publish(self._topic, json.dumps({"state": "on", "i": self._count}), qos=1)
        if not self._got.wait(5):
            raise RuntimeError("baseline message lost")
        return (self._arrived - start) * 1000

    def close(self) -> None:
        for client in (self._pub, self._sub):
            client.loop_stop()
            client.disconnect()


def measure(requests: int, broker_conf: str) -> tuple[list[float], list[float]]:
    """PTT latencies and the broker's own delivery times, against one broker config."""
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        broker = Broker(tmp / "broker", extra_conf=broker_conf)
        broker.start()
        radio = SimulatedSerialRadio(port=free_port(), ptt_line="rts", cos_line="cts")
        radio.start()
        config = tmp / "gw.toml"
        config.write_text(
            f"""
[gateway]
id = "bench"
state_dir = "{tmp}/state"
log_level = "warning"
[mqtt]
url = "{broker.url}"
[channels.ch1]
tx_timeout_s = 3600
max_lease_s = 3600
[channels.ch1.radio]
kind = "serial"
url = "{radio.url}"
ptt = ["rts"]
cos = "cts"
"""
        )
        daemon = Daemon(config)
        daemon.start()
        # Only what the bench needs: every extra message is work for a paho thread that
        # shares this process (and its GIL) with the simulated radio being timed.
        sub = Subscriber(
            broker.host,
            broker.port,
            ["consolegw/bench/channels/ch1/response/+", "consolegw/bench/channels/ch1/state"],
        )
        try:
            sub.wait(
                lambda m: [
                    x for x in m if x.topic.endswith("ch1/state") and x.json()["device"] == "online"
                ],
                timeout=20,
            )
            topic = "consolegw/bench/channels/ch1/request/ptt"
            latencies: list[float] = []
            baseline: list[float] = []
            round_trip = BrokerRoundTrip(broker.port)
            for i in range(requests):
                # Interleaved, so both see the same machine: a burst of load elsewhere
                # lands on both measurements, not on one of them. Each starts after a pause,
                # once the daemon has published what the previous PTT change caused (state,
                # events), so neither measurement carries that work: a dispatcher's PTT
                # presses are seconds apart.
                time.sleep(_PAUSE_S)
                baseline.append(round_trip.once())
                time.sleep(_PAUSE_S)
                keyed = i % 2 == 0
                before = len(sub.on("ch1/response/ptt"))
                radio.clear_events()
                start = time.monotonic()
                sub.client.publish(topic, json.dumps({"state": "on" if keyed else "off"}), qos=1)
                radio.wait_blocking(_keyed_is(keyed), timeout_s=5)
                change = [e for e in radio.events(name="keyed") if e.value == keyed]
                latencies.append((change[0].t - start) * 1000)
                sub.wait(_more_ptt_responses_than(before), timeout=5)
            round_trip.close()
        finally:
            sub.close()
            daemon.stop()
            radio.stop()
            broker.stop()
    return latencies, baseline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    runs = {
        # What mosquitto does out of the box: Nagle on. A small request would wait for the
        # daemon's delayed ACK of the broker's last PUBACK (up to 40 ms) if the daemon did
        # not ACK every PUBACK at once (TCP_QUICKACK).
        "broker_default": measure(args.requests, ""),
        # The recommended broker setting for a console gateway (README, "Broker").
        "broker_nodelay": measure(args.requests, "set_tcp_nodelay true"),
    }
    figures: dict[str, dict[str, float]] = {}
    print(f"{'':<44} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, (latencies, baseline) in runs.items():
        p50, p99 = statistics.median(latencies), percentile(latencies, 0.99)
        b50, b99 = statistics.median(baseline), percentile(baseline, 0.99)
        figures[name] = {"p50": p50, "p99": p99, "max": max(latencies), "b50": b50, "b99": b99}
        print(
            f"{name + ': request -> PTT line change':<44} {p50:>8.3f} {p99:>8.3f} "
            f"{max(latencies):>8.3f}"
        )
        print(
            f"{name + ': broker publish -> deliver':<44} {b50:>8.3f} {b99:>8.3f} "
            f"{max(baseline):>8.3f}"
        )
        print(f"{name}: ratio p99 {p99 / b99:.2f} (target <= 3)")
    main_run = figures["broker_default"]
    nodelay_run = figures["broker_nodelay"]
    print(
        json.dumps(
            {
                "bench": "ptt_latency",
                "requests": args.requests,
                "broker": "mosquitto as shipped",
                "p50_ms": round(main_run["p50"], 3),
                "p99_ms": round(main_run["p99"], 3),
                "max_ms": round(main_run["max"], 3),
                "baseline_p50_ms": round(main_run["b50"], 3),
                "baseline_p99_ms": round(main_run["b99"], 3),
                "ratio_p99": round(main_run["p99"] / main_run["b99"], 3),
                "nodelay_broker_p50_ms": round(nodelay_run["p50"], 3),
                "nodelay_broker_p99_ms": round(nodelay_run["p99"], 3),
                "nodelay_broker_baseline_p99_ms": round(nodelay_run["b99"], 3),
                "nodelay_broker_ratio_p99": round(nodelay_run["p99"] / nodelay_run["b99"], 3),
            }
        )
    )


if __name__ == "__main__":
    main()
