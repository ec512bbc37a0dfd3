"""A console for the tools' tests: the three radios of tests.sim_tools plus an IO module."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.mqtt_tools import Broker, free_port
from tests.sim_tools import channel_config


def tools_config(tmp_path: Path, broker: Broker, *, extra: str = "") -> tuple[str, str]:
    """Channels fire (serial, RTS/CTS), ems (serial, DTR/CD), police (CM108), module io1
    (Modbus TCP) with alarm `door` on input 0. `extra` is appended (e.g. [metrics])."""
    gid, text = channel_config(tmp_path, broker)
    text += f"""
[modbus.links.bus]
host = "127.0.0.1"
port = {free_port()}
timeout_s = 0.25

[modbus.modules.io1]
link = "bus"
device_id = 1
preset = "e1210"
poll_ms = 50

[alarms.door]
module = "io1"
channel = 0
name = "Rear door"
debounce_ms = 0

{extra}
"""
    return gid, text


async def until(
    predicate: Callable[[], Any], *, within_s: float = 15.0, what: str = "condition"
) -> Any:
    """Await a condition without blocking the loop (the app under test runs on it)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within_s} s waiting for {what}")
        await asyncio.sleep(0.05)
