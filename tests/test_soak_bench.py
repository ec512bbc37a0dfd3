"""bench/soak.py keeps running end to end: 60 s on the simulated console with each kind of
fault at least once, its figures in the last line.

Checked here: it ran, nothing was lost, no radio was left keyed and every ptt.on had its
ptt.off. The other targets (RSS, fds, log lines) need the full run; its output says those."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.mqtt_tools import ROOT


@pytest.mark.slow
@pytest.mark.timeout(330)  # about 75 s on an idle machine; the default 120 s is too tight
def test_soak_bench_runs_loses_nothing_and_leaves_nothing_keyed() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "--minutes", "1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["bench"] == "soak"
    assert all(n >= 1 for n in figures["faults"].values()), figures["faults"]
    assert figures["events_made"] > 100
    assert figures["lost"] == 0, figures["lost_seqs"]
    assert figures["left_keyed"] == 0, figures["left_keyed_channels"]
    assert figures["ptt_on_unpaired"] == []
    assert figures["kills_reconciled"] == figures["faults"]["kill"], figures["kills"]
    assert isinstance(figures["pass"], bool)
    assert "log lines per cycle" in result.stdout  # the comparison with the targets
