"""A simulated radio interface served as an RFC 2217 serial port on 127.0.0.1.

The radio's PTT input is wired to RTS or DTR, its carrier (COS) output to CTS, DSR, CD or RI,
each with a configurable polarity. The server side is pyserial's `PortManager` (the real
RFC 2217 code path) wrapping a simulated port object, run by one thread per simulator. Every
public method is thread-safe and quick, so it may be called from an asyncio test directly.

How the simulated port behaves, like a serial server that opens its port when a client
connects and closes it when the client goes:

- No client connected (never connected, connection dropped, unplugged): the port is closed,
  and a closed port's RTS and DTR are low (the OS drops them on close, termios HUPCL). With
  normal PTT polarity the radio is then unkeyed. WITH INVERTED PTT A DROPPED LINE MEANS KEYED:
  the simulated radio transmits whenever no client holds the line up, exactly as a real
  inverted radio would behind a closed port. Wire radios with normal polarity where possible.
- Client connects: the lines stay low until the client sets them. A real server that opens a
  Linux tty at connect time briefly asserts both lines (the kernel raises them on open) unless
  it keeps the port open; the simulator does not model that server-side glitch.
- SET-CONTROL DTR/RTS requests are answered with the line state read back after applying them,
  and the "request DTR/RTS signal state" queries (values 7 and 10) are answered, as ser2net
  does. `readback_supported=False` gives stock `PortManager` behaviour instead: requests are
  echoed and state queries are never answered.
- Modem state (COS), by `modem_notify`:
  - "poll" (default, pyserial's PortManager): the state at connect, every change pushed at
    once, and every NOTIFY-MODEMSTATE poll answered.
  - "push", as ser2net 4.x does (observed through ser2net 4.3.11 relaying to this simulator):
    polls are never answered. When the client says WILL COM-PORT it sets the mask to all
    lines and reports all lines low, its placeholder before it has read the device, then the
    lines that are high; a client that never says WILL (pyserial's, when the server's DO
    comes first) gets mask 0: no modem state at all. SET-MODEMSTATE-MASK is answered with
    the last state the device reported, masked, and from then on a change is pushed only
    when its delta bit is in the mask (ser2net's rule: a mask of state bits alone, 0x10,
    hears no change at all).
  - "changes": as "push" at connect (all lines low: the placeholder), then no answer to the
    mask: the client hears of the lines only when one changes (a server that has not read
    its device, or one that ignores the mask).

Fault injection (named as on `hw_sim.cm108.SimCM108`): `unplug()` / `replug()`,
`set_carrier()`, `set_cos_stuck()`, `set_cos_flap()`, `set_ptt_no_follow()` (the RTS/DTR
outputs freeze: the radio's keyed state no longer follows what the client sets, and the
read-back shows it), and the serial server's own `set_answer_delay()` (a slow or congested
serial server: everything it sends leaves late, in order, while commands still act at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self, cast

from serial import rfc2217

__all__ = ["SimEvent", "SimState", "SimulatedSerialRadio"]

log = logging.getLogger(__name__)

_INPUTS = ("cts", "dsr", "cd", "ri")
_MODEM_BITS = {
    "cts": rfc2217.MODEMSTATE_MASK_CTS,
    "dsr": rfc2217.MODEMSTATE_MASK_DSR,
    "ri": rfc2217.MODEMSTATE_MASK_RI,
    "cd": rfc2217.MODEMSTATE_MASK_CD,
}
ModemNotify = Literal["poll", "push", "changes"]
_MAX_FLAP_HZ = 500.0
_COMMAND_TIMEOUT_S = 5.0
_SEND_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class SimEvent:
    """One change seen by the simulator."""

    t: float
    """time.monotonic() when it happened."""
    name: str
    """"rts", "dtr", "cts", "dsr", "cd", "ri", "keyed", "carrier" or "connected"."""
    value: bool


@dataclass(frozen=True, slots=True)
class SimState:
    """A consistent snapshot of the simulated interface."""

    plugged: bool
    connected: bool
    connections: int
    """Client connections accepted so far."""
    rts: bool
    dtr: bool
    keyed: bool
    """The radio transmits (its PTT line at the keyed level)."""
    carrier: bool
    """The radio's COS output is active (faults applied)."""
    cts: bool
    dsr: bool
    cd: bool
    ri: bool
    modem_mask: int | None = None
    """The client's last SET-MODEMSTATE-MASK on this connection, None before any."""
    modem_polls: int = 0
    """NOTIFY-MODEMSTATE polls the client sent on this connection."""


@dataclass(slots=True)
class _Watcher:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[SimState]
    predicate: Callable[[SimState], bool]


class _SimPort:
    """The serial port object PortManager drives. Called with the simulator lock held."""

    def __init__(self, sim: SimulatedSerialRadio) -> None:
        self._sim = sim
        self.baudrate = 9600
        self.bytesize = 8
        self.parity = "N"
        self.stopbits = 1
        self.xonxoff = False
        self.rtscts = False
        self.break_condition = False

    @property
    def rts(self) -> bool:
        return self._sim._levels["rts"]

    @rts.setter
    def rts(self, value: bool) -> None:
        self._sim._drive_output("rts", value)

    @property
    def dtr(self) -> bool:
        return self._sim._levels["dtr"]

    @dtr.setter
    def dtr(self, value: bool) -> None:
        self._sim._drive_output("dtr", value)

    @property
    def cts(self) -> bool:
        return self._sim._levels["cts"]

    @property
    def dsr(self) -> bool:
        return self._sim._levels["dsr"]

    @property
    def cd(self) -> bool:
        return self._sim._levels["cd"]

    @property
    def ri(self) -> bool:
        return self._sim._levels["ri"]

    def reset_input_buffer(self) -> None:
        pass

    def reset_output_buffer(self) -> None:
        pass


class _Connection:
    """What PortManager writes to: the connected client socket."""

    def __init__(self, sim: SimulatedSerialRadio) -> None:
        self._sim = sim

    def write(self, data: bytes) -> None:
        self._sim._send(data)


class _Manager(rfc2217.PortManager):
    """PortManager that answers DTR/RTS state requests and reports the line actually set,
    and reports the modem state as `modem_notify` says (the module docstring)."""

    def __init__(self, sim: SimulatedSerialRadio) -> None:
        self._sim = sim
        self._connect_reported = False
        self._report = 0  # ser2net's last modem state: the device's last report, 0 before one
        super().__init__(cast(Any, _SimPort(sim)), cast(Any, _Connection(sim)))
        if sim._modem_notify != "poll":
            # As ser2net: the mask is 0 (nothing pushed) until the client says WILL COM-PORT;
            # its DO COM-PORT (accepting our WILL) sets nothing.
            self.modemstate_mask = 0
            for option in cast(Any, self)._telnet_options:  # not in pyserial's stubs
                if option.name == "we-RFC2217":
                    option.activation_callback = _nothing

    def _lines(self) -> int:
        levels = self._sim._levels
        return sum(bit for line, bit in _MODEM_BITS.items() if levels[line])

    def _notify(self, state: int) -> None:
        self.rfc2217_send_subnegotiation(rfc2217.SERVER_NOTIFY_MODEMSTATE, bytes([state]))

    def _push(self, lines: int, previous: int) -> None:
        """ser2net's rule: the state with the delta bits of the lines that changed, sent only
        when one of those delta bits is in the client's mask."""
        report = lines | ((lines ^ previous) >> 4)
        self._report = report
        if report & self.modemstate_mask & 0x0F:
            self._notify(report & self.modemstate_mask)

    def _client_ok(self) -> None:
        if self._sim._modem_notify == "poll":
            super()._client_ok()  # type: ignore[misc]
            return
        # The client said WILL COM-PORT: ser2net sets the mask to all lines and reports.
        self._client_is_rfc2217 = True
        if self._connect_reported:
            return
        self._connect_reported = True
        self.modemstate_mask = 0xFF
        lines = self._lines()
        self._notify(0)  # ser2net's placeholder, sent before it has read the device
        if self._sim._modem_notify == "push":
            self._push(lines, 0)  # then the device's first report
        self.last_modemstate = lines

    def check_modem_lines(self, force_notification: bool = False) -> None:
        if self._sim._modem_notify == "poll":
            super().check_modem_lines(force_notification)
            return
        lines = self._lines()
        previous = self.last_modemstate or 0
        self.last_modemstate = lines
        if lines != previous:
            self._push(lines, previous)  # the mask decides (0 until WILL or SET-MODEMSTATE-MASK)

    def _telnet_process_subnegotiation(self, suboption: bytes) -> None:
        if suboption[0:2] == rfc2217.COM_PORT_OPTION + rfc2217.NOTIFY_MODEMSTATE:
            self._sim._modem_polls += 1
            self._sim._changed()  # waiters on the state see it
            if self._sim._modem_notify != "poll":
                return  # never answered, as by ser2net
        if (
            suboption[0:2] == rfc2217.COM_PORT_OPTION + rfc2217.SET_MODEMSTATE_MASK
            and len(suboption) >= 3
        ):
            self._sim._modem_mask = suboption[2]
            self._sim._changed()
            if self._sim._modem_notify != "poll":
                self.modemstate_mask = suboption[2]
                if self._sim._modem_notify == "push":
                    self._notify(self._report & self.modemstate_mask)
                return
        if (
            self._sim._readback_supported
            and suboption[0:2] == rfc2217.COM_PORT_OPTION + rfc2217.SET_CONTROL
            and len(suboption) >= 3
        ):
            answer = self._sim._set_control(suboption[2])
            if answer is not None:
                self.rfc2217_send_subnegotiation(rfc2217.SERVER_SET_CONTROL, bytes([answer]))
                return
        super()._telnet_process_subnegotiation(suboption)  # type: ignore[misc]


class SimulatedSerialRadio:
    """A radio interface behind an RFC 2217 server on 127.0.0.1 (see the module docstring)."""

    def __init__(
        self,
        *,
        port: int = 0,
        ptt_line: Literal["rts", "dtr"] = "rts",
        ptt_invert: bool = False,
        cos_line: Literal["cts", "dsr", "cd", "ri"] = "cd",
        cos_invert: bool = False,
        readback_supported: bool = True,
        modem_notify: ModemNotify = "poll",
    ) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port < 65536:
            raise ValueError(f"port must be 0 (any free port) or 1..65535, got {port!r}")
        if ptt_line not in ("rts", "dtr"):
            raise ValueError(f"ptt_line must be 'rts' or 'dtr', got {ptt_line!r}")
        if cos_line not in _INPUTS:
            raise ValueError(f"cos_line must be one of {', '.join(_INPUTS)}, got {cos_line!r}")
        if modem_notify not in ("poll", "push", "changes"):
            raise ValueError(f"modem_notify must be poll, push or changes, got {modem_notify!r}")
        for name, flag in (
            ("ptt_invert", ptt_invert),
            ("cos_invert", cos_invert),
            ("readback_supported", readback_supported),
        ):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be a bool, got {flag!r}")
        self._requested_port = port
        self._ptt_line = ptt_line
        self._ptt_invert = ptt_invert
        self._cos_line = cos_line
        self._cos_invert = cos_invert
        self._readback_supported = readback_supported
        self._modem_notify = modem_notify
        self._modem_mask: int | None = None  # this connection's, as the client set it
        self._modem_polls = 0

        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._levels = {
            "rts": False,
            "dtr": False,
            "cts": False,
            "dsr": False,
            "cd": False,
            "ri": False,
        }
        self._keyed = self._ptt_invert  # port closed: lines low
        self._carrier = False
        self._cos_stuck = False
        self._flap_half_period: float | None = None
        self._flap_level = False
        self._next_flap: float | None = None
        self._effective_carrier = False
        self._no_follow = False
        self._plugged = True
        self._connections = 0
        self._events: deque[SimEvent] = deque(maxlen=200_000)
        self._watchers: list[_Watcher] = []

        self._thread: threading.Thread | None = None
        self._stopping = False
        self._bound_port: int | None = None
        self._listener: socket.socket | None = None
        self._client: socket.socket | None = None
        self._manager: _Manager | None = None
        self._send_failed = False
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._answer_delay = 0.0
        self._outgoing: deque[tuple[float, bytes]] = deque()  # (due time, data)
        self._commands: list[tuple[Callable[[], None], threading.Event]] = []
        with self._lock:
            self._update_cos()

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Bind and start serving. Raises RuntimeError if already started."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("simulator already started")
            listener = self._listen(self._requested_port)
            self._bound_port = listener.getsockname()[1]
            self._listener = listener if self._plugged else None
            if not self._plugged:
                listener.close()
            self._wake_r, self._wake_w = socket.socketpair()
            self._stopping = False
            self._thread = threading.Thread(
                target=self._serve, name=f"sim-serial-radio:{self._bound_port}", daemon=True
            )
            self._thread.start()
        log.debug("serial radio simulator on %s", self.url)

    def stop(self) -> None:
        """Drop the client, stop serving and release the port. Safe to call twice."""
        thread = self._thread
        if thread is None:
            return

        def command() -> None:
            self._stopping = True
            self._drop_client()
            self._close_listener()

        self._call(command)
        thread.join(_COMMAND_TIMEOUT_S)
        with self._lock:
            self._thread = None
            for sock in (self._wake_r, self._wake_w):
                if sock is not None:
                    sock.close()
            self._wake_r = self._wake_w = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound TCP port (after start())."""
        if self._bound_port is None:
            raise RuntimeError("simulator not started")
        return self._bound_port

    @property
    def url(self) -> str:
        return f"rfc2217://127.0.0.1:{self.port}"

    # -- observing ------------------------------------------------------------------------

    def state(self) -> SimState:
        with self._lock:
            return self._snapshot()

    @property
    def keyed(self) -> bool:
        return self._keyed

    def events(self, *, since: float | None = None, name: str | None = None) -> list[SimEvent]:
        """Logged changes, oldest first, optionally from time `since` on and of one name."""
        with self._lock:
            return [
                e
                for e in self._events
                if (since is None or e.t >= since) and (name is None or e.name == name)
            ]

    def clear_events(self) -> None:
        with self._lock:
            self._events.clear()

    def wait_blocking(self, predicate: Callable[[SimState], bool], timeout_s: float) -> SimState:
        """Block until predicate(state) holds. Raises TimeoutError. Not from an event loop."""
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self._snapshot()), timeout_s):
                raise TimeoutError(f"condition not met within {timeout_s:g} s: {self._snapshot()}")
            return self._snapshot()

    async def wait(self, predicate: Callable[[SimState], bool], timeout_s: float) -> SimState:
        """Wait until predicate(state) holds. Raises TimeoutError."""
        loop = asyncio.get_running_loop()
        with self._lock:
            state = self._snapshot()
            if predicate(state):
                return state
            watcher = _Watcher(loop, loop.create_future(), predicate)
            self._watchers.append(watcher)
        try:
            return await asyncio.wait_for(watcher.future, timeout_s)
        except TimeoutError:
            raise TimeoutError(
                f"condition not met within {timeout_s:g} s: {self.state()}"
            ) from None
        finally:
            with self._lock:
                if watcher in self._watchers:
                    self._watchers.remove(watcher)

    async def wait_keyed(self, keyed: bool = True, *, timeout_s: float = 5.0) -> SimState:
        return await self.wait(lambda s: s.keyed == keyed, timeout_s)

    # -- driving the radio and injecting faults ---------------------------------------------

    def set_carrier(self, present: bool) -> None:
        """The receiver hears (or stops hearing) a carrier."""
        with self._lock:
            self._carrier = bool(present)
            self._update_cos()

    def set_cos_stuck(self, stuck: bool) -> None:
        """COS output stuck active whatever the receiver hears."""
        with self._lock:
            self._cos_stuck = bool(stuck)
            self._update_cos()

    def set_cos_flap(self, hz: float | None) -> None:
        """COS toggles at `hz` full on/off cycles per second (None or 0 stops)."""
        if hz is not None and (not math.isfinite(hz) or not 0 <= hz <= _MAX_FLAP_HZ):
            raise ValueError(f"hz must be in 0..{_MAX_FLAP_HZ:g}, got {hz!r}")
        with self._lock:
            if hz:
                self._flap_half_period = 0.5 / hz
                if self._next_flap is None:
                    self._flap_level = self._effective_carrier
                    self._next_flap = time.monotonic() + self._flap_half_period
            else:
                self._flap_half_period = None
                self._next_flap = None
            self._update_cos()
            self._wake()

    def set_ptt_no_follow(self, enabled: bool) -> None:
        """Freeze RTS/DTR at their present levels (a stuck output): the radio's keyed state
        stops following the client, and read-back reports the frozen levels. A frozen line
        stays frozen through disconnects too, until the fault is cleared and set again."""
        with self._lock:
            self._no_follow = bool(enabled)

    def set_answer_delay(self, seconds: float) -> None:
        """Hold everything the server sends (answers, modem state) for `seconds` (0 stops):
        a slow or congested serial server. Commands from the client still act on arrival."""
        if not math.isfinite(seconds) or not 0 <= seconds <= 60:
            raise ValueError(f"seconds must be in 0..60, got {seconds!r}")
        with self._lock:
            self._answer_delay = float(seconds)
            self._wake()

    def unplug(self) -> None:
        """Pull the cable: drop the connection and refuse new ones until replug()."""

        def command() -> None:
            self._plugged = False
            self._drop_client()
            self._close_listener()

        self._call(command)

    def replug(self) -> None:
        """Accept connections again, on the same port."""

        def command() -> None:
            self._plugged = True
            if self._listener is None and self._bound_port is not None and not self._stopping:
                self._listener = self._listen(self._bound_port)

        self._call(command)

    # -- internals (the lock is held where state is touched) --------------------------------

    def _snapshot(self) -> SimState:
        lv = self._levels
        return SimState(
            plugged=self._plugged,
            connected=self._client is not None,
            connections=self._connections,
            rts=lv["rts"],
            dtr=lv["dtr"],
            keyed=self._keyed,
            carrier=self._effective_carrier,
            cts=lv["cts"],
            dsr=lv["dsr"],
            cd=lv["cd"],
            ri=lv["ri"],
            modem_mask=self._modem_mask,
            modem_polls=self._modem_polls,
        )

    def _log(self, name: str, value: bool) -> None:
        self._events.append(SimEvent(time.monotonic(), name, value))

    def _changed(self) -> None:
        self._cond.notify_all()
        if not self._watchers:
            return
        state = self._snapshot()
        for watcher in list(self._watchers):
            if watcher.future.done():
                self._watchers.remove(watcher)
                continue
            try:
                met = watcher.predicate(state)
            except Exception as exc:  # the waiter gets it, the serving thread carries on
                self._watchers.remove(watcher)
                with contextlib.suppress(RuntimeError):
                    watcher.loop.call_soon_threadsafe(_fail, watcher.future, exc)
                continue
            if met:
                self._watchers.remove(watcher)
                with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits
                    watcher.loop.call_soon_threadsafe(_resolve, watcher.future, state)

    def _set_level(self, name: str, value: bool) -> None:
        if self._levels[name] == value:
            return
        self._levels[name] = value
        self._log(name, value)
        keyed = self._levels[self._ptt_line] != self._ptt_invert
        if keyed != self._keyed:
            self._keyed = keyed
            self._log("keyed", keyed)
        self._changed()

    def _drive_output(self, name: str, value: bool) -> None:
        if not self._no_follow:
            self._set_level(name, bool(value))

    def _set_control(self, value: int) -> int | None:
        """SET-CONTROL DTR/RTS handling with read-back; None for anything else."""
        for line, (req, on, off) in (("dtr", (7, 8, 9)), ("rts", (10, 11, 12))):
            if value in (req, on, off):
                if value != req:
                    self._drive_output(line, value == on)
                return on if self._levels[line] else off
        return None

    def _update_cos(self) -> None:
        if self._cos_stuck:
            effective = True
        elif self._flap_half_period is not None:
            effective = self._flap_level
        else:
            effective = self._carrier
        if effective != self._effective_carrier:
            self._effective_carrier = effective
            self._log("carrier", effective)
        level = effective != self._cos_invert
        if self._levels[self._cos_line] != level:
            self._set_level(self._cos_line, level)
            if self._manager is not None:
                self._manager.check_modem_lines()
        else:
            self._changed()

    def _send(self, data: bytes) -> None:
        with self._lock:
            if self._client is None:
                return
            if self._answer_delay > 0 or self._outgoing:
                self._outgoing.append((time.monotonic() + self._answer_delay, data))
                self._wake()
                return
            try:
                self._client.sendall(data)
            except OSError:
                self._send_failed = True  # the serving thread drops the client

    def _send_due(self) -> None:
        """Send the held data whose time has come (serving thread)."""
        with self._lock:
            now = time.monotonic()
            while self._outgoing and self._outgoing[0][0] <= now and self._client is not None:
                _, data = self._outgoing.popleft()
                try:
                    self._client.sendall(data)
                except OSError:
                    self._send_failed = True
                    self._drop_client()

    def _wake(self) -> None:
        if self._wake_w is not None:
            with contextlib.suppress(OSError):
                self._wake_w.send(b"x")

    def _call(self, command: Callable[[], None]) -> None:
        """Run `command` on the serving thread (it owns the sockets) and wait for it."""
        with self._lock:
            thread = self._thread
            if thread is None or thread is threading.current_thread() or not thread.is_alive():
                command()
                return
            done = threading.Event()
            self._commands.append((command, done))
            self._wake()
        if not done.wait(_COMMAND_TIMEOUT_S):
            raise RuntimeError("simulator thread did not respond")

    def _listen(self, port: int) -> socket.socket:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(("127.0.0.1", port))
            listener.listen(4)
        except OSError:
            listener.close()
            raise
        return listener

    def _close_listener(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def _drop_client(self) -> None:
        """The connection ends: the server closes its port, and closing drops RTS/DTR."""
        with self._lock:
            if self._client is None:
                return
            with contextlib.suppress(OSError):
                self._client.shutdown(socket.SHUT_RDWR)
            self._client.close()
            self._client = None
            self._manager = None
            self._send_failed = False
            self._outgoing.clear()
            self._log("connected", False)
            if not self._no_follow:
                self._set_level("rts", False)
                self._set_level("dtr", False)
            self._changed()

    def _accept(self, listener: socket.socket) -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with self._lock:
            if self._client is not None or not self._plugged:
                conn.close()  # one client at a time, like a real serial port
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.settimeout(_SEND_TIMEOUT_S)
            self._client = conn
            self._connections += 1
            self._modem_mask, self._modem_polls = None, 0
            self._log("connected", True)
            self._changed()
            self._manager = _Manager(self)  # starts the Telnet negotiation

    def _receive(self, client: socket.socket) -> None:
        try:
            data = client.recv(4096)
        except OSError:
            data = b""
        with self._lock:
            if self._client is not client:
                return
            if data and self._manager is not None:
                for _ in self._manager.filter(data):
                    pass  # serial data: the radio's data lines are not connected
            if not data or self._send_failed:
                self._drop_client()

    def _flap(self) -> None:
        with self._lock:
            if self._next_flap is None or self._flap_half_period is None:
                return
            now = time.monotonic()
            if now < self._next_flap:
                return
            self._flap_level = not self._flap_level
            self._next_flap = max(self._next_flap + self._flap_half_period, now)
            self._update_cos()

    def _serve(self) -> None:
        try:
            self._serve_loop()
        except Exception:
            log.exception("serial radio simulator thread died")
            raise

    def _serve_loop(self) -> None:
        while True:
            with self._lock:
                commands, self._commands = self._commands, []
            for command, done in commands:
                try:
                    command()
                except Exception:
                    log.exception("simulator command failed")
                finally:
                    done.set()
            with self._lock:
                if self._stopping:
                    return
                listener, client, wake = self._listener, self._client, self._wake_r
                timers = [self._next_flap, self._outgoing[0][0] if self._outgoing else None]
                next_timer = min((t for t in timers if t is not None), default=None)
            assert wake is not None
            readable: list[socket.socket] = [wake]
            if listener is not None:
                readable.append(listener)
            if client is not None:
                readable.append(client)
            timeout = None if next_timer is None else max(0.0, next_timer - time.monotonic())
            ready, _, _ = select.select(readable, [], [], timeout)
            if wake in ready:
                with contextlib.suppress(OSError):
                    wake.recv(4096)
            if listener is not None and listener in ready and listener is self._listener:
                self._accept(listener)
            if client is not None and client in ready:
                self._receive(client)
            self._flap()
            self._send_due()


def _nothing() -> None:
    pass


def _resolve(future: asyncio.Future[SimState], state: SimState) -> None:
    if not future.done():
        future.set_result(state)


def _fail(future: asyncio.Future[SimState], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
