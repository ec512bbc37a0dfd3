"""Shared fixtures. Every broker here is a real mosquitto of the test session's own."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hw_sim.console import SimConsole
from hw_sim.serial_radio import SimulatedSerialRadio
from tests.contract import check_messages
from tests.mqtt_tools import Broker, Daemon, Subscriber
from tests.sim_tools import ConsoleUnderTest, start_config, start_console


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    instance = Broker(tmp_path_factory.mktemp("mosquitto"))
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture
def subscriber_factory(broker: Broker) -> Iterator[Callable[..., Subscriber]]:
    made: list[Subscriber] = []

    def make(topics: list[str] | None = None, **kwargs: Any) -> Subscriber:
        sub = Subscriber(broker.host, broker.port, topics or ["consolegw/#"], **kwargs)
        made.append(sub)
        return sub

    yield make
    for sub in made:
        # Every message the daemon published in the test must match the AsyncAPI document.
        check_messages(sub.snapshot())
        sub.close()


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    made: list[Daemon] = []

    def make(config_text: str, name: str = "gateway", env: dict[str, str] | None = None) -> Daemon:
        path = tmp_path / f"{name}.toml"
        path.write_text(config_text)
        daemon = Daemon(path, env=env)
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        daemon.stop()


@pytest.fixture
def start_sim_console(
    tmp_path: Path,
    daemon_factory: Callable[..., Daemon],
    subscriber_factory: Callable[..., Subscriber],
) -> Iterator[Callable[..., ConsoleUnderTest]]:
    """Start a console (simulated devices in-process, the daemon as a subprocess) from a
    config text; every console started is stopped after the test."""
    stops: list[Callable[[], None]] = []

    def make(
        gid: str, text: str, before_daemon: Callable[[SimConsole], None] | None = None
    ) -> ConsoleUnderTest:
        cut, stop = start_config(
            tmp_path, gid, text, daemon_factory, subscriber_factory, before_daemon=before_daemon
        )
        stops.append(stop)
        return cut

    yield make
    for stop in stops:
        stop()


@pytest.fixture
def console_factory(
    tmp_path: Path,
    broker: Broker,
    daemon_factory: Callable[..., Daemon],
    subscriber_factory: Callable[..., Subscriber],
) -> Iterator[Callable[..., ConsoleUnderTest]]:
    """The three-channel test console (two serial radios, a CM108); keyword arguments add
    config lines to a channel's table, e.g. fire="tx_timeout_s = 2"."""
    stops: list[Callable[[], None]] = []

    def make(**channels: str) -> ConsoleUnderTest:
        cut, stop = start_console(tmp_path, broker, daemon_factory, subscriber_factory, **channels)
        stops.append(stop)
        return cut

    yield make
    for daemon_stop in stops:
        daemon_stop()


@pytest.fixture
def make_sim() -> Iterator[Callable[..., SimulatedSerialRadio]]:
    """Simulated RFC 2217 radios (keyword arguments as SimulatedSerialRadio's), started now
    and stopped after the test."""
    sims: list[SimulatedSerialRadio] = []

    def make(**kwargs: Any) -> SimulatedSerialRadio:
        sim = SimulatedSerialRadio(**kwargs)
        sim.start()
        sims.append(sim)
        return sim

    yield make
    for sim in sims:
        sim.stop()
