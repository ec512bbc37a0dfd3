"""systemd integration: sd_notify READY/WATCHDOG/STOPPING over a real datagram socket."""

from __future__ import annotations

import signal
import socket
import uuid
from pathlib import Path

from tests.mqtt_tools import Broker, wait_for


def test_ready_watchdog_and_stopping(tmp_path: Path, broker: Broker, daemon_factory) -> None:
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
            f'[gateway]\nid = "notify"\nstate_dir = "{tmp_path}/s"\n[mqtt]\nurl = "{broker.url}"\n',
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
