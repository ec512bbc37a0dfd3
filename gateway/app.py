"""The daemon: wires config, outbox, MQTT link, command router and device monitors together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version

from pydantic import Field

from gateway.alarms import Alarms, ModuleMonitor
from gateway.audio import Audio
from gateway.channel import ChannelMonitor, Radios
from gateway.commands import CommandRouter, Request, RequestContext, StatusRequest
from gateway.config import Config
from gateway.errors import ConsoleGwError
from gateway.events import (
    GatewayStartedData,
    GatewayState,
    OutboxData,
    Payload,
    UncleanStopData,
    utc_timestamp,
)
from gateway.memory import JsonMemory
from gateway.mqtt import MqttLink
from gateway.outbox import Outbox
from gateway.publisher import Publisher
from gateway.recorder import Recorder
from gateway.request_boundary import RequestLimits
from gateway.sdnotify import SystemdNotifier
from gateway.signalling import Signalling
from gateway.startup import START_WINDOW_S, StartupSummary
from gateway.subsystem import Builder, Subsystem, SubsystemContext
from gateway.supervisor import Supervisor
from gateway.tty import Tty

log = logging.getLogger(__name__)

SUBSYSTEMS: tuple[Builder, ...] = (
    Radios.build,
    Audio.build,
    Tty.build,
    Signalling.build,
    Recorder.build,
    Alarms.build,
)
"""Every subsystem, in build order (each may use those before it); closed in reverse.
A new subsystem is one module and one entry here."""


def package_version() -> str:
    try:
        return version("consolegw")
    except PackageNotFoundError:
        return "0+unknown"


class RebirthRequest(Request):
    pass


class RebirthResponse(Payload):
    """`data` of the answer to `rebirth`."""

    topics: int = Field(description="How many retained state topics will be republished")


class Gateway:
    """One daemon instance. `await run()` until `request_stop()`."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.version = package_version()
        self.started = utc_timestamp()
        self._stop = asyncio.Event()
        self.outbox = Outbox(
            path=config.gateway.state_dir / "outbox.sqlite3",
            max_events=config.outbox.max_events,
            fsync=config.outbox.fsync,
        )
        self.publisher = Publisher(
            prefix=config.prefix, gateway_id=config.gateway.id, outbox=self.outbox
        )
        self.router = CommandRouter(
            prefix=config.prefix,
            gateway_id=config.gateway.id,
            limits=RequestLimits(
                max_bytes=config.mqtt.max_request_bytes, max_depth=config.mqtt.max_request_depth
            ),
        )
        self.link = MqttLink(
            mqtt=config.mqtt,
            publisher=self.publisher,
            router=self.router,
            version=self.version,
            in_flight=config.outbox.in_flight,
            client_id=config.mqtt.client_id or f"consolegw-{config.gateway.id}",
        )
        self.supervisor = Supervisor()
        self.notifier = SystemdNotifier()
        state_dir = config.gateway.state_dir
        # Read before anything writes them: what the last run left behind.
        self._run_marker = JsonMemory(state_dir / "running.json", fsync=True)
        self.ptt_journal = JsonMemory(state_dir / "ptt-keyed.json", fsync=False)
        context = SubsystemContext(
            config=config,
            publisher=self.publisher,
            state_dir=state_dir,
            ptt_journal=self.ptt_journal,
        )
        for build in SUBSYSTEMS:
            context.built.append(build(context))
        self.subsystems: list[Subsystem] = list(context.built)
        self.channels: dict[str, ChannelMonitor] = context.get(Radios).channels
        self.modules: dict[str, ModuleMonitor] = context.get(Alarms).modules
        self._register_commands()

    def request_stop(self) -> None:
        self._stop.set()

    def _register_commands(self) -> None:
        self.router.register(
            "gateway",
            "rebirth",
            RebirthRequest,
            self._rebirth,
            response=RebirthResponse,
            description="Republish every retained state topic.",
        )
        self.router.register(
            "gateway",
            "status",
            StatusRequest,
            self._status,
            response=GatewayState,
            description="The gateway's health: version, session, outbox, channels.",
        )
        for subsystem in self.subsystems:
            subsystem.register(self.router)

    async def _rebirth(self, params: RebirthRequest, ctx: RequestContext) -> RebirthResponse:
        self._publish_gateway_state()
        self.publisher.mark_all_dirty()
        return RebirthResponse(topics=len(self.publisher.retained_snapshot()))

    async def _status(self, params: StatusRequest, ctx: RequestContext) -> GatewayState:
        return self._gateway_state()

    def _gateway_state(self) -> GatewayState:
        return GatewayState(
            gateway=self.config.gateway.id,
            version=self.version,
            session=self.link.session,
            outbox_depth=self.outbox.depth,
            outbox_full=self.outbox.full,
            outbox_dropped=self.outbox.dropped,
            channels=sorted(self.channels),
            standby=self.config.gateway.standby,
            started=self.started,
            ts=utc_timestamp(),
        )

    def _publish_gateway_state(self) -> None:
        self.publisher.set_state(f"{self.config.prefix}/state", self._gateway_state())

    def _on_outbox_full(self, full: bool) -> None:
        data = OutboxData(
            depth=self.outbox.depth,
            max_events=self.outbox.max_events,
            dropped=self.outbox.dropped,
        )
        self.publisher.emit(
            "gateway",
            self.config.gateway.id,
            "outbox.full" if full else "outbox.ok",
            data,
            keep=True,
        )
        self._publish_gateway_state()

    async def _watch_health(self) -> None:
        # The watchdog ping proves the event loop runs; the gateway state follows the outbox.
        interval = self.notifier.watchdog_interval()
        last_depth = -1
        while True:
            if interval is not None:
                self.notifier.watchdog()
            depth = self.outbox.depth
            if (depth == 0) != (last_depth == 0) or abs(depth - last_depth) >= 100:
                last_depth = depth
                self._publish_gateway_state()
            await asyncio.sleep(min(interval or 1.0, 1.0))

    async def run(self) -> None:
        stop_metrics: Callable[[], None] = lambda: None  # noqa: E731
        # Each device's first open goes into one line (gateway/startup.py).
        startup = StartupSummary([d for s in self.subsystems for d in s.startup_devices()], log)
        window: asyncio.TimerHandle | None = None
        try:
            self.outbox.open()
        except (OSError, sqlite3.Error) as exc:
            raise ConsoleGwError(
                f"cannot open the outbox in {self.config.gateway.state_dir} "
                f"(gateway.state_dir): {exc}"
            ) from None
        self.outbox.on_full_change = self._on_outbox_full
        self.link.on_connected = self._publish_gateway_state
        try:
            self._note_unclean_stop()
            self.publisher.emit(
                "gateway",
                self.config.gateway.id,
                "gateway.started",
                GatewayStartedData(version=self.version, outbox_depth=self.outbox.depth),
            )
            self._publish_gateway_state()
            for subsystem in self.subsystems:
                subsystem.publish_states()
            startup.install()
            window = asyncio.get_running_loop().call_later(START_WINDOW_S, startup.finish)
            link_task = asyncio.create_task(self.link.run(), name="mqtt")
            self.supervisor.start("health", self._watch_health)
            for subsystem in self.subsystems:
                for task_name, task in subsystem.tasks().items():
                    self.supervisor.start(task_name, task)
            summary = ", ".join(part for s in self.subsystems for part in s.summary())
            stop_metrics = self._start_metrics()
            self.notifier.ready(summary)
            log.info(
                "consolegw %s running: gateway %s, %s, MQTT prefix %s",
                self.version,
                self.config.gateway.id,
                summary,
                self.config.prefix,
            )
            stop_task = asyncio.create_task(self._stop.wait())
            done, _ = await asyncio.wait(
                {link_task, stop_task}, return_when=asyncio.FIRST_COMPLETED
            )
            link_failed = link_task in done
            if link_failed:
                # The link only ends on a bug; keep the hardware safe and let systemd restart us.
                log.error("MQTT link ended unexpectedly: %r", link_task.exception())
            await self._shutdown(link_task)
            self._run_marker.set("run", None)  # every PTT released: a clean stop
            if link_failed:
                raise ConsoleGwError("the MQTT link failed; stopped with every PTT released")
        finally:
            if window is not None:
                window.cancel()
            startup.finish()
            startup.uninstall()
            stop_metrics()
            self.outbox.close()

    def _note_unclean_stop(self) -> None:
        """A run marker left behind means the last run died (kill -9, crash, power cut)."""
        previous = self._run_marker.get("run")
        left = sorted(channel for channel, _ in self.ptt_journal.items())
        if isinstance(previous, dict) or left:
            info = previous if isinstance(previous, dict) else {}
            pid, started = info.get("pid"), info.get("started")
            log.warning(
                "the last run (pid %s, started %s) did not stop cleanly; left keyed: %s",
                pid,
                started,
                f"{', '.join(left)} (each unkeyed as its radio opens)" if left else "nothing",
            )
            data = UncleanStopData(
                previous_session=self.outbox.session,
                last_seq=self.outbox.last_seq,
                previous_pid=pid if isinstance(pid, int) else None,
                previous_start=started if isinstance(started, str) else None,
                left_keyed=left,
            )
            self.publisher.emit(
                "gateway", self.config.gateway.id, "gateway.unclean_stop", data, keep=True
            )
        for channel in left:
            if channel not in self.channels:
                log.error(
                    "the last run left channel %s keyed, and it is no longer configured: "
                    "check that radio by hand",
                    channel,
                )
                self.ptt_journal.set(channel, None)
        self._run_marker.set("run", {"pid": os.getpid(), "started": utc_timestamp()})

    def _start_metrics(self) -> Callable[[], None]:
        if not self.config.metrics.enabled:
            return lambda: None
        from gateway.metrics import start_metrics

        return start_metrics(self)

    async def _shutdown(self, link_task: asyncio.Task[None]) -> None:
        log.info("stopping: releasing every PTT first")
        self.notifier.stopping()
        # Every PTT released (Radios.make_safe) before any task stops or anything closes.
        await asyncio.gather(
            *(subsystem.make_safe() for subsystem in self.subsystems), return_exceptions=True
        )
        await self.supervisor.stop()
        for subsystem in reversed(self.subsystems):
            try:
                await subsystem.close()
            except Exception:
                log.exception("stopping: closing %s failed", subsystem.name)
        self.link.stop()
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(link_task, timeout=5.0)
        log.info("stopped")
