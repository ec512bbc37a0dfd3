"""A console under test: simulated devices in-process, the real daemon as a subprocess."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config import load_config
from hw_sim.console import Cm108SimRadio, SerialSimRadio, SimConsole
from tests.mqtt_tools import Broker, Daemon, Subscriber, free_port


@dataclass
class ConsoleUnderTest:
    gid: str
    console: SimConsole
    daemon: Daemon
    sub: Subscriber
    config_text: str

    @property
    def prefix(self) -> str:
        return f"consolegw/{self.gid}"

    def serial(self, channel: str) -> SerialSimRadio:
        radio = self.console.radios[channel]
        assert isinstance(radio, SerialSimRadio)
        return radio

    def usb(self, channel: str) -> Cm108SimRadio:
        radio = self.console.radios[channel]
        assert isinstance(radio, Cm108SimRadio)
        return radio

    def ptt(self, channel: str, state: str, **extra: Any) -> dict[str, Any]:
        return self.sub.request(
            f"{self.prefix}/channels/{channel}/request/ptt", {"state": state, **extra}
        )

    def channel_state(self, channel: str) -> dict[str, Any]:
        state = self.channel_state_of(channel)
        assert state is not None, f"no state for {channel} yet"
        return state

    def channel_state_of(self, target: str, scope: str = "channels") -> dict[str, Any] | None:
        """The latest retained state of a channel (or alarm, module), None before any."""
        found = self.sub.on(f"/{scope}/{target}/state")
        state: dict[str, Any] | None = found[-1].json() if found else None
        return state

    def wait_state(
        self, channel: str, timeout: float = 10.0, *, scope: str = "channels", **want: Any
    ) -> dict[str, Any]:
        def match() -> dict[str, Any] | None:
            for message in reversed(self.sub.on(f"/{scope}/{channel}/state")):
                state: dict[str, Any] = message.json()
                return state if all(state.get(k) == v for k, v in want.items()) else None
            return None

        state: dict[str, Any] = self.sub.wait(
            lambda _: match(), timeout, f"{scope}/{channel} state {want}"
        )
        return state

    def wait_online(self, timeout: float = 10.0) -> None:
        for channel in self.console.radios:
            self.wait_state(channel, timeout, device="online")


def config_header(tmp_path: Path, broker: Broker, gid: str) -> str:
    """The [gateway], [mqtt] and [outbox] tables every test console shares."""
    return f"""
[gateway]
id = "{gid}"
state_dir = "{tmp_path}/state-{gid}"
log_level = "debug"

[mqtt]
url = "{broker.url}"

[outbox]
fsync = false
"""


def audio_card_config(tmp_path: Path, broker: Broker, tag: str, channels: str) -> tuple[str, str]:
    """(gateway id, config): a new gateway with a two-column simulated sound card `card`
    (its ALSA name unique to the gateway, `tag` telling the tests apart) and `channels`."""
    gid = "gw" + uuid.uuid4().hex[:8]
    card = f"""
[audio.devices.card]
device = "consolegw_sim_{tag}{gid[2:8]}"
channels = 2
"""
    return gid, config_header(tmp_path, broker, gid) + card + channels


def channel_config(
    tmp_path: Path, broker: Broker, *, fire: str = "", ems: str = "", police: str = ""
) -> tuple[str, str]:
    """Three channels: two serial radios over RFC 2217, one CM108 over the USB simulator."""
    gid = "gw" + uuid.uuid4().hex[:8]
    usb_port = free_port()
    text = (
        config_header(tmp_path, broker, gid)
        + f"""
[channels.fire]
name = "Fire"
{fire}

[channels.fire.radio]
kind = "serial"
url = "rfc2217://127.0.0.1:{free_port()}"
ptt = ["rts"]
cos = "cts"

[channels.ems]
name = "EMS"
{ems}

[channels.ems.radio]
kind = "serial"
url = "rfc2217://127.0.0.1:{free_port()}"
ptt = ["dtr"]
cos = "cd"

[channels.police]
name = "Police"
{police}

[channels.police.radio]
kind = "cm108"
serial = "SIM-{gid}"
usb_backend = "sim://127.0.0.1:{usb_port}"
"""
    )
    return gid, text


def start_console(
    tmp_path: Path,
    broker: Broker,
    daemon_factory: Callable[..., Daemon],
    subscriber_factory: Callable[..., Subscriber],
    **channels: str,
) -> tuple[ConsoleUnderTest, Callable[[], None]]:
    gid, text = channel_config(tmp_path, broker, **channels)
    return start_config(tmp_path, gid, text, daemon_factory, subscriber_factory)


def start_config(
    tmp_path: Path,
    gid: str,
    text: str,
    daemon_factory: Callable[..., Daemon],
    subscriber_factory: Callable[..., Subscriber],
    *,
    before_daemon: Callable[[SimConsole], None] | None = None,
    online_timeout: float = 10.0,
) -> tuple[ConsoleUnderTest, Callable[[], None]]:
    """Serve a config's devices in-process, start the daemon on it, subscribe to it."""
    path = tmp_path / f"sim-{gid}.toml"
    path.write_text(text)
    console = SimConsole(load_config(path))
    console.start()
    if before_daemon is not None:
        before_daemon(console)
    sub = subscriber_factory([f"consolegw/{gid}/#"])
    daemon = daemon_factory(text, name=gid, env=console.env)
    daemon.start()
    cut = ConsoleUnderTest(gid, console, daemon, sub, text)
    cut.wait_online(online_timeout)
    return cut, console.stop
