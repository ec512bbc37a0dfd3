"""`make demo` must keep showing what it promises: run it unattended for a while."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.mqtt_tools import ROOT


@pytest.mark.slow
def test_demo_shows_the_system_working() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hw_sim.demo", "--duration", "60"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=150,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    for shown in (
        "[mqtt] gateway ONLINE",
        "event #",  # events with their sequence numbers
        "ptt.on (request)",
        "radio KEYED (transmitting)",
        "ptt.off (lease_expired)",
        "cos.on",
        "FAULT RAISED cos_flapping",
        "FAULT cleared cos_flapping",
        "FAULT RAISED device_lost",
        "FAULT cleared device_lost",
        "audio ACTIVE",
        "FAULT RAISED dead_audio",
        "FAULT cleared dead_audio",
        "recall.saved",
        "response recall: ok",
        "tty.detected",
        "tty.text LINE: HELLO 911 MY HUSBAND FELL AND CANNOT GET UP GA",
        "request tty: 911 WHAT IS YOUR ADDRESS GA",
        "the caller's TTY prints: 911 WHAT IS YOUR ADDRESS GA",
        "ALARM.RAISED Generator failure",
        "alarm.restored",
        "request ack",
        "alarm.acknowledged",
        "alarm.cleared",
        "trouble.raised",
        "module.offline",
        "module.online",
        "[mqtt] gateway OFFLINE",
    ):
        assert shown in out, f"the demo no longer shows {shown!r}:\n{out[-3000:]}"
    assert "Traceback" not in out
