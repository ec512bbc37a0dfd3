"""Prometheus metrics scraped over HTTP from the real daemon on simulated hardware."""

from __future__ import annotations

import logging
import socket
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import Gateway
from gateway.config import parse_config
from gateway.metrics import start_metrics
from tests.mqtt_tools import Broker, Daemon, Subscriber, free_port, wait_for
from tests.sim_tools import ConsoleUnderTest, start_config
from tests.tools.helpers import tools_config


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample, keyed by (name, sorted labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(port: int, name: str, **labels: str) -> float | None:
    try:
        return scrape(port).get((name, tuple(sorted(labels.items()))))
    except OSError:
        return None  # not serving yet


@pytest.fixture
def console(
    tmp_path: Path,
    broker: Broker,
    daemon_factory: Callable[..., Daemon],
    subscriber_factory: Callable[..., Subscriber],
) -> Iterator[tuple[ConsoleUnderTest, int]]:
    port = free_port()
    gid, text = tools_config(tmp_path, broker, extra=f"[metrics]\nenabled = true\nport = {port}")
    cut, stop = start_config(tmp_path, gid, text, daemon_factory, subscriber_factory)
    yield cut, port
    stop()


def test_metrics_follow_the_console(console: tuple[ConsoleUnderTest, int]) -> None:
    cut, port = console

    def wait(name: str, want: float, **labels: str) -> None:
        wait_for(lambda: value(port, name, **labels) == want, 15, f"{name}{labels} == {want}")

    wait("consolegw_mqtt_connected", 1)
    for channel in ("fire", "ems", "police"):
        wait("consolegw_channel_device_online", 1, channel=channel)
        wait("consolegw_channel_ptt", 0, channel=channel)
        wait("consolegw_channel_ptt_on_total", 0, channel=channel)
    wait("consolegw_module_online", 1, module="io1")
    polls = value(port, "consolegw_module_polls_total", module="io1")
    assert polls is not None and polls > 0
    wait("consolegw_alarm_state", 1, alarm="door", state="normal")
    samples = scrape(port)
    info = [k for k in samples if k[0] == "consolegw_info"]
    assert info and dict(info[0][1])["gateway"] == cut.gid

    assert cut.ptt("fire", "on", duration_s=5)["status"] == "ok"
    wait("consolegw_channel_ptt", 1, channel="fire")
    wait("consolegw_channel_ptt_on_total", 1, channel="fire")
    assert value(port, "consolegw_events_total", type="ptt.on") == 1
    assert cut.ptt("fire", "off")["status"] == "ok"
    wait("consolegw_channel_ptt", 0, channel="fire")

    cut.serial("ems").carrier(True)
    wait("consolegw_channel_cos", 1, channel="ems")
    wait("consolegw_channel_cos_on_total", 1, channel="ems")

    cut.console.set_alarm_input("door", True)
    wait("consolegw_alarm_state", 1, alarm="door", state="active")
    assert value(port, "consolegw_alarm_state", alarm="door", state="normal") == 0
    wait("consolegw_alarm_raised_total", 1, alarm="door")

    cut.usb("police").unplug()
    wait("consolegw_channel_device_online", 0, channel="police")
    wait("consolegw_channel_fault_active", 1, channel="police", fault="device_lost")
    wait("consolegw_channel_faults", 1, channel="police")
    wait("consolegw_channel_faults_raised_total", 1, channel="police", fault="device_lost")

    cut.console.modules["io1"].set_silent(True)
    wait("consolegw_module_online", 0, module="io1")
    failed = value(port, "consolegw_module_failed_polls_total", module="io1")
    assert failed is not None and failed >= 1
    assert value(port, "consolegw_outbox_depth") is not None


def test_metrics_never_stop_the_daemon(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A port already taken is logged, and the daemon carries on without metrics."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        data = {
            "gateway": {"id": "gw-metrics", "state_dir": str(tmp_path)},
            "channels": {"spare": {}},
            "metrics": {"enabled": True, "port": port},
        }
        gateway = Gateway(parse_config(data, source=tmp_path / "x.toml"))
        # Other subsystems (the recorder) listen too: only the metrics' own must be gone.
        before = (list(gateway.publisher.event_listeners), list(gateway.publisher.state_listeners))
        with caplog.at_level(logging.ERROR, logger="gateway.metrics"):
            stop = start_metrics(gateway)
        stop()
    assert "cannot serve" in caplog.text
    after = (gateway.publisher.event_listeners, gateway.publisher.state_listeners)
    assert after == before
