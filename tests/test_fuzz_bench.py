"""bench/fuzz.py keeps running end to end: a tiny run, its figures in the last line.

Only that it ran is checked here, not the targets: the bench's own output says those."""

from __future__ import annotations

import pytest

from tests.bench_tools import run_bench


@pytest.mark.slow
def test_fuzz_bench_runs_and_reports() -> None:
    figures = run_bench("fuzz.py", "--count", "300", "--big", "2", timeout=240)
    assert figures["sent"] == 300
    assert figures["request_topic"] > 0
    assert figures["answered_exactly_once"] + figures["never_answered"] <= figures["request_topic"]
    assert isinstance(figures["pass"], bool)
    assert "pass: " in figures["_stdout"]  # the comparison against the targets was printed
