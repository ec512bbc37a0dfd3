"""bench/fleet.py keeps running end to end: a small fleet on mosquitto, its figures in the
last line. Checked here: it ran and nothing was lost. The figures themselves (PTT p99 under
fleet load, CPU, fail-over on the RabbitMQ cluster) come from the full run."""

from __future__ import annotations

import pytest

from tests.bench_tools import run_bench


@pytest.mark.slow
def test_fleet_bench_runs_and_loses_nothing() -> None:
    figures = run_bench(
        "fleet.py",
        "--gateways",
        "3",
        "--seconds",
        "8",
        "--requests",
        "40",
        "--no-cluster",
        timeout=110,
    )
    (run,) = figures["runs"]
    assert run["gateways"] == 3 and run["lost"] == 0, run
    assert run["events_delivered"] >= 20 and run["ptt_requests"] >= 30, run
    assert run["broker_rtt_p99_ms"] > 0 and isinstance(figures["pass"], bool)
