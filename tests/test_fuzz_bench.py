"""bench/fuzz.py keeps running end to end: a tiny run, its figures in the last line.

Only that it ran is checked here, not the targets: the bench's own output says those."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.mqtt_tools import ROOT


@pytest.mark.slow
def test_fuzz_bench_runs_and_reports() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "fuzz.py"), "--count", "300", "--big", "2"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["bench"] == "fuzz"
    assert figures["sent"] == 300
    assert figures["request_topic"] > 0
    assert figures["answered_exactly_once"] + figures["never_answered"] <= figures["request_topic"]
    assert isinstance(figures["pass"], bool)
    assert "pass: " in result.stdout  # the comparison against the targets was printed
