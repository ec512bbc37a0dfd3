"""bench/soak.py keeps running end to end: 60 s on the simulated console with each kind of
fault at least once, its figures in the last line.

Checked here: it ran, nothing was lost, no radio was left keyed and every ptt.on had its
ptt.off. The other targets (RSS, fds, log lines) need the full run; its output says those."""

from __future__ import annotations

import pytest

from tests.bench_tools import run_bench


@pytest.mark.slow
@pytest.mark.timeout(330)  # about 75 s on an idle machine; the default 120 s is too tight
def test_soak_bench_runs_loses_nothing_and_leaves_nothing_keyed() -> None:
    figures = run_bench("soak.py", "--minutes", "1", timeout=300)
    assert all(n >= 1 for n in figures["faults"].values()), figures["faults"]
    assert figures["events_made"] > 100
    assert figures["lost"] == 0, figures["lost_seqs"]
    assert figures["left_keyed"] == 0, figures["left_keyed_channels"]
    assert figures["ptt_on_unpaired"] == []
    assert figures["kills_reconciled"] == figures["faults"]["kill"], figures["kills"]
    assert isinstance(figures["pass"], bool)
    assert "log lines per cycle" in figures["_stdout"]  # the comparison with the targets
