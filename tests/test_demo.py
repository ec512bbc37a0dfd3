"""`make demo` must keep showing what it promises: run it unattended for a while."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from gateway.config import load_config
from hw_sim.demo import FloodSummary
from hw_sim.resolve import PortKey, config_text
from tests.mqtt_tools import ROOT, free_port, wait_for

SHOWN = (
    "[mqtt] gateway ONLINE",
    "event #",  # events with their sequence numbers
    "ptt.on (request)",
    "radio KEYED (transmitting)",
    "ptt.off (lease_expired)",
    "cos.on",
    "FAULT RAISED cos_flapping",
    "FAULT cleared cos_flapping",
    "cos.off/cos.on x ",  # the flapping summed up, not a line per change
    "FAULT RAISED device_lost",
    "FAULT cleared device_lost",
    "audio ACTIVE",
    "FAULT RAISED dead_audio",
    "FAULT cleared dead_audio",
    "recall.saved",
    "recording.saved #",  # the recorder: every transmission a record
    "response recall: ok",
    "tty.detected",
    "tty.text LINE: HELLO 911 MY HUSBAND FELL AND CANNOT GET UP GA",
    "request tty: 911 WHAT IS YOUR ADDRESS GA",
    "the caller's TTY prints: 911 WHAT IS YOUR ADDRESS GA",
    "dtmf.digits 4711#",
    "selcall.detected CCIR 12234 (tones 12E34)",
    "page.detected Station 1",
    "unit.id 1234 (ptt_id)",
    "EMERGENCY.RAISED unit 0042",
    "ALARM.RAISED Generator failure",
    "alarm.restored",
    "request ack",
    "alarm.acknowledged",
    "alarm.cleared",
    "trouble.raised",
    "module.offline",
    "module.online",
    "[mqtt] gateway OFFLINE",
)
"""What `make demo` promises to show in its minute."""


class _Demo:
    """A demo in the background, its output collected as it comes."""

    def __init__(self, *args: str, tmpdir: Path | None = None) -> None:
        self.lines: list[str] = []
        env = None if tmpdir is None else {**os.environ, "TMPDIR": str(tmpdir)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hw_sim.demo", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
            env=env,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def out(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        wait_for(lambda: text in self.out or self.proc.poll() is not None, timeout, text)
        assert text in self.out, self.out[-3000:]

    def finish(self, timeout: float = 90.0) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._reader.join(5)
        return code


@pytest.mark.slow
def test_the_demo_shows_the_system_working_beside_a_second_demo() -> None:
    """The full demo runs unattended for its minute and shows everything it promises,
    while a second one starts beside it: that one gets its own free ports (the config's
    are the first one's) and, since the first one's daemon holds the config's state_dir,
    a temporary one."""
    first = _Demo("--duration", "60")
    try:
        first.wait_for("[mqtt] gateway ONLINE")
        second = _Demo("--duration", "20")
        try:
            second.wait_for("[mqtt] gateway ONLINE")
            second.wait_for("cos.on")
        finally:
            assert second.finish() == 0, second.out[-3000:]
        assert "is in use (pid " in second.out and "this demo's daemon uses" in second.out
        assert "[mqtt] gateway OFFLINE" in second.out
    finally:
        assert first.finish() == 0, first.out[-3000:]
    for demo in (first, second):
        assert "Traceback" not in demo.out and "[demo] ERROR" not in demo.out, demo.out[-3000:]
    # Each demo's broker saw its own gateway only: one online, one offline each.
    assert first.out.count("[mqtt] gateway ONLINE") == 1
    out = first.out
    for shown in SHOWN:
        assert shown in out, f"the demo no longer shows {shown!r}:\n{out[-3000:]}"
    cos_lines = [line for line in out.splitlines() if "event #" in line and " cos.o" in line]
    assert len(cos_lines) < 25, "COS flapping floods the output again"
    for kind in ("rx", "tx"):  # received and transmitted, each a record
        assert re.search(rf"recording\.saved #\d+ {kind} ", out), f"no {kind} record:\n{out}"


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return "?"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_a_killed_demo_leaves_nothing_running() -> None:
    """SIGKILL (a test's timeout, an OOM kill): no code of the demo's runs, yet its broker,
    simulator and daemon stop, instead of holding ports and CPU for ever."""
    # A killed demo cannot remove its temporary folder: the test does. (A short one under
    # /tmp: pytest's tmp_path is too long for the sound server's unix socket paths.)
    tmpdir = Path(tempfile.mkdtemp(prefix="cgw-killed-"))
    try:
        _kill_the_demo(tmpdir)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _kill_the_demo(tmpdir: Path) -> None:
    demo = _Demo("--duration", "60", tmpdir=tmpdir)
    try:
        demo.wait_for("[mqtt] gateway ONLINE")
        children = _children(demo.proc.pid)
        assert len(children) == 3, children  # mosquitto, the simulator, the daemon
    finally:
        demo.proc.send_signal(signal.SIGKILL)
        demo.finish()
    try:
        # Each gets SIGTERM at once and stops in order: the daemon releases every PTT
        # through a simulator that is going too (alone: 2.5 s; once 20 s under a full run).
        wait_for(lambda: not any(_alive(p) for p in children), 45, "the demo's children to stop")
    except AssertionError:
        left = {p: _cmdline(p) for p in children if _alive(p)}
        for p in left:
            os.kill(p, signal.SIGKILL)  # leave nothing running for the next test
        raise AssertionError(f"still running 45 s after the demo's SIGKILL: {left}") from None


def test_a_pinned_busy_port_is_named(tmp_path: Path) -> None:
    """--keep-ports serves the config's ports as written; a busy one is one clear line
    (which port, what wanted it), not a sound card timeout."""
    sim = load_config(ROOT / "config" / "sim.toml")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        ports: dict[PortKey, int] = {
            ("channels", "fire-north", "radio", "url"): free_port(),
            ("channels", "ems-south", "radio", "url"): free_port(),
            ("channels", "police-east", "radio", "usb_backend"): free_port(),
            ("modbus", "links", "panel-bus", "port"): port,
        }
        config = tmp_path / "pinned.toml"
        config.write_text(config_text(sim, ports=ports, state_dir=tmp_path / "state"))
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "hw_sim.demo", "--config", str(config), "--keep-ports"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
            check=False,
        )
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    (line,) = [x for x in out.splitlines() if "address in use" in x]
    assert f"127.0.0.1:{port}" in line and "modbus.links.panel-bus.port" in line, line
    assert "the Modbus TCP link panel-bus" in line
    assert "[demo] ERROR: the simulator stopped (exit status 1)" in out
    assert "Traceback" not in out and "sound cards" not in out
    assert time.monotonic() - started < 30


def test_floods_are_summed_up() -> None:
    now = [0.0]
    flood = FloodSummary(shown=3, window_s=10.0, quiet_s=2.0, clock=lambda: now[0])
    shown = []
    for i in range(40):  # 40 changes in 4 s
        now[0] = i * 0.1
        shown.append(flood.admit("ems", "cos", "cos.on" if i % 2 == 0 else "cos.off"))
    assert shown[:3] == [True] * 3 and not any(shown[3:])
    assert flood.admit("fire", "cos", "cos.on")  # another channel is not part of it
    now[0] = 4.0
    assert flood.due() == []  # still flapping a moment ago
    now[0] = 6.0  # quiet for 2 s: summed up at once, and forgotten
    assert flood.due() == ["ems          cos.off/cos.on x 37 more in the last 6 s"]
    assert flood.due() == []
    assert flood.admit("ems", "cos", "cos.on")  # a new change is shown again
    # A flood that does not stop is told once per window.
    for i in range(300):
        now[0] = 10.0 + i * 0.1
        flood.admit("police", "state", "state changes")
        lines = flood.due()
        if lines:
            assert lines[0].startswith("police       state changes x ")
            assert lines[0].endswith("more in the last 10 s")
    now[0] += 2.5
    assert len(flood.due()) == 1 and flood.due() == []
    # As the demo ends, what is held is told at once.
    for _ in range(6):
        flood.admit("ems", "cos", "cos.on")
    assert flood.due() == []
    assert flood.due(final=True) == ["ems          cos.on x 3 more in the last 0 s"]
