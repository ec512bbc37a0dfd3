"""A console for the tools' tests: the three radios of tests.sim_tools plus an IO module."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gateway.recorder.store import Direction, RecordingStore
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


SR = 8000
"""The recordings' sample rate in the tools' tests."""


def record_tone(
    store: RecordingStore,
    channel: str,
    start: float,
    seconds: float,
    *,
    direction: Direction = "rx",
    requested_by: str | None = None,
    **note: str,
) -> None:
    """A record of a 600 Hz tone, as the recorder's store writes one."""
    t = np.arange(int(seconds * SR)) / SR
    pcm = (0.3 * 32767 * np.sin(2 * np.pi * 600 * t)).astype(np.int16)
    h = store.begin(
        channel=channel,
        direction=direction,
        start=start,
        samplerate=SR,
        requested_by=requested_by,
    )
    store.audio(h, pcm, SR)
    if note:
        store.note(h, **note)
    store.end(h, start + seconds)
