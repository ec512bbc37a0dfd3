"""systemd integration: sd_notify READY/WATCHDOG/STOPPING over a real datagram socket, and
the unit file as `systemd-analyze verify` reads it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.mqtt_tools import Broker, Daemon, wait_for

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "consolegw.service"
INSTALLED_EXE = "/opt/consolegw/bin/consolegw"


def require_tool(name: str) -> str:
    """The tool's path; a skip when it is missing, but a failure in CI (CI=true), where
    `make system-deps` installs it and a skip would hide that the check never ran."""
    path = shutil.which(name)
    if path is not None:
        return path
    if os.environ.get("CI", "").lower() in {"true", "1"}:
        pytest.fail(f"{name} is not installed (make system-deps installs it)")
    pytest.skip(f"{name} is not installed")


def verify_unit(unit: Path, manpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify` on a unit file. It prints what it ignores (an unknown key, a
    key in the wrong section) but may still exit 0, so callers check the output too. With
    manpath, the man: pages of Documentation= must be found there."""
    tool = require_tool("systemd-analyze")
    env = {**os.environ, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_PAGER": ""}
    args = [tool, "verify", str(unit)]
    if manpath is None:
        args.insert(2, "--man=no")
    else:
        env["MANPATH"] = str(manpath)
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False, env=env)


def test_unit_file_verifies(tmp_path: Path) -> None:
    # verify checks that ExecStart's program and the man page exist: point the unit at a
    # stand-in for the installed program, and do not look for the man page (tests/test_deb.py
    # verifies the packaged unit with the packaged program and man page).
    exe = tmp_path / "consolegw"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    text = UNIT.read_text(encoding="utf-8")
    assert INSTALLED_EXE in text
    unit = tmp_path / "consolegw.service"
    unit.write_text(text.replace(INSTALLED_EXE, str(exe)), encoding="utf-8")
    result = verify_unit(unit)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_unit_never_stops_restarting() -> None:
    # systemd only reads StartLimitIntervalSec= in [Unit]: in [Service] it is ignored and
    # systemd gives up after 5 failed starts in 10 s, leaving a crashed daemon's CM108 keyed.
    section = ""
    found: list[tuple[str, str]] = []
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if line.startswith("["):
            section = line
        elif line.split("=", 1)[0].strip() == "StartLimitIntervalSec":
            found.append((section, line.split("=", 1)[1].strip()))
    assert found == [("[Unit]", "0")]


def test_ready_watchdog_and_stopping(
    tmp_path: Path, broker: Broker, daemon_factory: Callable[..., Daemon]
) -> None:
    path = f"/tmp/cgw-notify-{uuid.uuid4().hex[:8]}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    got: list[str] = []

    def drain() -> list[str]:
        while True:
            try:
                got.append(sock.recv(4096).decode())
            except TimeoutError:
                return got

    try:
        daemon = daemon_factory(
            f'[gateway]\nid = "notify"\nstate_dir = "{tmp_path}/s"\n[mqtt]\nurl = "{broker.url}"\n'
            # A channel with no hardware: a config with nothing to run is refused.
            '[channels.c1]\nname = "c1"\n',
            env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"},
        )
        daemon.start()
        assert daemon.proc is not None
        wait_for(lambda: any(m.startswith("READY=1") for m in drain()), what="READY=1")
        wait_for(lambda: drain().count("WATCHDOG=1") >= 2, what="watchdog pings every 0.5 s")
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0
        assert "STOPPING=1" in drain()
        assert "STATUS=" in next(m for m in got if m.startswith("READY=1"))
    finally:
        sock.close()
        Path(path).unlink(missing_ok=True)
