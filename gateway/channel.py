"""Per-channel monitor: keys the radio safely and watches it for faults.

Safety rules enforced here, whatever the requester does:
- every transmission ends at the time-out timer (tx_timeout_s); after a time-out the channel
  stays unkeyed, and `stuck_ptt` raised, until the requester releases (ptt off) or no PTT
  request at all has come for tx_timeout_reset_s: renewals in between are refused, so no
  requester can key for more than tx_timeout_s between two releases;
- PTT is a lease: a requester that vanishes cannot hold a transmitter;
- PTT is released on every stop path, error path and device loss; a reopened device starts
  unkeyed and is never re-keyed on its own;
- the PTT reported is what the hardware reads back where it can;
- carrier (COS) the interface has not reported is unknown (`cos` null, fault `cos_unknown`),
  never a guessed "no carrier"; busy lockout treats it as busy unless
  `busy_when_cos_unknown = false`. A channel with no COS line has `cos` null and no fault;
- keying is journalled (state_dir) before the command goes out, so a run that dies with a
  radio keyed is followed by a `ptt.off` (reason restart) once the next run has unkeyed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer

from drivers.backoff import Backoff
from drivers.errors import DeviceError, DeviceLost, DeviceUnavailable
from drivers.radio import RadioInterface, RadioLines
from gateway.commands import CommandRouter, Request, RequestContext, StatusRequest
from gateway.config import ChannelSection
from gateway.errors import CommandError, RefusedWhileLost
from gateway.events import (
    ChannelState,
    CosData,
    FaultData,
    LastUnit,
    Payload,
    PttData,
    utc_timestamp,
)
from gateway.health import DeviceHealth
from gateway.memory import JsonMemory
from gateway.publisher import Publisher
from gateway.radios import kind_of, make_radio
from gateway.startup import startup_open
from gateway.subsystem import Subsystem, SubsystemContext, Task

log = logging.getLogger(__name__)

_IO_TIMEOUT_S = 2.0
"""A device call taking longer than this counts as a lost device."""
_READBACK_GRACE_S = 0.25
"""How long the read-back may lag a command before it counts as a mismatch."""


class PttRequest(Request):
    state: Literal["on", "off"] = Field(
        description="on keys the transmitter for a lease; off unkeys it (and clears a time-out)"
    )
    duration_s: float | None = Field(
        default=None, gt=0, description="Lease length; capped at the channel's max_lease_s"
    )


class PttResponse(Payload):
    """`data` of the answer to `ptt`: the channel's PTT once the command has acted."""

    ptt: bool = Field(description="Keyed, as read back from the hardware where it can be")
    ptt_readback: bool = Field(
        description="True when the radio interface reads PTT back, so `ptt` is not just commanded"
    )
    tx_remaining_s: float | None = Field(
        description="Seconds until the time-out timer unkeys, while keyed; null when unkeyed"
    )
    faults: list[str] = Field(description="Fault codes active on the channel, sorted")
    lease_s: float | None = Field(
        default=None,
        description="With state=on: the lease granted, in seconds (duration_s capped at the "
        "channel's max_lease_s); absent with state=off",
    )

    @model_serializer(mode="wrap")
    def _without_absent_lease(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        body: dict[str, Any] = handler(self)
        if body.get("lease_s") is None:
            body.pop("lease_s", None)  # absent, not null: the shape CAD has always had
        return body


class ChannelMonitor:
    """State machine for one radio channel: idle, receiving, transmitting, both, fault."""

    def __init__(
        self,
        *,
        channel_id: str,
        config: ChannelSection,
        radio: RadioInterface | None,
        publisher: Publisher,
        ptt_journal: JsonMemory | None = None,
        clock: Any = time.monotonic,
    ) -> None:
        self.channel_id = channel_id
        self._cfg = config
        self._radio = radio
        self._pub = publisher
        self._clock = clock
        self._journal = ptt_journal
        self.left_keyed: dict[str, Any] | None = None
        """What the last run left keyed here (its journal entry), until this run unkeys."""
        if ptt_journal is not None and isinstance(ptt_journal.get(channel_id), dict):
            self.left_keyed = ptt_journal.get(channel_id)
        self._io_lock = asyncio.Lock()  # one read at a time; PTT commands do not take it
        self._commands = 0  # PTT commands sent, so a poll can tell one overlapped its read
        self._online = False
        self._ptt_commanded = False
        self._ptt_hw = False  # reported PTT: read back, or commanded where no read-back
        self._ptt_changed_at = 0.0
        self._lease_until: float | None = None
        self._lease_holder: str | None = None
        self._timed_out = False  # refuse re-keying until the requester releases
        self._timed_out_asked_at = 0.0  # the last PTT request since the time-out
        self._command_reason = "device_opened"  # why the last PTT command was sent
        radio_cfg = config.radio
        self._cos_wired = radio_cfg is not None and kind_of(radio_cfg).has_cos(radio_cfg)
        """A COS line is configured: carrier is reported, or else unknown (not just absent)."""
        self._cos_raw: bool | None = None
        self._cos_raw_since = 0.0
        self._cos: bool | None = None  # debounced; None: not reported (or no COS line)
        self._cos_since = 0.0
        self._cos_edges: deque[float] = deque()
        self.faults: dict[str, str] = {}
        self._last_unit: LastUnit | None = None
        self.fault_listeners: list[Callable[[str, str], None]] = []
        """Called with (code, message) when a fault is raised (the audio recall hooks in)."""
        self._ever_opened = False
        # Reopened at once after a loss: the first failure says nothing new.
        self.health = DeviceHealth(
            what=f"channel {channel_id}: radio interface", logger=log, quiet_first_change=True
        )
        self._last_tx_state = 0.0
        self._last_reassert = 0.0
        self._keyed_at: float | None = None
        self._state_topic = publisher.topic_for("channel", channel_id, "state")

    # -- public state --------------------------------------------------------------------

    @property
    def ptt(self) -> bool:
        return self._ptt_hw

    @property
    def cos(self) -> bool | None:
        """Carrier present (debounced); None when unknown or the channel has no COS line."""
        return self._cos

    @property
    def online(self) -> bool:
        return self._online

    @property
    def has_radio(self) -> bool:
        return self._radio is not None

    @property
    def has_cos(self) -> bool:
        """True when a radio interface reports carrier now (needed for the audio
        cross-checks): wired, online, and the carrier known."""
        return (
            self._cos_wired and self._radio is not None and self._online and self._cos is not None
        )

    def snapshot(self) -> ChannelState:
        if self.faults:
            state: Literal["idle", "receiving", "transmitting", "both", "fault"] = "fault"
        elif self._ptt_hw and self._cos:
            state = "both"
        elif self._ptt_hw:
            state = "transmitting"
        elif self._cos:
            state = "receiving"
        else:
            state = "idle"
        return ChannelState(
            channel=self.channel_id,
            name=self._cfg.name or self.channel_id,
            state=state,
            ptt=self._ptt_hw,
            ptt_readback=bool(self._radio and self._radio.can_read_back_ptt),
            cos=self._cos,
            device="none" if self._radio is None else ("online" if self._online else "offline"),
            faults=sorted(self.faults),
            tx_remaining_s=self._tx_remaining(),
            lost_since=self.health.lost_since,
            attempts=self.health.attempts,
            last_error=self.health.last_error,
            last_unit=self._last_unit,
            ts=utc_timestamp(),
        )

    def note_unit(self, unit: str, kind: str, ts: float) -> None:
        """A radio identified itself on this channel (MDC-1200): shown in the state."""
        self._last_unit = LastUnit(unit=unit, kind=kind, ts=utc_timestamp(ts))
        self._publish_state()

    def _tx_remaining(self) -> float | None:
        """Seconds before the time-out timer unkeys, while the radio transmits."""
        if not self._ptt_hw:
            return None
        left: float = self._ptt_changed_at + self._cfg.tx_timeout_s - self._clock()
        return round(max(0.0, left), 3)

    def _publish_state(self) -> None:
        self._pub.set_state(self._state_topic, self.snapshot())

    # -- events and faults ---------------------------------------------------------------

    def raise_fault(self, code: str, message: str) -> None:
        """Raise a fault on this channel (the radio's own, or the audio monitor's)."""
        if code not in self.faults:
            self.faults[code] = message
            self._fault_changed("fault.raised", code, message)
            for listener in self.fault_listeners:
                listener(code, message)

    def clear_fault(self, code: str, message: str) -> None:
        if self.faults.pop(code, None) is not None:
            self._fault_changed("fault.cleared", code, message)

    def _fault_changed(self, event_type: str, code: str, message: str) -> None:
        verb = "FAULT" if event_type == "fault.raised" else "fault cleared:"
        log.warning("channel %s: %s %s: %s", self.channel_id, verb, code, message)
        data = FaultData(fault=code, message=message)
        self._pub.emit("channel", self.channel_id, event_type, data, keep=True)
        self._publish_state()

    def _set_reported_ptt(self, keyed: bool, reason: str, *, level: int = logging.INFO) -> None:
        if keyed == self._ptt_hw:
            return
        self._ptt_hw = keyed
        self._ptt_changed_at = self._clock()
        log.log(level, "channel %s: PTT %s (%s)", self.channel_id, "ON" if keyed else "off", reason)
        self._pub.emit(
            "channel",
            self.channel_id,
            "ptt.on" if keyed else "ptt.off",
            PttData(requested_by=self._lease_holder, reason=reason),
            keep=True,
        )
        self._publish_state()

    # -- device I/O ----------------------------------------------------------------------

    async def _io_set_ptt(self, keyed: bool) -> None:
        assert self._radio is not None
        self._commands += 1
        async with asyncio.timeout(_IO_TIMEOUT_S):
            await self._radio.set_ptt(keyed)

    async def _io_read(self) -> RadioLines:
        assert self._radio is not None
        async with asyncio.timeout(_IO_TIMEOUT_S):
            return await self._radio.read_lines()

    async def _key(self, keyed: bool, reason: str) -> None:
        """Drive PTT and report what the hardware says. Raises DeviceLost.

        The command does not wait for a poll in progress (that would add its round trip to
        the PTT latency); the driver orders the two, and `_commands` tells the poll that
        its read-back may predate the command.
        """
        if keyed and not self._ptt_commanded:
            self._keyed_at = self._clock()
            self._journal_keyed(True)  # before the line moves: a crash after it is known
        elif not keyed:
            self._keyed_at = None
        self._ptt_commanded = keyed
        self._command_reason = reason
        try:
            await self._io_set_ptt(keyed)
        except TimeoutError:
            raise DeviceLost("PTT command timed out") from None
        if not keyed:
            self._journal_keyed(False)
        if self._radio is not None and self._radio.can_read_back_ptt:
            async with self._io_lock:
                lines = await self._read_locked()  # asked after the command: reflects it
            self._apply_readback(lines, reason)
        else:
            self._set_reported_ptt(keyed, reason)

    def _journal_keyed(self, keyed: bool) -> None:
        if self._journal is None:
            return
        entry = None
        if keyed:
            entry = {"requested_by": self._lease_holder, "keyed_at": utc_timestamp()}
        self._journal.set(self.channel_id, entry)

    async def _read_locked(self) -> RadioLines:
        try:
            return await self._io_read()
        except TimeoutError:
            raise DeviceLost("read timed out") from None

    def _apply_readback(self, lines: RadioLines, reason: str) -> None:
        if lines.ptt is None:
            self._set_reported_ptt(self._ptt_commanded, reason)
            return
        self._set_reported_ptt(lines.ptt, reason)

    # -- commands ------------------------------------------------------------------------

    async def request_ptt(self, params: PttRequest, ctx: RequestContext) -> PttResponse:
        if self._radio is None:
            raise CommandError(f"channel {self.channel_id} has no radio interface")
        if params.state == "off":
            self._timed_out = False
            self.clear_fault("stuck_ptt", "PTT released by the requester")
            if self._online:
                try:
                    await self._key(False, "request")
                except DeviceError as exc:
                    self._device_lost(exc)
                    raise RefusedWhileLost(f"radio interface lost: {exc}") from None
            self._lease_until = None
            self._lease_holder = None
            return self._ptt_reply()
        if not self._online:
            self.health.refused()
            raise RefusedWhileLost(f"channel {self.channel_id}: radio interface offline")
        if self._timed_out:
            self._timed_out_asked_at = self._clock()
            raise CommandError(
                f"transmit time-out: the channel stays unkeyed until PTT is released "
                f"(send state=off) or no PTT request comes for "
                f"{self._cfg.tx_timeout_reset_s:g} s"
            )
        if self._cfg.busy_lockout and self._cos_wired:
            if self._cos:
                raise CommandError("channel busy: carrier present and busy_lockout is on")
            if self._cos is None and self._cfg.busy_when_cos_unknown:
                raise CommandError(
                    "channel busy: carrier (COS) unknown, the radio interface has not reported "
                    "it; busy_lockout treats unknown as busy (busy_when_cos_unknown)"
                )
        lease = min(params.duration_s or self._cfg.max_lease_s, self._cfg.max_lease_s)
        self._lease_until = self._clock() + lease
        self._lease_holder = ctx.client
        if not self._ptt_hw or not self._ptt_commanded:
            try:
                await self._key(True, "request")
            except DeviceError as exc:
                self._device_lost(exc)
                raise RefusedWhileLost(f"radio interface lost: {exc}") from None
        return self._ptt_reply(lease_s=round(lease, 3))

    def _ptt_reply(self, *, lease_s: float | None = None) -> PttResponse:
        return PttResponse(
            ptt=self._ptt_hw,
            ptt_readback=bool(self._radio and self._radio.can_read_back_ptt),
            tx_remaining_s=self._tx_remaining(),
            faults=sorted(self.faults),
            lease_s=lease_s,
        )

    async def request_status(self, params: StatusRequest, ctx: RequestContext) -> ChannelState:
        return self.snapshot()

    async def release_all(self, reason: str) -> None:
        """Unkey now if possible (used on stop; never raises)."""
        if self._radio is None or not (self._ptt_commanded or self._ptt_hw):
            return
        with contextlib.suppress(Exception):
            await self._key(False, reason)

    # -- the monitor loop ----------------------------------------------------------------

    async def run(self) -> None:
        self._publish_state()
        if self._radio is None:
            await asyncio.Event().wait()  # nothing to poll; commands still answer
            return
        backoff = Backoff(0.2, self._cfg.reopen_backoff_max_s)
        try:
            while True:
                try:
                    await self._open()
                except DeviceUnavailable as exc:
                    self._device_absent(exc)
                    await backoff.sleep()
                    continue
                backoff.reset()
                try:
                    await self._poll_forever()
                except DeviceError as exc:
                    self._device_lost(exc)
                    await self._close_radio()
        finally:
            # Every stop path: release PTT (the driver also unkeys in close()).
            await self.release_all("stop")
            await self._close_radio()
            self._online = False

    async def _open(self) -> None:
        assert self._radio is not None
        try:
            async with asyncio.timeout(_IO_TIMEOUT_S * 3):
                await self._radio.open()  # drives PTT unkeyed before anything else
        except TimeoutError:
            await self._close_radio()
            raise DeviceUnavailable("open timed out") from None
        self._ptt_commanded = False
        self._lease_until = None
        lines = await self._read_locked()
        self._online = True
        self._cos_raw = self._cos = None
        self._track_cos(lines.cos, self._clock())
        self._apply_readback(lines, "device_opened")
        restarted = self._reconcile_restart()
        detail = self._radio.description + (f"; {restarted}" if restarted else "")
        away = self.health.recovered()
        if self._ever_opened or away is not None:
            back = f"radio interface back ({away})" if away else "radio interface back"
            self.clear_fault("device_lost", f"{back}: {detail}")
        else:
            log.log(
                logging.WARNING if restarted else logging.INFO,
                "channel %s: radio open: %s",
                self.channel_id,
                detail,
                extra=startup_open(f"channel {self.channel_id}", detail),
            )
        self._ever_opened = True
        self._publish_state()

    def _reconcile_restart(self) -> str | None:
        """The device is open and driven unkeyed: what the last run left keyed is over.
        What to say of it in the open line (one line for the open and the unkeying)."""
        left, self.left_keyed = self.left_keyed, None
        said = None
        if left is not None:
            by = left.get("requested_by")
            said = (
                f"unkeyed: the last run stopped with it keyed "
                f"(since {left.get('keyed_at', '?')}, by {by})"
            )
            self._pub.emit(
                "channel",
                self.channel_id,
                "ptt.off",
                PttData(requested_by=by if isinstance(by, str) else None, reason="restart"),
                keep=True,
            )
        if not self._ptt_commanded:
            self._journal_keyed(False)
        return said

    def _device_absent(self, exc: Exception) -> None:
        self._online = False
        self.health.failed(str(exc))
        self.raise_fault("device_lost", f"radio interface unavailable: {exc}")
        self._publish_state()  # attempts and last_error

    def _device_lost(self, exc: Exception) -> None:
        if not self._online:
            return
        self.health.failed(str(exc))
        self._online = False
        self._ptt_commanded = False
        self._lease_until = None
        # One line for the loss, PTT's drop included: the fault line says it.
        keyed = "; it was transmitting: PTT off" if self._ptt_hw else ""
        self.raise_fault("device_lost", f"radio interface lost: {exc}{keyed}")
        self._set_reported_ptt(False, "device_lost", level=logging.DEBUG)
        if self._cos:  # the carrier reported is over (for event consumers); unknown from now
            self._pub.emit("channel", self.channel_id, "cos.off", CosData())
        self._cos_raw = self._cos = None
        self._cos_edges.clear()
        self._publish_state()

    async def _close_radio(self) -> None:
        if self._radio is not None:
            with contextlib.suppress(Exception):
                await self._radio.close()

    async def _poll_forever(self) -> None:
        interval = self._cfg.poll_ms / 1000
        next_tick = self._clock()
        while True:
            async with self._io_lock:
                commands = self._commands
                lines = await self._read_locked()
                if self._commands != commands:
                    # A PTT command went out during this read: its read-back may be older
                    # than the command, so it neither reports PTT nor raises a mismatch.
                    lines = RadioLines(cos=lines.cos, ptt=None)
                now = self._clock()
                self._track_cos(lines.cos, now)
                self._check_readback(lines, now)
            await self._enforce_timers(now)
            self._check_cos_faults(now)
            if self._ptt_hw:
                self._publish_state_throttled(now)
            next_tick += interval
            delay = next_tick - self._clock()
            if delay < -interval:
                next_tick = self._clock()  # fell behind (loaded box): do not burst
                delay = 0
            await asyncio.sleep(max(delay, 0))

    def _publish_state_throttled(self, now: float) -> None:
        # While keyed, tx_remaining_s counts down; once a second is plenty for CAD.
        if now - self._last_tx_state >= 1.0:
            self._last_tx_state = now
            self._publish_state()

    def _track_cos(self, raw: bool | None, now: float) -> None:
        if not self._cos_wired:
            return  # no COS line: nothing to report, nothing unknown
        if raw is None:
            if self._cos is not None or self._cos_raw is not None:
                self._cos_raw = self._cos = None  # no event: nothing is known to have changed
                self._publish_state()
            if "cos_unknown" not in self.faults:
                self.raise_fault("cos_unknown", self._cos_unknown_message())
            return
        if self._cos is None:
            # The first report since the interface opened (or since COS became unknown): taken
            # as it is, not debounced against a value nobody saw.
            self._cos_raw = self._cos = raw
            self._cos_raw_since = self._cos_since = now
            if raw:
                self._pub.emit("channel", self.channel_id, "cos.on", CosData())
            self.clear_fault(
                "cos_unknown", f"the radio interface reports COS: carrier {'on' if raw else 'off'}"
            )
            self._publish_state()
            return
        if raw != self._cos_raw:
            self._cos_raw = raw
            self._cos_raw_since = now
            self._cos_edges.append(now)
        if raw != self._cos and now - self._cos_raw_since >= self._cfg.cos_debounce_ms / 1000:
            self._cos = raw
            self._cos_since = now
            log.debug("channel %s: COS %s", self.channel_id, "on" if raw else "off")
            self._pub.emit("channel", self.channel_id, "cos.on" if raw else "cos.off", CosData())
            self._publish_state()

    def _check_readback(self, lines: RadioLines, now: float) -> None:
        if lines.ptt is None:
            return
        if lines.ptt != self._ptt_hw:
            # A poll may see a command's effect before the command's own read-back does:
            # then it is that command's change, with its reason. "readback" is for the line
            # moving on its own.
            agrees = lines.ptt == self._ptt_commanded
            self._set_reported_ptt(lines.ptt, self._command_reason if agrees else "readback")
        if lines.ptt != self._ptt_commanded:
            if now - self._ptt_changed_at >= _READBACK_GRACE_S:
                want = "keyed" if self._ptt_commanded else "unkeyed"
                seen = "keyed" if lines.ptt else "unkeyed"
                self.raise_fault(
                    "ptt_mismatch",
                    f"PTT commanded {want} but the interface reads back {seen}: "
                    "check the PTT wiring and the radio's PTT input",
                )
        else:
            self.clear_fault("ptt_mismatch", "PTT read-back agrees with the command again")

    async def _enforce_timers(self, now: float) -> None:
        # Timed from the command, not the read-back: a broken read-back must not disable it.
        started = self._keyed_at
        if self._ptt_commanded and started is not None and now - started >= self._cfg.tx_timeout_s:
            self._timed_out = True
            self._timed_out_asked_at = now
            self._lease_until = None
            self.raise_fault(
                "stuck_ptt",
                f"transmit time-out after {self._cfg.tx_timeout_s:g} s: PTT released; "
                "the requester must release PTT before keying again",
            )
            await self._key(False, "timeout")
            return
        if self._lease_until is not None and now >= self._lease_until:
            self._lease_until = None
            if self._ptt_commanded:
                log.info("channel %s: PTT lease lapsed; unkeying", self.channel_id)
                await self._key(False, "lease_expired")
        reset_s = self._cfg.tx_timeout_reset_s
        if self._timed_out and now - self._timed_out_asked_at >= reset_s:
            # The requester has stopped asking: the hold that ran into the time-out is over.
            self._timed_out = False
            self.clear_fault("stuck_ptt", f"no PTT request for {reset_s:g} s after the time-out")
        if not self._ptt_commanded and self._ptt_hw and now - self._last_reassert >= 1.0:
            # Read-back says keyed although we unkeyed: command it again, the line may recover.
            self._last_reassert = now
            with contextlib.suppress(DeviceError, TimeoutError):
                await self._io_set_ptt(False)

    def _cos_unknown_message(self) -> str:
        where = self._radio.description if self._radio is not None else "the radio interface"
        hint = ""
        if where.lower().startswith("rfc2217:"):
            hint = (
                " (the serial server has sent no modem state: check that it speaks RFC 2217 "
                "to this port, e.g. ser2net's telnet(rfc2217) accepter, and that the COS line "
                "reaches its serial port)"
            )
        if not self._cfg.busy_lockout:
            effect = ""
        elif self._cfg.busy_when_cos_unknown:
            effect = "; busy lockout treats the channel as busy (PTT refused) until it does"
        else:
            effect = "; busy lockout lets PTT through (busy_when_cos_unknown = false)"
        return (
            f"carrier (COS) unknown: {where} has not reported the COS line since it opened"
            f"{hint}{effect}"
        )

    def _check_cos_faults(self, now: float) -> None:
        if self._cos is None:
            return  # cos_stuck and cos_flapping judge reported carrier only
        window = self._cfg.cos_flap_window_s
        while self._cos_edges and now - self._cos_edges[0] > window:
            self._cos_edges.popleft()
        edges = len(self._cos_edges)
        if edges >= self._cfg.cos_flap_max:
            self.raise_fault(
                "cos_flapping",
                f"carrier changed {edges} times in {window:g} s: check squelch setting and COS "
                "wiring",
            )
        elif "cos_flapping" in self.faults and edges <= self._cfg.cos_flap_max // 2:
            self.clear_fault("cos_flapping", "carrier steady again")
        if self._cos and now - self._cos_since >= self._cfg.cos_stuck_s:
            self.raise_fault(
                "cos_stuck",
                f"carrier present for more than {self._cfg.cos_stuck_s:g} s: squelch open or "
                "COS line stuck",
            )
        elif not self._cos and "cos_stuck" in self.faults:
            self.clear_fault("cos_stuck", "carrier dropped")


def register_channel_commands(router: CommandRouter, channels: dict[str, ChannelMonitor]) -> None:
    """The `ptt` and `status` requests on `<prefix>/channels/<id>/request/<cmd>`."""

    async def ptt(params: PttRequest, ctx: RequestContext) -> PttResponse:
        return await channels[ctx.target].request_ptt(params, ctx)

    async def status(params: StatusRequest, ctx: RequestContext) -> ChannelState:
        return await channels[ctx.target].request_status(params, ctx)

    router.set_targets("channels", channels.keys)
    router.register(
        "channels",
        "ptt",
        PttRequest,
        ptt,
        response=PttResponse,
        description="Key (state=on, optional duration_s lease) or unkey (state=off) the radio.",
    )
    router.register(
        "channels",
        "status",
        StatusRequest,
        status,
        response=ChannelState,
        description="Channel snapshot.",
    )


class Radios(Subsystem):
    """The radio channels: one ChannelMonitor per configured channel."""

    name = "radios"

    def __init__(self, channels: dict[str, ChannelMonitor]) -> None:
        self.channels = channels

    @classmethod
    def build(cls, ctx: SubsystemContext) -> Radios:
        return cls(
            {
                channel_id: ChannelMonitor(
                    channel_id=channel_id,
                    config=section,
                    radio=make_radio(section.radio) if section.radio is not None else None,
                    publisher=ctx.publisher,
                    ptt_journal=ctx.ptt_journal,
                )
                for channel_id, section in ctx.config.channels.items()
            }
        )

    def tasks(self) -> dict[str, Task]:
        return {f"channel {channel_id}": m.run for channel_id, m in self.channels.items()}

    def register(self, router: CommandRouter) -> None:
        register_channel_commands(router, self.channels)

    def summary(self) -> list[str]:
        return [f"{len(self.channels)} channels"]

    def startup_devices(self) -> list[str]:
        return [f"channel {c}" for c, m in self.channels.items() if m.has_radio]

    async def make_safe(self) -> None:
        # Channels unkey in their own cleanup; do it here too in case a task is wedged.
        await asyncio.gather(
            *(monitor.release_all("stop") for monitor in self.channels.values()),
            return_exceptions=True,
        )
