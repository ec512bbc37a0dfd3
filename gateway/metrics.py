"""Prometheus metrics for the daemon (off by default: `[metrics] enabled = true`).

Fed by the publisher's listeners, so the numbers are exactly what the daemon publishes on
MQTT: every event counts (PTT, COS, faults, alarms) and every retained state (channel, alarm,
module, audio level) sets gauges. A custom collector renders them at scrape time in a
registry of our own (never the process-global one), served by prometheus_client's HTTP server
in its own thread. Listeners run on the event loop and scrapes on the server thread: one lock
guards the tables, and a scrape copies them before rendering.

Module poll counters are read from the module monitors at scrape time: the module's retained
state is republished only when it changes, so its counts would go stale between changes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gateway.alarms import ModuleMonitor
from gateway.config import Config
from gateway.events import Event, Payload
from gateway.outbox import Outbox
from gateway.publisher import Publisher

log = logging.getLogger(__name__)

ALARM_STATES = ("normal", "active", "trouble", "unknown")


class _Link(Protocol):
    @property
    def connected(self) -> bool: ...


class MetricsSource(Protocol):
    """What metrics read of the daemon (gateway.app.Gateway is one); no import of the app."""

    @property
    def config(self) -> Config: ...
    @property
    def version(self) -> str: ...
    @property
    def publisher(self) -> Publisher: ...
    @property
    def outbox(self) -> Outbox: ...
    @property
    def link(self) -> _Link: ...
    @property
    def channels(self) -> Collection[str]: ...
    @property
    def modules(self) -> Mapping[str, ModuleMonitor]: ...


class GatewayCollector:
    """Keeps the latest state per channel/alarm/module and event counts; renders on scrape."""

    def __init__(self, *, gateway: MetricsSource) -> None:
        self._gateway = gateway
        self._prefix = gateway.config.prefix + "/"
        self._lock = threading.Lock()
        self._channels: dict[str, dict[str, Any]] = {}
        self._audio: dict[str, float] = {}
        self._alarms: dict[str, dict[str, Any]] = {}
        self._modules: dict[str, dict[str, Any]] = {}
        self._events: Counter[str] = Counter()
        self._ptt_on: Counter[str] = Counter()
        self._cos_on: Counter[str] = Counter()
        self._faults_raised: Counter[tuple[str, str]] = Counter()
        self._alarms_raised: Counter[str] = Counter()
        for channel_id in gateway.channels:
            self._ptt_on[channel_id] = 0  # present from the first scrape, at zero
            self._cos_on[channel_id] = 0

    # -- feeding (event loop thread) -------------------------------------------------------

    def on_event(self, event: Event) -> None:
        with self._lock:
            self._events[event.type] += 1
            if event.source == "channel":
                if event.type == "ptt.on":
                    self._ptt_on[event.source_id] += 1
                elif event.type == "cos.on":
                    self._cos_on[event.source_id] += 1
                elif event.type == "fault.raised":
                    fault = str(event.data.get("fault", "unknown"))
                    self._faults_raised[(event.source_id, fault)] += 1
            elif event.type == "alarm.raised":
                self._alarms_raised[event.source_id] += 1

    def on_state(self, topic: str, payload: Payload) -> None:
        self._take(topic, payload.model_dump(mode="json"))

    def seed(self, retained: dict[str, bytes]) -> None:
        """The states published before we started listening."""
        for topic, raw in retained.items():
            try:
                body = json.loads(raw)
            except ValueError:
                continue
            if isinstance(body, dict):
                self._take(topic, body)

    def _take(self, topic: str, body: dict[str, Any]) -> None:
        if not topic.startswith(self._prefix):
            return
        parts = topic[len(self._prefix) :].split("/")
        if len(parts) != 3:
            return
        scope, key, leaf = parts
        with self._lock:
            if (scope, leaf) == ("channels", "state"):
                self._channels[key] = body
            elif (scope, leaf) == ("channels", "audio"):
                level = body.get("rms_dbfs")
                if isinstance(level, int | float):
                    self._audio[key] = float(level)
                else:
                    self._audio.pop(key, None)
            elif (scope, leaf) == ("alarms", "state"):
                self._alarms[key] = body
            elif (scope, leaf) == ("modules", "state"):
                self._modules[key] = body

    # -- rendering (HTTP server thread) ----------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            channels = dict(self._channels)
            audio = dict(self._audio)
            alarms = dict(self._alarms)
            modules = dict(self._modules)
            events = dict(self._events)
            ptt_on = dict(self._ptt_on)
            cos_on = dict(self._cos_on)
            faults_raised = dict(self._faults_raised)
            alarms_raised = dict(self._alarms_raised)
        yield from self._gateway_metrics(events)
        yield from _channel_metrics(channels, audio, ptt_on, cos_on, faults_raised)
        yield from _alarm_metrics(alarms, alarms_raised)
        yield from self._module_metrics(modules)

    def _gateway_metrics(self, events: dict[str, int]) -> Iterator[Metric]:
        gw = self._gateway
        info = GaugeMetricFamily(
            "consolegw_info", "Gateway id and version", labels=["gateway", "version"]
        )
        info.add_metric([gw.config.gateway.id, gw.version], 1)
        yield info
        yield GaugeMetricFamily(
            "consolegw_mqtt_connected",
            "1 while connected to the MQTT broker",
            value=1 if gw.link.connected else 0,
        )
        yield GaugeMetricFamily(
            "consolegw_outbox_depth",
            "Events committed but not yet acknowledged by the broker",
            value=gw.outbox.depth,
        )
        yield GaugeMetricFamily(
            "consolegw_outbox_full", "1 while the outbox is full", value=int(gw.outbox.full)
        )
        yield GaugeMetricFamily(
            "consolegw_outbox_dropped",
            "Non-alarm events dropped because the outbox was full",
            value=gw.outbox.dropped,
        )
        published = CounterMetricFamily(
            "consolegw_events", "Events emitted (queued for MQTT), by type", labels=["type"]
        )
        for kind, count in sorted(events.items()):
            published.add_metric([kind], count)
        yield published

    def _module_metrics(self, modules: dict[str, dict[str, Any]]) -> Iterator[Metric]:
        online = GaugeMetricFamily(
            "consolegw_module_online", "1 while the IO module answers", labels=["module"]
        )
        polls = CounterMetricFamily("consolegw_module_polls", "Polls made", labels=["module"])
        failed = CounterMetricFamily(
            "consolegw_module_failed_polls", "Polls without a valid answer", labels=["module"]
        )
        for module_id, monitor in sorted(self._gateway.modules.items()):
            body = modules.get(module_id)
            try:
                live = monitor.snapshot()  # plain attribute reads; counts are current
                state, count, failures = live.state, live.polls, live.failed_polls
            except Exception:  # never let a scrape fail on a module
                state = body.get("state", "starting") if body else "starting"
                count = int(body.get("polls", 0)) if body else 0
                failures = int(body.get("failed_polls", 0)) if body else 0
            online.add_metric([module_id], 1 if state == "online" else 0)
            polls.add_metric([module_id], count)
            failed.add_metric([module_id], failures)
        yield online
        yield polls
        yield failed


def _channel_metrics(
    channels: dict[str, dict[str, Any]],
    audio: dict[str, float],
    ptt_on: dict[str, int],
    cos_on: dict[str, int],
    faults_raised: dict[tuple[str, str], int],
) -> Iterator[Metric]:
    labels = ["channel"]
    ptt = GaugeMetricFamily("consolegw_channel_ptt", "1 while keyed (read back)", labels=labels)
    cos = GaugeMetricFamily("consolegw_channel_cos", "1 while carrier is present", labels=labels)
    device = GaugeMetricFamily(
        "consolegw_channel_device_online", "1 while the radio interface is open", labels=labels
    )
    faults = GaugeMetricFamily(
        "consolegw_channel_faults", "Faults active on the channel", labels=labels
    )
    fault_active = GaugeMetricFamily(
        "consolegw_channel_fault_active", "1 per active fault", labels=["channel", "fault"]
    )
    for channel_id, body in sorted(channels.items()):
        ptt.add_metric([channel_id], 1 if body.get("ptt") else 0)
        cos.add_metric([channel_id], 1 if body.get("cos") else 0)
        device.add_metric([channel_id], 1 if body.get("device") == "online" else 0)
        active = [str(f) for f in body.get("faults") or []]
        faults.add_metric([channel_id], len(active))
        for fault in active:
            fault_active.add_metric([channel_id, fault], 1)
    yield from (ptt, cos, device, faults, fault_active)
    level = GaugeMetricFamily(
        "consolegw_channel_audio_rms_dbfs", "Receive audio RMS level, dBFS", labels=labels
    )
    for channel_id, value in sorted(audio.items()):
        level.add_metric([channel_id], value)
    yield level
    ptt_count = CounterMetricFamily("consolegw_channel_ptt_on", "Times keyed", labels=labels)
    for channel_id, count in sorted(ptt_on.items()):
        ptt_count.add_metric([channel_id], count)
    yield ptt_count
    cos_count = CounterMetricFamily("consolegw_channel_cos_on", "Carrier onsets", labels=labels)
    for channel_id, count in sorted(cos_on.items()):
        cos_count.add_metric([channel_id], count)
    yield cos_count
    raised = CounterMetricFamily(
        "consolegw_channel_faults_raised", "Faults raised, by code", labels=["channel", "fault"]
    )
    for (channel_id, fault), count in sorted(faults_raised.items()):
        raised.add_metric([channel_id, fault], count)
    yield raised


def _alarm_metrics(
    alarms: dict[str, dict[str, Any]], alarms_raised: dict[str, int]
) -> Iterator[Metric]:
    state = GaugeMetricFamily(
        "consolegw_alarm_state",
        "1 for the alarm's current state (normal, active, trouble, unknown), 0 for the others",
        labels=["alarm", "state"],
    )
    acknowledged = GaugeMetricFamily(
        "consolegw_alarm_acknowledged", "1 while an active alarm is acknowledged", labels=["alarm"]
    )
    for alarm_id, body in sorted(alarms.items()):
        current = body.get("state")
        for name in ALARM_STATES:
            state.add_metric([alarm_id, name], 1 if current == name else 0)
        acknowledged.add_metric([alarm_id], 1 if body.get("acknowledged") else 0)
    yield state
    yield acknowledged
    raised = CounterMetricFamily("consolegw_alarm_raised", "Alarms raised", labels=["alarm"])
    for alarm_id, count in sorted(alarms_raised.items()):
        raised.add_metric([alarm_id], count)
    yield raised


def start_metrics(gateway: MetricsSource) -> Callable[[], None]:
    """Serve /metrics on config.metrics.host:port; returns the function that stops it.

    A port that cannot be bound is logged and otherwise ignored: metrics must never keep the
    daemon (and the radios) from running.
    """
    section = gateway.config.metrics
    collector = GatewayCollector(gateway=gateway)
    publisher = gateway.publisher
    collector.seed(publisher.retained_snapshot())
    registry = CollectorRegistry()
    registry.register(collector)
    try:
        server, thread = start_http_server(section.port, section.host, registry=registry)
    except OSError as exc:
        log.error("metrics: cannot serve on %s:%d: %s", section.host, section.port, exc)
        return lambda: None
    publisher.event_listeners.append(collector.on_event)
    publisher.state_listeners.append(collector.on_state)
    log.info("metrics: serving http://%s:%d/metrics", section.host, section.port)

    def stop() -> None:
        with contextlib.suppress(ValueError):
            publisher.event_listeners.remove(collector.on_event)
        with contextlib.suppress(ValueError):
            publisher.state_listeners.remove(collector.on_state)
        server.shutdown()
        server.server_close()
        thread.join(timeout=2.0)

    return stop
