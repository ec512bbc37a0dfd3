"""The daemon on serial radios a test serves itself (a simulator in some mode, ser2net).

tests/sim_tools.py serves what a config names; here the test starts its own RFC 2217 peers
first and the config points at them, so any peer can stand behind a channel.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.mqtt_tools import Broker, Daemon, Subscriber, wait_for
from tests.sim_tools import config_header


@dataclass
class RadioGateway:
    gid: str
    daemon: Daemon
    sub: Subscriber

    @property
    def prefix(self) -> str:
        return f"consolegw/{self.gid}"

    def ptt(self, channel: str, state: str, **extra: Any) -> dict[str, Any]:
        return self.sub.request(
            f"{self.prefix}/channels/{channel}/request/ptt", {"state": state, **extra}
        )

    def states(self, channel: str) -> list[dict[str, Any]]:
        return [m.json() for m in self.sub.on(f"/channels/{channel}/state")]

    def wait_state(self, channel: str, timeout: float = 10.0, **want: Any) -> dict[str, Any]:
        def match() -> dict[str, Any] | None:
            states = self.states(channel)
            if states and all(states[-1].get(k) == v for k, v in want.items()):
                return states[-1]
            return None

        found: dict[str, Any] = wait_for(match, timeout, f"channels/{channel} state {want}")
        return found

    def events_of(self, channel: str, *types: str) -> list[dict[str, Any]]:
        return [e for e in self.sub.events() if e["source_id"] == channel and e["type"] in types]

    def faults_raised(self, channel: str, fault: str) -> list[dict[str, Any]]:
        return [e for e in self.events_of(channel, "fault.raised") if e["data"]["fault"] == fault]


def serial_channel(channel: str, url: str, *, cos: str = "cts", extra: str = "") -> str:
    """A [channels.<id>] table with an RFC 2217 radio: PTT on RTS, COS on `cos`."""
    return f"""
[channels.{channel}]
name = "{channel}"
{extra}

[channels.{channel}.radio]
kind = "serial"
url = "{url}"
ptt = ["rts"]
cos = "{cos}"
"""


def start_radio_gateway(
    tmp_path: Path,
    broker: Broker,
    daemon_factory: Callable[..., Daemon],
    subscriber_factory: Callable[..., Subscriber],
    channels: str,
) -> RadioGateway:
    """Run the daemon with `channels` (TOML tables); returns once it is online."""
    gid = "gw" + uuid.uuid4().hex[:8]
    text = config_header(tmp_path, broker, gid) + channels
    sub = subscriber_factory([f"consolegw/{gid}/#"])
    daemon = daemon_factory(text, name=gid)
    daemon.start()
    gateway = RadioGateway(gid, daemon, sub)
    sub.wait(
        lambda msgs: any(m.topic.endswith("/status") and b"online" in m.payload for m in msgs),
        20.0,
        "the gateway online",
    )
    return gateway
