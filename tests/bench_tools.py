"""Running a bench from a test: its smoke run, its figures from the JSON last line."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from tests.mqtt_tools import ROOT


def run_bench(script: str, *args: str, timeout: float) -> dict[str, Any]:
    """`python bench/<script> args...`; fails the test with its output's tail unless it
    exits 0 and its last line is the JSON object naming the bench."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["bench"] == script.removesuffix(".py"), figures.get("bench")
    figures["_stdout"] = result.stdout
    return figures
