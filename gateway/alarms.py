"""Alarm inputs from Modbus IO modules: debounced, latched, supervised, never silent.

Each module has one poll task. Each alarm input turns its point's value into a condition
(normal, alarm, trouble_open, trouble_short), debounces it, and publishes changes:

- alarm.raised when the condition becomes alarm; alarm.cleared when it ends. A latched alarm
  that restores sends alarm.restored and stays active until acknowledged (then cleared);
- trouble.raised / trouble.cleared for a supervised loop cut or shorted: a wiring problem,
  not an alarm, and never hidden behind one;
- module.offline after N failed polls in a row: every alarm on it shows "unknown", because
  an alarm we cannot read is not a normal one. On return the inputs are read again and only
  real differences are published, so a link blip is not a storm of alarms and restores.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Literal

from pydantic import Field

from drivers.errors import DeviceError
from drivers.modbus_io import (
    LineState,
    ModbusLink,
    ModbusModule,
    ModbusPoller,
    PollFailure,
    Snapshot,
    SupervisedLine,
)
from drivers.modbus_presets import preset
from gateway.commands import CommandRouter, Request, RequestContext, StatusRequest
from gateway.config import AlarmSection, ModbusLinkSection, ModbusModuleSection
from gateway.errors import CommandError, RefusedWhileLost
from gateway.events import EventData, Payload, register_event_type, utc_timestamp
from gateway.health import DeviceHealth
from gateway.memory import JsonMemory
from gateway.publisher import Publisher
from gateway.startup import startup_open
from gateway.subsystem import Subsystem, SubsystemContext, Task

log = logging.getLogger(__name__)

Condition = Literal["normal", "alarm", "trouble_open", "trouble_short"]
_TROUBLES = ("trouble_open", "trouble_short")
_CONDITIONS: dict[LineState, Condition] = {
    LineState.NORMAL: "normal",
    LineState.ALARM: "alarm",
    LineState.TROUBLE_OPEN: "trouble_open",
    LineState.TROUBLE_SHORT: "trouble_short",
}


class AlarmData(EventData):
    name: str = Field(description="The alarm's display name (config `name`)")
    priority: str = Field(description="critical, high, medium or low (config `priority`)")
    input: str = Field(description="normal, alarm, trouble_open, trouble_short or unknown")
    latched: bool = Field(description="True when the alarm stays active until acknowledged")


class AckData(EventData):
    name: str = Field(description="The alarm's display name (config `name`)")
    priority: str = Field(description="critical, high, medium or low (config `priority`)")
    acknowledged_by: str | None = Field(
        default=None, description="The ack request's transaction, when it had one"
    )


class TroubleData(EventData):
    name: str = Field(description="The alarm's display name (config `name`)")
    trouble: str = Field(description="trouble_open (loop cut) or trouble_short (loop shorted)")
    message: str = Field(description="One line a technician can act on")


class ModuleData(EventData):
    message: str = Field(description="Why it went offline, or that it answers again")
    failed_polls: int = Field(description="Polls without a valid answer since the start")


for _name, _model in (
    ("alarm.raised", AlarmData),
    ("alarm.restored", AlarmData),
    ("alarm.cleared", AlarmData),
    ("alarm.acknowledged", AckData),
    ("trouble.raised", TroubleData),
    ("trouble.cleared", TroubleData),
    ("module.offline", ModuleData),
    ("module.online", ModuleData),
):
    register_event_type(_name, _model)


class AlarmState(Payload):
    """`<prefix>/alarms/<id>/state`, retained."""

    alarm: str = Field(description="The alarm id")
    name: str = Field(description="The alarm's display name (config `name`)")
    priority: str = Field(description="critical, high, medium or low (config `priority`)")
    module: str = Field(description="The id of the IO module the input is wired to")
    state: Literal["normal", "active", "trouble", "unknown"] = Field(
        description="normal; active (raised, or latched until acknowledged); trouble (the "
        "supervised loop is cut or shorted); unknown (the module is offline or not read yet)"
    )
    input: Literal["normal", "alarm", "trouble_open", "trouble_short", "unknown"] = Field(
        description="What the input reads now, debounced"
    )
    latched: bool = Field(description="Configured to latch until acknowledged")
    acknowledged: bool = Field(description="True once an active alarm has been acknowledged")
    active_since: str | None = Field(description="While active: since when, RFC 3339 UTC")
    module_online: bool = Field(description="True while its IO module answers")
    ts: str = Field(description="When this snapshot was taken, RFC 3339 UTC")


class ModuleState(Payload):
    """`<prefix>/modules/<id>/state`, retained."""

    module: str = Field(description="The module id")
    link: str = Field(description="The id of the Modbus link it is polled over")
    device_id: int = Field(description="Its Modbus unit id on that link")
    model: str = Field(description="The module model (its register map)")
    state: Literal["starting", "online", "offline"] = Field(
        description="starting (not polled yet), online (answers), offline (stopped answering)"
    )
    last_error: str | None = Field(description="While not online: why the last poll failed")
    polls: int = Field(description="Polls made since the start")
    failed_polls: int = Field(description="Polls without a valid answer since the start")
    lost_since: str | None = Field(default=None, description="While offline: since when")
    attempts: int = Field(default=0, description="Failed polls since it went offline")
    ts: str = Field(description="When this snapshot was taken, RFC 3339 UTC")


class AckRequest(Request):
    pass


class SetOutputRequest(Request):
    output: str = Field(description="The output's name, as in the module's `outputs` config")
    state: bool = Field(description="true switches the relay on, false off")


class SetOutputResponse(Payload):
    """`data` of the answer to `set_output`, once the module has taken the write."""

    output: str = Field(description="The output's name")
    state: bool = Field(description="What it was set to: true on, false off")


class AlarmPoint:
    """One alarm input's state machine."""

    def __init__(
        self,
        *,
        alarm_id: str,
        config: AlarmSection,
        publisher: Publisher,
        memory: JsonMemory | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.alarm_id = alarm_id
        self.config = config
        self.point = f"alarm_{alarm_id}"
        self._pub = publisher
        self._clock = clock
        self._line = (
            SupervisedLine.from_nominals(
                {LineState(k): v for k, v in config.nominal.items()},
                hysteresis_fraction=config.hysteresis_fraction,
            )
            if config.nominal is not None
            else None
        )
        self._cond: Condition | None = None  # last accepted (debounced) condition
        self._candidate: Condition | None = None
        self._candidate_since = 0.0
        self._active = False
        self._acknowledged = False
        self._active_since: str | None = None
        self._module_online = False
        self._state_topic = publisher.topic_for("alarm", alarm_id, "state")
        self._memory = memory
        self._remembered: Condition | None = None
        self.module_health: DeviceHealth | None = None
        """Its module's, set by the module's monitor: counts what is refused while it is lost."""
        self._recall()

    def _recall(self) -> None:
        """A latch or an acknowledgement outlives a restart: take up the last run's."""
        saved = self._memory.get(self.alarm_id) if self._memory is not None else None
        if not isinstance(saved, dict):
            return
        last_input = saved.get("input")
        if last_input not in ("normal", "alarm", *_TROUBLES):
            return
        self._remembered = last_input
        self._active = saved.get("active") is True
        self._acknowledged = saved.get("acknowledged") is True
        since = saved.get("active_since")
        self._active_since = since if isinstance(since, str) and self._active else None

    @property
    def name(self) -> str:
        return self.config.name or self.alarm_id

    def condition(self, value: float | bool) -> Condition:
        if self._line is not None:
            previous = LineState(self._cond) if self._cond is not None else None
            state = self._line.classify(float(value), previous)
            return _CONDITIONS[state]
        closed = bool(value)
        active = closed if self.config.contact == "normally_open" else not closed
        return "alarm" if active else "normal"

    # -- inputs ----------------------------------------------------------------------------

    def observe(self, value: float | bool, ts: float) -> None:
        """A fresh reading from a poll; applies after debounce_ms of stability."""
        cond = self.condition(value)
        if self._cond is None:
            self._module_online = True
            # First reading: the baseline, whatever it is; against the last run's reading
            # when there is one, so a restart neither repeats nor forgets a transition.
            self._cond, self._remembered = self._remembered, None
            if cond == self._cond:
                self._publish_state()
            else:
                self._apply(cond, ts)
            return
        if cond == self._cond:
            self._candidate = None
            return
        now = self._clock()
        if cond != self._candidate:
            self._candidate, self._candidate_since = cond, now
        if now - self._candidate_since >= self.config.debounce_ms / 1000:
            self._candidate = None
            self._apply(cond, ts)

    def module_offline(self) -> None:
        self._module_online = False
        self._candidate = None
        self._publish_state()

    def module_back(self, value: float | bool, ts: float) -> None:
        """First reading after the module returned: publish only a real difference."""
        self._module_online = True
        cond = self.condition(value)
        if cond != self._cond:
            self._apply(cond, ts)
        else:
            self._publish_state()

    def _apply(self, new: Condition, ts: float) -> None:
        old, self._cond = self._cond, new
        if old in _TROUBLES and old != new:
            self._trouble("trouble.cleared", old, ts)
        if new in _TROUBLES and old != new:
            self._trouble("trouble.raised", new, ts)
        if new == "alarm" and old != "alarm":
            self._active = True
            self._acknowledged = False
            self._active_since = utc_timestamp(ts)
            log.warning("alarm %s (%s): ALARM", self.alarm_id, self.name)
            self._emit("alarm.raised", ts)
        elif old == "alarm" and new != "alarm":
            if self.config.latched and not self._acknowledged:
                log.info("alarm %s: input restored; latched until acknowledged", self.alarm_id)
                self._emit("alarm.restored", ts)
            else:
                self._clear(ts)
        self._publish_state()

    def _clear(self, ts: float) -> None:
        self._active = False
        self._active_since = None
        log.warning("alarm %s (%s): cleared", self.alarm_id, self.name)
        self._emit("alarm.cleared", ts)

    def _emit(self, event_type: str, ts: float) -> None:
        data = AlarmData(
            name=self.name,
            priority=self.config.priority,
            input=self._cond or "unknown",
            latched=self.config.latched,
        )
        self._pub.emit("alarm", self.alarm_id, event_type, data, keep=True, ts=ts)

    def _trouble(self, event_type: str, trouble: str, ts: float) -> None:
        what = (
            "open (wire cut or EOL resistor missing)" if trouble == "trouble_open" else ("shorted")
        )
        message = f"supervised loop {what}" if event_type == "trouble.raised" else "loop normal"
        log.warning("alarm %s: %s: %s", self.alarm_id, event_type, message)
        data = TroubleData(name=self.name, trouble=trouble, message=message)
        self._pub.emit("alarm", self.alarm_id, event_type, data, keep=True, ts=ts)

    # -- commands --------------------------------------------------------------------------

    def acknowledge(self, by: str | None) -> AlarmState:
        if not self._active and not self._module_online:
            # Unknown, not "not active": the input may be in alarm right now. (A latched
            # alarm raised before the module went away is still acknowledged.)
            if self.module_health is not None:
                self.module_health.refused()
            raise RefusedWhileLost(
                f"alarm {self.alarm_id}: module {self.config.module} is offline, the input is "
                "unknown: nothing known to acknowledge"
            )
        if not self._active:
            raise CommandError(f"alarm {self.alarm_id} is not active: nothing to acknowledge")
        if not self._acknowledged:
            self._acknowledged = True
            data = AckData(name=self.name, priority=self.config.priority, acknowledged_by=by)
            self._pub.emit("alarm", self.alarm_id, "alarm.acknowledged", data, keep=True)
            if self._cond != "alarm":
                self._clear(time.time())
            self._publish_state()
        return self.snapshot()

    # -- state -----------------------------------------------------------------------------

    def snapshot(self) -> AlarmState:
        known = self._module_online and self._cond is not None
        if not known:
            state: Literal["normal", "active", "trouble", "unknown"] = "unknown"
        elif self._active:
            state = "active"
        elif self._cond in _TROUBLES:
            state = "trouble"
        else:
            state = "normal"
        return AlarmState(
            alarm=self.alarm_id,
            name=self.name,
            priority=self.config.priority,
            module=self.config.module,
            state=state,
            input=self._cond if known and self._cond is not None else "unknown",
            latched=self.config.latched,
            acknowledged=self._acknowledged,
            active_since=self._active_since,
            module_online=self._module_online,
            ts=utc_timestamp(),
        )

    def _publish_state(self) -> None:
        self._pub.set_state(self._state_topic, self.snapshot())
        last_input = self._cond or self._remembered
        if self._memory is not None and last_input is not None:
            self._memory.set(
                self.alarm_id,
                {
                    "input": last_input,
                    "active": self._active,
                    "acknowledged": self._acknowledged,
                    "active_since": self._active_since,
                },
            )


class LinkLog:
    """The offline and back-online lines of the modules on one link, one line for them all.

    Modules on one link (an RS-485 bus, a Modbus TCP gateway) lose it together when its
    cable is pulled: the technician needs one line naming the modules, not one per module.
    A line waits `window_s` for the others (they notice within a poll or a time-out of
    each other); on a link with one polled module it is logged at once.
    """

    def __init__(self, link_id: str, *, modules: int, window_s: float) -> None:
        self._link_id = link_id
        self._grouped = modules > 1
        self._window_s = window_s
        self._pending: dict[tuple[int, str, bool], list[tuple[str, str]]] = {}
        """(level, text, paren) -> (module, detail) in the order said."""
        self._timer: asyncio.TimerHandle | None = None

    def say(
        self, level: int, module_id: str, text: str, detail: str = "", *, paren: bool = False
    ) -> None:
        """Log "module <id>: <text>: <detail>" (or "<text> (<detail>)" with `paren`).
        Modules saying the same text are grouped in one line, with every module's detail
        where they differ."""
        if not self._grouped:
            log.log(level, "module %s: %s%s", module_id, text, _detail(detail, paren))
            return
        self._pending.setdefault((level, text, paren), []).append((module_id, detail))
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._window_s, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, {}
        for (level, text, paren), said in pending.items():
            if len(said) == 1:
                log.log(level, "module %s: %s%s", said[0][0], text, _detail(said[0][1], paren))
                continue
            names = ", ".join(module_id for module_id, _ in said)
            if len({detail for _, detail in said}) > 1:
                detail = " (" + "; ".join(f"{m}: {d}" for m, d in said) + ")"
            else:
                detail = _detail(said[0][1], paren)
            log.log(level, "modules %s on link %s: %s%s", names, self._link_id, text, detail)


def _detail(detail: str, paren: bool) -> str:
    if not detail:
        return ""
    return f" ({detail})" if paren else f": {detail}"


class ModuleMonitor:
    """Polls one IO module and feeds its alarm points; supervises the link to it."""

    def __init__(
        self,
        *,
        module_id: str,
        config: ModbusModuleSection,
        link: ModbusLink,
        points: list[AlarmPoint],
        publisher: Publisher,
        link_log: LinkLog | None = None,
    ) -> None:
        self.module_id = module_id
        self.link_log = link_log or LinkLog(config.link, modules=1, window_s=0.0)
        self._cfg = config
        self._preset = preset(config.preset)
        self._module = ModbusModule(link=link, device_id=config.device_id)
        self.points = points
        self._pub = publisher
        digital = {p.point: p.config.channel for p in points if p.config.kind == "digital"}
        analog = {p.point: p.config.channel for p in points if p.config.kind == "supervised"}
        # A module of relays only (no alarm input) has nothing to poll: InputMap needs points.
        self._input_map = (
            self._preset.input_map(inputs=digital, analogs=analog, use_di_word=config.use_di_word)
            if digital or analog
            else None
        )
        self._state: Literal["starting", "online", "offline"] = "starting"
        self._misses = 0
        self._polls = 0
        self._failures = 0
        self._last_error: str | None = None
        self._streak_error = ""
        self._state_topic = publisher.topic_for("module", module_id, "state")
        self._health = DeviceHealth(what=f"module {module_id}", logger=log)
        for point in points:
            point.module_health = self._health

    @property
    def online(self) -> bool:
        return self._state == "online"

    @property
    def polled(self) -> bool:
        """False for a module with outputs only: nothing reads it, it never comes online."""
        return self._input_map is not None

    def snapshot(self) -> ModuleState:
        return ModuleState(
            module=self.module_id,
            link=self._cfg.link,
            device_id=self._cfg.device_id,
            model=self._preset.model,
            state=self._state,
            last_error=self._last_error,
            polls=self._polls,
            failed_polls=self._failures,
            lost_since=self._health.lost_since,
            attempts=self._health.attempts,
            ts=utc_timestamp(),
        )

    def _publish_state(self) -> None:
        self._pub.set_state(self._state_topic, self.snapshot())

    async def run(self) -> None:
        self._publish_state()
        for point in self.points:
            point.module_offline()  # "unknown" until the first successful read
        if self._input_map is None:
            log.info("module %s: no alarm inputs configured; outputs only", self.module_id)
            await asyncio.Event().wait()
            return
        poller = ModbusPoller(
            module=self._module, input_map=self._input_map, interval_s=self._cfg.poll_ms / 1000
        )
        while True:
            result = await poller.next()
            self._polls += 1
            if isinstance(result, Snapshot):
                self._on_snapshot(result)
            else:
                self._on_failure(result)

    def _on_snapshot(self, snap: Snapshot) -> None:
        self._misses = 0
        returning = self._state == "offline"
        if self._state != "online":
            self._state = "online"
            self._last_error = None
            away = self._health.recovered()
            if returning:
                self.link_log.say(
                    logging.WARNING, self.module_id, "back online", away or "", paren=True
                )
                data = ModuleData(message="module answers again", failed_polls=self._failures)
                self._pub.emit("module", self.module_id, "module.online", data, keep=True)
            else:
                log.info(
                    "module %s: online (%s)",
                    self.module_id,
                    self._module.description,
                    extra=startup_open(f"module {self.module_id}", self._module.description),
                )
            self._publish_state()
        for point in self.points:
            value = snap.values[point.point]
            if returning:
                point.module_back(value, snap.ts)
            else:
                point.observe(value, snap.ts)

    def _on_failure(self, failure: PollFailure) -> None:
        self._misses += 1
        self._failures += 1
        if self._misses == 1:
            self._streak_error = str(failure.error)  # the cause; later ones are follow-ups
        if self._state == "offline":
            # Still away: keep the cause current (a module that now answers with
            # exceptions is no longer "cannot connect"); the tracker logs a change once.
            # A poll the driver skipped while backing off tells nothing new.
            if getattr(failure.error, "follow_up", False):
                return
            self._health.failed(str(failure.error))
            if self._last_error != self._health.last_error:
                self._last_error = self._health.last_error
                self._publish_state()
            return
        if self._misses < self._cfg.offline_after_misses:
            return
        self._state = "offline"
        self._health.failed(self._streak_error)
        self._last_error = self._streak_error
        message = f"no valid answer for {self._misses} polls: {self._streak_error}"
        self.link_log.say(logging.ERROR, self.module_id, "OFFLINE", message)
        data = ModuleData(message=message, failed_polls=self._failures)
        self._pub.emit("module", self.module_id, "module.offline", data, keep=True)
        self._publish_state()
        for point in self.points:
            point.module_offline()

    async def set_output(self, name: str, state: bool) -> SetOutputResponse:
        channel = self._cfg.outputs.get(name)
        if channel is None:
            known = ", ".join(sorted(self._cfg.outputs)) or "none configured"
            raise CommandError(f"module {self.module_id} has no output {name!r} ({known})")
        try:
            await self._module.write_coil(self._preset.outputs[channel], state)
        except DeviceError as exc:
            raise CommandError(f"module {self.module_id}: output not set: {exc}") from None
        log.info("module %s: output %s set %s", self.module_id, name, "on" if state else "off")
        return SetOutputResponse(output=name, state=state)


def modbus_link(section: ModbusLinkSection) -> ModbusLink:
    """A (not yet connected) Modbus link as configured."""
    return ModbusLink(
        host=section.host,
        port=section.port,
        serial_port=section.serial_port,
        baudrate=section.baudrate,
        parity=section.parity,
        stopbits=section.stopbits,
        timeout_s=section.timeout_s,
    )


def build_alarm_system(
    *,
    links: dict[str, ModbusLinkSection],
    modules: dict[str, ModbusModuleSection],
    alarms: dict[str, AlarmSection],
    publisher: Publisher,
    memory: JsonMemory | None = None,
) -> tuple[dict[str, ModbusLink], dict[str, ModuleMonitor], dict[str, AlarmPoint]]:
    """Links, module monitors and alarm points for a config; modules on one link share it."""
    link_objects = {
        link_id: modbus_link(section)
        for link_id, section in links.items()
        if any(m.link == link_id for m in modules.values())
    }
    points = {
        alarm_id: AlarmPoint(alarm_id=alarm_id, config=section, publisher=publisher, memory=memory)
        for alarm_id, section in alarms.items()
    }
    polled = {m for m in modules if any(p.config.module == m for p in points.values())}
    link_logs = {}
    for link_id, link in link_objects.items():
        on_link = [s for m, s in modules.items() if s.link == link_id and m in polled]
        # The modules of a link notice its loss within a poll and a time-out of each other.
        slowest_poll_s = max((s.poll_ms / 1000 for s in on_link), default=0.0)
        window_s = max(0.5, 2 * slowest_poll_s + 2 * link.timeout_s)
        link_logs[link_id] = LinkLog(link_id, modules=len(on_link), window_s=window_s)
    monitors = {
        module_id: ModuleMonitor(
            module_id=module_id,
            config=section,
            link=link_objects[section.link],
            points=[p for p in points.values() if p.config.module == module_id],
            publisher=publisher,
            link_log=link_logs[section.link],
        )
        for module_id, section in modules.items()
    }
    return link_objects, monitors, points


def register_alarm_commands(
    router: CommandRouter, points: dict[str, AlarmPoint], modules: dict[str, ModuleMonitor]
) -> None:
    async def ack(params: AckRequest, ctx: RequestContext) -> AlarmState:
        return points[ctx.target].acknowledge(ctx.client)

    async def alarm_status(params: StatusRequest, ctx: RequestContext) -> AlarmState:
        return points[ctx.target].snapshot()

    async def set_output(params: SetOutputRequest, ctx: RequestContext) -> SetOutputResponse:
        return await modules[ctx.target].set_output(params.output, params.state)

    async def module_status(params: StatusRequest, ctx: RequestContext) -> ModuleState:
        return modules[ctx.target].snapshot()

    router.set_targets("alarms", points.keys)
    router.set_targets("modules", modules.keys)
    router.register(
        "alarms",
        "ack",
        AckRequest,
        ack,
        response=AlarmState,
        description="Acknowledge an active alarm; a restored latched alarm then clears.",
    )
    router.register(
        "alarms",
        "status",
        StatusRequest,
        alarm_status,
        response=AlarmState,
        description="Alarm snapshot.",
    )
    router.register(
        "modules",
        "set_output",
        SetOutputRequest,
        set_output,
        response=SetOutputResponse,
        description="Switch a named relay output of an IO module on or off.",
    )
    router.register(
        "modules",
        "status",
        StatusRequest,
        module_status,
        response=ModuleState,
        description="IO module snapshot.",
    )


class Alarms(Subsystem):
    """Alarm inputs on Modbus IO modules: the links, module monitors and alarm points."""

    name = "alarms"

    def __init__(
        self,
        links: dict[str, ModbusLink],
        modules: dict[str, ModuleMonitor],
        points: dict[str, AlarmPoint],
    ) -> None:
        self.links = links
        self.modules = modules
        self.points = points

    @classmethod
    def build(cls, ctx: SubsystemContext) -> Alarms:
        config = ctx.config
        return cls(
            *build_alarm_system(
                links=config.modbus.links,
                modules=config.modbus.modules,
                alarms=config.alarms,
                publisher=ctx.publisher,
                memory=JsonMemory(ctx.state_dir / "alarms.json", fsync=config.outbox.fsync),
            )
        )

    def tasks(self) -> dict[str, Task]:
        return {f"module {module_id}": m.run for module_id, m in self.modules.items()}

    def register(self, router: CommandRouter) -> None:
        register_alarm_commands(router, self.points, self.modules)

    def summary(self) -> list[str]:
        return [f"{len(self.modules)} IO modules", f"{len(self.points)} alarm inputs"]

    def startup_devices(self) -> list[str]:
        # A module with no inputs is never polled, so it never comes "online".
        return [f"module {m}" for m, module in self.modules.items() if module.polled]

    async def close(self) -> None:
        for module in self.modules.values():
            module.link_log.flush()  # a line still waiting for its link's other modules
        await asyncio.gather(
            *(link.close() for link in self.links.values()), return_exceptions=True
        )
