"""Radio interface on serial modem-control lines: PTT on RTS/DTR, COS on CTS/DSR/CD/RI.

Works with anything pyserial's `serial_for_url` opens: a local UART (`/dev/ttyUSB0`,
`/dev/serial/by-id/...`) or a remote port served over RFC 2217 (`rfc2217://host:port`).

Safety, and what the transport allows:

- pyserial asserts RTS and DTR when it opens a port unless they are set before `open()`.
  We preset both output lines (PTT lines to the unkeyed level, an unused output line
  deasserted), so the first line commands pyserial sends carry unkeyed levels. Over RFC 2217
  they are sent right after Telnet negotiation, before baud rate and flow control.
- A local UART on Linux: the kernel itself asserts RTS and DTR inside `open()`, for the few
  microseconds until pyserial clears them. No user-space code can avoid that glitch; a PTT
  circuit that keys on microsecond pulses needs an RC delay.
- When a port closes (or the process dies, or an RFC 2217 server closes its port because the
  connection dropped), the OS drops RTS and DTR (termios HUPCL). With normal polarity that
  unkeys: the safe direction. With inverted PTT a dropped line means KEYED. For local ports we
  set HUPCL for normal polarity and clear it for inverted polarity, so a clean close leaves an
  inverted line at the unkeyed level; a never-opened port, an unplugged adapter or a remote
  server that closes its port still key an inverted radio. Prefer normal polarity wiring.
- PTT read-back: a local UART cannot read back its own outputs (`ptt` is None). RFC 2217 lets
  the client request the DTR/RTS signal state (SET-CONTROL values 7 and 10); servers that
  answer (ser2net reads the line with TIOCMGET) give a real read-back. pyserial's client has no
  call for it and its own answer check discards the value, so the RFC 2217 port below tracks
  SET-CONTROL answers itself. Whether the server answers is probed at `open()`.
- COS freshness: pyserial's client only caches the NOTIFY-MODEMSTATE the server pushes, and
  its `poll_modem` option sleeps 50 ms per read. Here each `read_lines()` sends a modem-state
  poll plus the read-back (or a harmless flow-control query) in one write and waits for the
  answers: the server handles requests in order, so everything it knew before answering has
  reached us. One round trip per read, no sleeping, and a dead server is noticed within
  `io_timeout_s` even when TCP has not noticed yet.
- COS from servers that never answer a poll: ser2net 4.x ignores NOTIFY-MODEMSTATE requests
  (RFC 2217 option 7) and only pushes changes, and only changes whose delta bit is in the
  client's modem-state mask. It sets a default mask (all lines) only when the client says
  WILL COM-PORT, and pyserial's client skips that WILL whenever the server's DO COM-PORT
  arrives first (its reader thread marks the option active before `open()` sends it): then
  the mask stays 0 and ser2net sends no modem state at all, for the whole connection (9 of 20
  opens through ser2net 4.3.11 on this machine). So `open()` sends SET-MODEMSTATE-MASK
  (option 11) with the COS line's state and delta bits; ser2net answers it with the line's
  state and pushes every change from then on. Whatever the server sends, pushed or answered,
  is the COS state; polls still go out for servers that answer them.
- COS is None (unknown) until the server has reported the modem lines after that mask went
  out: never a guessed False. Reports that came before are dropped, because ser2net sends one
  at connect before it has read its device (observed: all lines low with carrier present on
  CTS, the real state a moment later). A server that sends nothing leaves COS unknown, which
  the gateway raises as a fault. What no client can tell: ser2net answers the mask with the
  last state its device reported, which is that same all-low placeholder if the device has
  reported nothing yet, and a device without modem lines (ser2net on a pty) reads all low.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import threading
import urllib.parse
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypeVar

import serial
from serial import rfc2217

from drivers.errors import DeviceLost, DeviceUnavailable
from drivers.radio import RadioLines

try:
    import termios
except ImportError:  # pragma: no cover - not on Windows
    termios = None  # type: ignore[assignment]

__all__ = ["CosLine", "PttLine", "SerialRadio"]

log = logging.getLogger(__name__)

PttLine = Literal["rts", "dtr"]
CosLine = Literal["cts", "dsr", "cd", "ri"]

_PTT_LINES: frozenset[str] = frozenset({"rts", "dtr"})
_COS_LINES: frozenset[str] = frozenset({"cts", "dsr", "cd", "ri"})

# RFC 2217 SET-CONTROL values.
_REQ_FLOW = 0
_REQ = {"dtr": 7, "rts": 10}
_ON = {"dtr": 8, "rts": 11}
_OFF = {"dtr": 9, "rts": 12}
# What a SERVER-SET-CONTROL answer says: (kind, asserted). Flow answers only prove liveness.
_ANSWERS: dict[int, tuple[str, bool]] = {
    8: ("dtr", True),
    9: ("dtr", False),
    11: ("rts", True),
    12: ("rts", False),
    1: ("flow", True),
    2: ("flow", True),
    3: ("flow", True),
}
_MODEM_BITS = {
    "cts": rfc2217.MODEMSTATE_MASK_CTS,
    "dsr": rfc2217.MODEMSTATE_MASK_DSR,
    "ri": rfc2217.MODEMSTATE_MASK_RI,
    "cd": rfc2217.MODEMSTATE_MASK_CD,
}
_MODEM_DELTAS = {
    "cts": rfc2217.MODEMSTATE_MASK_CTS_CHANGE,
    "dsr": rfc2217.MODEMSTATE_MASK_DSR_CHANGE,
    "ri": rfc2217.MODEMSTATE_MASK_RI_CHANGE,
    "cd": rfc2217.MODEMSTATE_MASK_CD_CHANGE,
}
_PROBE_TIMEOUT_S = 0.5
"""How long open() waits for a server that may not answer read-back requests at all."""
_CLOSE_TIMEOUT_S = 5.0
_MAX_SUBNEGOTIATION = 256
"""Longest subnegotiation kept, in bytes (RFC 2217's own are a few); a longer one is dropped."""

_T = TypeVar("_T")


def _subnegotiation(option: bytes, value: int | None = None) -> bytes:
    payload = b"" if value is None else bytes([value])  # our values never need IAC escaping
    iac, sb, se = rfc2217.IAC, rfc2217.SB, rfc2217.SE
    return iac + sb + rfc2217.COM_PORT_OPTION + option + payload + iac + se


class _ProtocolError(Exception):
    """The server broke the protocol in a way that leaves its answers unusable."""


class _TelnetParser:
    """Splits what an RFC 2217 server sends into Telnet commands, in bounded memory.

    Data bytes are dropped (SerialRadio reads none). A subnegotiation longer than
    _MAX_SUBNEGOTIATION is dropped whole, IAC SE outside one is ignored, and IAC SB inside
    one starts it afresh (as pyserial does).
    """

    def __init__(
        self,
        *,
        negotiate: Callable[[bytes, bytes], None],
        command: Callable[[bytes], None],
        subnegotiation: Callable[[bytes], None],
    ) -> None:
        self._negotiate = negotiate
        self._command = command
        self._subnegotiation = subnegotiation
        self._after_iac = False
        self._verb: bytes | None = None  # WILL/WONT/DO/DONT awaiting its option byte
        self._sub: bytearray | None = None
        self._sub_too_long = False
        self._warned = False

    def feed(self, data: bytes) -> None:
        i = 0
        while i < len(data):
            if self._verb is not None:
                verb, self._verb = self._verb, None
                self._negotiate(verb, data[i : i + 1])
                i += 1
            elif self._after_iac:
                self._after_iac = False
                self._iac_command(data[i : i + 1])
                i += 1
            else:
                end = data.find(rfc2217.IAC, i)
                self._text(data[i : len(data) if end < 0 else end])
                if end < 0:
                    return
                self._after_iac = True
                i = end + 1

    def _iac_command(self, byte: bytes) -> None:
        if byte == rfc2217.IAC:
            self._text(byte)
        elif byte == rfc2217.SB:
            self._sub, self._sub_too_long = bytearray(), False
        elif byte == rfc2217.SE:
            sub, self._sub = self._sub, None
            if sub is not None and not self._sub_too_long:
                self._subnegotiation(bytes(sub))
        elif byte in (rfc2217.WILL, rfc2217.WONT, rfc2217.DO, rfc2217.DONT):
            self._verb = byte
        else:
            self._command(byte)

    def _text(self, chunk: bytes) -> None:
        if self._sub is None or self._sub_too_long:
            return
        if len(self._sub) + len(chunk) > _MAX_SUBNEGOTIATION:
            self._sub_too_long = True
            self._sub.clear()
            if not self._warned:  # once per connection: a flood of them is one problem
                self._warned = True
                log.warning(
                    "RFC 2217 server sent a subnegotiation over %d bytes; dropped",
                    _MAX_SUBNEGOTIATION,
                )
        else:
            self._sub += chunk


class _Rfc2217Port(rfc2217.Serial):
    """pyserial's RFC 2217 client, with SET-CONTROL answers tracked and waits that do not sleep.

    pyserial 3.5 waits for every acknowledgement with `time.sleep(0.05)` polls and keeps only
    pass/fail of the last SET-CONTROL. The server answers SET-CONTROL requests in order, so we
    number them: each write claims the answer numbers after those already due, under the write
    lock (numbering order is wire order), and the reader thread counts answers as they come
    and wakes waiters. Two threads may then have requests out at once (the event loop's PTT
    command and the I/O thread's read) and each waits for its own answers, not for whichever
    comes next. Private pyserial attributes are reached through `_raw` (they are not in the
    type stubs); pyserial is pinned below 4.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._answer_count = 0  # answers received
        self._answers_due = 0  # answers claimed by requests sent
        self._answers: deque[tuple[int, str, bool]] = deque(maxlen=64)  # (number, kind, level)
        self._link_lost = False
        self._nowait_writes = True
        self._modem: int | None = None  # the last modem state reported since our mask
        self._modem_reports = False  # whether reports count yet (our mask has gone out)
        # Event-loop futures waiting for an answer count: (count, loop, future).
        self._loop_waiters: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        super().__init__()

    @property
    def _raw(self) -> Any:
        return self

    # -- hooks into pyserial ------------------------------------------------------------

    def _telnet_read_loop(self) -> None:
        # Replaces pyserial's loop, which buffers a subnegotiation until IAC SE and every data
        # byte without bound, and dies on an IAC SE outside a subnegotiation with the port left
        # open and its waiters waiting. Whatever ends this loop loses the link.
        sock = self._raw._socket
        parser = _TelnetParser(
            negotiate=self._raw._telnet_negotiate_option,
            command=self._raw._telnet_process_command,
            subnegotiation=self._telnet_process_subnegotiation,
        )
        try:
            while self.is_open:
                try:
                    data = sock.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if not data:
                    break
                parser.feed(data)
        except Exception as exc:  # a protocol violation, or pyserial failing on one
            log.warning("%s: dropping the connection: %s", self.portstr, exc)
        finally:
            self._raw._read_buffer.put(None)  # pyserial's read() waits on it
            with self._cond:
                self._link_lost = True
                self._cond.notify_all()
                self._wake_loop_waiters()

    def _telnet_process_subnegotiation(self, suboption: bytes) -> None:
        if (
            suboption[0:2] == rfc2217.COM_PORT_OPTION + rfc2217.SERVER_NOTIFY_MODEMSTATE
            and len(suboption) >= 3
        ):
            with self._cond:
                if self._modem_reports:
                    self._modem = suboption[2]
        if suboption[0:2] == rfc2217.COM_PORT_OPTION + rfc2217.SERVER_SET_CONTROL:
            # Not passed on: pyserial would compare it with a request it never sent.
            with self._cond:
                if self.waits_for_answers and self._answer_count >= self._answers_due:
                    # Answers carry no request number: one too many and every later answer
                    # would be taken for the one before (a PTT acknowledged, never applied).
                    raise _ProtocolError("SET-CONTROL answer to no request")
                self._answer_count += 1
                meaning = _ANSWERS.get(suboption[2]) if len(suboption) >= 3 else None
                if meaning is not None:
                    self._answers.append((self._answer_count, *meaning))
                self._cond.notify_all()
                self._wake_loop_waiters()
            return
        if suboption[0:1] == rfc2217.COM_PORT_OPTION and any(
            item.ack_option == suboption[1:2] and item.value is None
            for item in self._raw._rfc2217_options.values()
        ):
            return  # an answer to a setting never requested: pyserial would fail on it
        super()._telnet_process_subnegotiation(suboption)  # type: ignore[misc]
        with self._cond:
            self._cond.notify_all()  # a purge or port-setting acknowledgement may be awaited

    def _reconfigure_port(self) -> None:
        # Line levels first: pyserial would send them only after baud rate and flow control.
        self._set_lines_now()
        super()._reconfigure_port()  # type: ignore[misc]

    def rfc2217_set_control(self, value: bytes) -> None:
        self.control([value[0]], self._raw._network_timeout, f"SET-CONTROL {value[0]}")

    def rfc2217_send_purge(self, value: bytes) -> None:
        item = self._raw._rfc2217_options["purge"]
        item.set(value)
        if not self.wait_until(lambda: item.state != rfc2217.REQUESTED, self._raw._network_timeout):
            raise serial.SerialException("no answer to PURGE-DATA")

    def close(self) -> None:
        """Close without pyserial's 0.3 s sleep "for quick reconnects"."""
        self.is_open = False
        sock = self._raw._socket
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked writer, which lets go the lock
            # Under the write lock: `send_control_nowait` writes to the bare descriptor, whose
            # number must not be closed (and perhaps reused by another file) under it.
            with self._raw._write_lock:
                self._nowait_writes = False
                sock.close()
        thread = self._raw._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(2.0)
        self._raw._thread = None
        self._raw._socket = None

    # -- what SerialRadio uses ----------------------------------------------------------

    @property
    def waits_for_answers(self) -> bool:
        """False with the `ign_set_control` URL option (servers that answer nonsense)."""
        return not self._raw._ignore_set_control_answer

    @property
    def modem_state(self) -> int | None:
        """The modem state the server last reported after `modem_mask` was sent, or None."""
        with self._cond:
            return self._modem

    def send_control(
        self, values: Sequence[int], *, poll_modem: bool = False, modem_mask: int | None = None
    ) -> int:
        """Send SET-CONTROL values (and a modem-state poll) in one write. Returns the number
        of answers due before these, for `wait_answers` and `answers_in`.

        `modem_mask` first sends SET-MODEMSTATE-MASK with it: from then on the modem state
        the server reports counts, and what it reported before is forgotten.
        """
        data = b"".join(_subnegotiation(rfc2217.SET_CONTROL, v) for v in values)
        if poll_modem:
            data = _subnegotiation(rfc2217.NOTIFY_MODEMSTATE) + data
        if modem_mask is not None:
            data = _subnegotiation(rfc2217.SET_MODEMSTATE_MASK, modem_mask) + data
        with self._raw._write_lock:  # what pyserial's _internal_raw_write does, plus the claim
            start = self._claim_answers(len(values))
            sock = self._raw._socket
            if sock is None:
                raise serial.SerialException("port closed")
            if modem_mask is not None:
                with self._cond:
                    self._modem, self._modem_reports = None, True
            try:
                sock.sendall(data)
            except OSError as exc:
                raise serial.SerialException(f"write failed: {exc}") from exc
        return start

    def _claim_answers(self, count: int) -> int:
        """Number the answers to `count` requests about to be written (write lock held)."""
        with self._cond:
            if self._link_lost:
                raise serial.SerialException("connection lost")
            start = self._answers_due
            if self.waits_for_answers:
                self._answers_due += count
            return start

    def _unclaim_answers(self, count: int) -> None:
        """Undo the last `_claim_answers(count)` (write lock held), its requests unsent."""
        with self._cond:
            if self.waits_for_answers:
                self._answers_due -= count

    def forget_unanswered(self) -> None:
        """After a timed-out wait: the server will not answer what is still due (a server
        that ignores some requests). Without this every later wait would end one early."""
        with self._cond:
            self._answers_due = self._answer_count

    def send_control_nowait(self, values: Sequence[int]) -> int | None:
        """Send SET-CONTROL values from a thread that must never block (the event loop).

        Returns the number of answers due before these (as `send_control` does), or None,
        having sent nothing, when sending could block: another write holds the lock, the socket
        buffer is full, or `stop_nowait_writes` was called.
        """
        lock = self._raw._write_lock
        if not lock.acquire(blocking=False):
            return None
        try:
            sock = self._raw._socket
            # pyserial opens the socket with a timeout, so its descriptor is non-blocking.
            if not self._nowait_writes or sock is None or sock.gettimeout() is None:
                return None
            data = b"".join(_subnegotiation(rfc2217.SET_CONTROL, v) for v in values)
            # Claimed before the write (under the lock: wire order), as the answer may come
            # back before this thread runs again; an answer beyond those claimed is an error.
            start = self._claim_answers(len(values))
            try:
                written = os.write(sock.fileno(), data)
            except BlockingIOError:
                self._unclaim_answers(len(values))  # nothing went out
                return None
            except OSError as exc:
                raise serial.SerialException(f"write failed: {exc}") from exc
            if written < len(data):
                # Only a server that has stopped reading leaves so little room. Half a
                # command is on the wire: drop the connection rather than finish it late
                # (the server then closes its port, which drops the lines).
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                raise serial.SerialException("socket buffer full: the server is not reading")
            return start
        finally:
            lock.release()

    def answers_future(self, start: int, count: int) -> asyncio.Future[None]:
        """A future of the running event loop, done once the `count` answers after `start`
        arrived; it fails with SerialException if the connection is lost first."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._cond:
            self._loop_waiters.append((start + count, loop, future))
            self._wake_loop_waiters()
        return future

    def _wake_loop_waiters(self) -> None:
        """Hand finished answer waits to their loops. Called with `_cond` held."""
        pending = []
        for target, loop, future in self._loop_waiters:
            if future.done():  # cancelled by a timeout
                continue
            if self._answer_count >= target:
                error = None
            elif self._link_lost:
                error = "connection lost"
            else:
                pending.append((target, loop, future))
                continue
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(_resolve, future, error)
        self._loop_waiters = pending

    def stop_nowait_writes(self) -> None:
        """From now on `send_control_nowait` sends nothing: writes made before this returns
        are on the wire ahead of any later write (the unkey on close)."""
        with self._raw._write_lock:
            self._nowait_writes = False

    def wait_answers(self, start: int, count: int, timeout: float) -> bool:
        """Wait until the `count` answers after `start` arrived. False on timeout."""
        return self.wait_until(lambda: self.all_answered(start, count), timeout)

    def answers_in(self, start: int, count: int) -> dict[str, bool]:
        """What the `count` answers after `start` said (those received), by kind ("rts",
        "dtr", "flow"); a later answer of a kind wins."""
        with self._cond:
            return {
                kind: level
                for number, kind, level in self._answers
                if start < number <= start + count
            }

    def _set_lines_now(self) -> None:
        values = [_ON["dtr"] if self.dtr else _OFF["dtr"], _ON["rts"] if self.rts else _OFF["rts"]]
        self.control(values, self._raw._network_timeout, "SET-CONTROL DTR/RTS")

    def control(self, values: Sequence[int], timeout: float, what: str) -> None:
        """Send SET-CONTROL values and wait for their answers (if the server gives any)."""
        start = self.send_control(values)
        if self.waits_for_answers and not self.wait_answers(start, len(values), timeout):
            raise serial.SerialException(f"no answer to {what}")

    def all_answered(self, start: int, count: int) -> bool:
        """Whether the `count` answers after `start` all arrived."""
        return self._answer_count >= start + count

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait for predicate() (run under the answer lock). False on timeout; raises
        SerialException when the connection is lost first."""
        with self._cond:
            met = self._cond.wait_for(lambda: predicate() or self._link_lost, timeout)
            if self._link_lost and not predicate():
                raise serial.SerialException("connection lost")
            return met


def _is_rfc2217(url: str) -> bool:
    return urllib.parse.urlsplit(url).scheme.lower() == "rfc2217"


def _check_timeout(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number of seconds, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return float(value)


class SerialRadio:
    """A radio interface on the modem-control lines of a serial port (implements RadioInterface).

    All blocking pyserial calls run in a single-thread executor per device, so they are
    serialized and never block the event loop. `can_read_back_ptt` is known after `open()`.
    """

    def __init__(
        self,
        *,
        url: str,
        ptt_lines: tuple[PttLine, ...],
        ptt_invert: bool = False,
        cos_line: CosLine | None = None,
        cos_invert: bool = False,
        open_timeout_s: float = 5.0,
        io_timeout_s: float = 1.0,
    ) -> None:
        if not isinstance(url, str) or not url.strip() or url != url.strip():
            raise ValueError(f"url must be a non-empty string without surrounding spaces: {url!r}")
        if not isinstance(ptt_lines, tuple) or not ptt_lines:
            raise ValueError(f"ptt_lines must be a non-empty tuple of rts/dtr, got {ptt_lines!r}")
        if not set(ptt_lines) <= _PTT_LINES or len(set(ptt_lines)) != len(ptt_lines):
            raise ValueError(f"ptt_lines must hold 'rts' and/or 'dtr' once each, got {ptt_lines!r}")
        if cos_line is not None and cos_line not in _COS_LINES:
            raise ValueError(f"cos_line must be one of cts, dsr, cd, ri or None, got {cos_line!r}")
        for name, flag in (("ptt_invert", ptt_invert), ("cos_invert", cos_invert)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be a bool, got {flag!r}")
        self._open_timeout_s = _check_timeout("open_timeout_s", open_timeout_s)
        self._io_timeout_s = _check_timeout("io_timeout_s", io_timeout_s)
        if _is_rfc2217(url):
            parts = urllib.parse.urlsplit(url)
            try:
                port_number = parts.port
            except ValueError:
                port_number = None
            if not parts.hostname or port_number is None:
                raise ValueError(f"an RFC 2217 url needs a host and a port: {url!r}")
        else:
            try:
                serial.serial_for_url(url, do_not_open=True)
            except (ValueError, serial.SerialException) as exc:
                raise ValueError(f"pyserial cannot handle url {url!r}: {exc}") from None
        self._url = url
        self._ptt_lines = ptt_lines
        self._ptt_invert = ptt_invert
        self._cos_line = cos_line
        self._cos_invert = cos_invert
        self._executor: ThreadPoolExecutor | None = None
        self._closing: asyncio.Future[None] | None = None
        # Changed only on the executor thread. The event loop reads them as plain references
        # (set_ptt); the RFC 2217 port's write lock orders its writes against close.
        self._port: serial.SerialBase | None = None
        self._rfc: _Rfc2217Port | None = None
        self._read_back = False
        self._poll_requests: list[int] = []  # SET-CONTROL requests sent with each read
        self._lost_logged = False

    @property
    def description(self) -> str:
        return self._url

    @property
    def can_read_back_ptt(self) -> bool:
        return self._read_back

    # -- RadioInterface -----------------------------------------------------------------

    async def open(self) -> None:
        if self._executor is not None:
            raise RuntimeError(f"{self._url} is already open")
        # A timed-out open may still hold the connection; a port takes one client at a time.
        if not await self._finish_closing(self._open_timeout_s):
            raise DeviceUnavailable(f"{self._url}: the previous connection is still closing")
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="serial-radio")
        self._executor = executor
        future = asyncio.get_running_loop().run_in_executor(executor, self._open_sync)
        future.add_done_callback(_consume_exception)
        try:
            await asyncio.wait_for(asyncio.shield(future), self._open_timeout_s)
        except BaseException as exc:
            # The blocking open may still be running: the close queued behind it undoes it.
            self._executor = None
            self._closing = self._start_close(executor)
            if isinstance(exc, TimeoutError):
                raise DeviceUnavailable(
                    f"{self._url}: open timed out after {self._open_timeout_s:g} s"
                ) from None
            raise

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            self._closing = self._start_close(executor)
        if not await self._finish_closing(_CLOSE_TIMEOUT_S):
            log.warning("%s: close still pending after %g s", self._url, _CLOSE_TIMEOUT_S)

    async def set_ptt(self, keyed: bool) -> None:
        rfc = self._rfc if self._port is not None else None
        if rfc is not None and self._executor is not None:
            # The SET-CONTROL goes out from here, a few bytes on a non-blocking socket, and
            # its answer comes back through a loop future: no hop to the I/O thread (and no
            # waiting behind a poll that is using it) between the request and the line.
            values = self._control_values(keyed)
            try:
                start = rfc.send_control_nowait(values)
            except serial.SerialException as exc:
                raise self._lost(exc) from exc
            if start is not None:
                if rfc.waits_for_answers:
                    await self._await_answers(rfc.answers_future(start, len(values)))
                return
        await self._run(self._set_ptt_sync, keyed)

    async def _await_answers(self, answered: asyncio.Future[None]) -> None:
        try:
            async with asyncio.timeout(self._io_timeout_s):
                await answered
        except TimeoutError:
            raise self._lost(serial.SerialException("no answer to SET-CONTROL")) from None
        except serial.SerialException as exc:
            raise self._lost(exc) from exc
        finally:
            answered.cancel()  # dropped from the waiters at the next answer

    async def read_lines(self) -> RadioLines:
        return await self._run(self._read_lines_sync)

    # -- executor side ------------------------------------------------------------------

    def _start_close(self, executor: ThreadPoolExecutor) -> asyncio.Future[None]:
        """Queue the blocking close behind whatever the executor runs, then retire it."""
        future = asyncio.get_running_loop().run_in_executor(executor, self._close_sync)
        future.add_done_callback(_consume_exception)
        executor.shutdown(wait=False)
        return future

    async def _finish_closing(self, timeout_s: float) -> bool:
        """Wait for a queued close; False if it is still running after `timeout_s`."""
        closing = self._closing
        if closing is None:
            return True
        try:
            await asyncio.wait_for(asyncio.shield(closing), timeout_s)
        except TimeoutError:
            return False
        except Exception:  # _close_sync swallows errors; this is belt and braces
            log.exception("%s: close failed", self._url)
        self._closing = None
        return True

    async def _run(self, func: Callable[..., _T], *args: Any) -> _T:
        executor = self._executor
        if executor is None:
            raise DeviceLost(f"{self._url} is not open")
        try:
            future = asyncio.get_running_loop().run_in_executor(executor, func, *args)
        except RuntimeError:  # executor shut down by a concurrent close()
            raise DeviceLost(f"{self._url} is closed") from None
        return await future

    def _levels(self, keyed: bool) -> dict[str, bool]:
        """Output line levels (True = asserted) for a PTT state; an unused line stays low."""
        return {
            line: (keyed != self._ptt_invert) if line in self._ptt_lines else False
            for line in ("rts", "dtr")
        }

    def _open_sync(self) -> None:
        unkeyed = self._levels(False)
        port: serial.SerialBase
        try:
            if _is_rfc2217(self._url):
                self._rfc = _Rfc2217Port()
                port = self._rfc
                port.port = self._url
            else:
                self._rfc = None
                port = serial.serial_for_url(self._url, do_not_open=True)
                if isinstance(port, serial.Serial):
                    port.exclusive = True  # two daemons must not drive one transmitter
            port.rts = unkeyed["rts"]  # before open(): pyserial otherwise asserts both
            port.dtr = unkeyed["dtr"]
            port.rtscts = False
            port.dsrdtr = False
            port.xonxoff = False
            port.open()
        except (OSError, ValueError) as exc:  # serial.SerialException is an OSError
            self._rfc = None
            raise DeviceUnavailable(f"{self._url}: {exc}") from exc
        try:
            if self._rfc is not None:
                self._probe(self._rfc)
                if self._cos_line is not None and self._rfc.modem_state is None:
                    log.warning(
                        "%s: the server has not reported the modem lines yet; COS is unknown "
                        "until it does",
                        self._url,
                    )
            else:
                self._read_back = False
                self._set_hupcl(port)
        except (OSError, ValueError) as exc:
            self._rfc = None
            _close_quietly(port)
            raise DeviceUnavailable(f"{self._url}: {exc}") from exc
        self._port = port
        self._lost_logged = False
        # At debug: the channel logs the open (gateway/startup.py gathers the first ones).
        log.debug(
            "%s open: PTT on %s%s, COS on %s%s, PTT read-back %s",
            self._url,
            "+".join(self._ptt_lines),
            " (inverted)" if self._ptt_invert else "",
            self._cos_line or "nothing",
            " (inverted)" if self._cos_invert else "",
            "yes" if self._read_back else "no",
        )

    def _probe(self, port: _Rfc2217Port) -> None:
        """Find out whether the server answers read-back requests, and check we are unkeyed."""
        self._read_back = False
        self._poll_requests = []
        mask = None
        if self._cos_line is not None:  # its state, and its changes pushed (as ser2net needs)
            mask = _MODEM_BITS[self._cos_line] | _MODEM_DELTAS[self._cos_line]
        if not port.waits_for_answers:
            port.send_control([], poll_modem=True, modem_mask=mask)
            return
        # The flow-control query goes last: once it is answered, so is all the server answers
        # (the mask's answer, where the server gives one, included).
        requests = [*(_REQ[line] for line in self._ptt_lines), _REQ_FLOW]
        start = port.send_control(requests, poll_modem=True, modem_mask=mask)
        count = len(requests)
        # The answers that do come are numbered from the first request, whichever the server
        # skips; the flow answer (last) says the server is done.
        port.wait_until(
            lambda: port.all_answered(start, count) or "flow" in port.answers_in(start, count),
            min(self._io_timeout_s, _PROBE_TIMEOUT_S),
        )
        all_answered = port.all_answered(start, count)
        answers = port.answers_in(start, count)
        if not all_answered:
            port.forget_unanswered()
        self._read_back = all(line in answers for line in self._ptt_lines)
        # What each read asks along with the modem state: the read-back, or else the flow
        # query as a ping, for a server that answers every request (whatever it says).
        if self._read_back:
            self._poll_requests = [_REQ[line] for line in self._ptt_lines]
        elif all_answered or "flow" in answers:
            self._poll_requests = [_REQ_FLOW]
        if self._read_back and self._keyed_from(answers):
            log.warning("%s: PTT reads back KEYED right after open", self._url)

    def _set_hupcl(self, port: serial.SerialBase) -> None:
        # HUPCL drops RTS/DTR on close, process death included: unkeyed with normal polarity,
        # keyed with inverted polarity, so it is set for the first and cleared for the second.
        if termios is None or not isinstance(port, serial.Serial):
            return
        fd = port.fileno()
        attrs = termios.tcgetattr(fd)
        if self._ptt_invert:
            attrs[2] &= ~termios.HUPCL
        else:
            attrs[2] |= termios.HUPCL
        termios.tcsetattr(fd, termios.TCSANOW, attrs)

    def _keyed_from(self, answers: dict[str, bool]) -> bool:
        """Keyed if ANY PTT line reads back at its keyed level (the conservative answer)."""
        return any(answers[line] != self._ptt_invert for line in self._ptt_lines)

    def _lost(self, exc: BaseException) -> DeviceLost:
        if not self._lost_logged:
            self._lost_logged = True
            # Debug only: the channel raises device_lost with this cause, in one line.
            log.debug("%s lost: %s", self._url, exc)
        return DeviceLost(f"{self._url}: {exc}")

    def _set_ptt_sync(self, keyed: bool) -> None:
        port = self._port
        if port is None:
            raise DeviceLost(f"{self._url} is not open")
        try:
            self._drive(port, keyed, self._io_timeout_s)
        except (OSError, ValueError) as exc:
            raise self._lost(exc) from exc

    def _control_values(self, keyed: bool) -> list[int]:
        """The RFC 2217 SET-CONTROL values that put the PTT lines at a state."""
        levels = self._levels(keyed)
        return [_ON[line] if levels[line] else _OFF[line] for line in self._ptt_lines]

    def _drive(self, port: serial.SerialBase, keyed: bool, timeout: float) -> None:
        if self._rfc is not None:
            self._rfc.control(self._control_values(keyed), timeout, "SET-CONTROL")
            return
        levels = self._levels(keyed)
        for line in self._ptt_lines:
            if line == "rts":
                port.rts = levels[line]
            else:
                port.dtr = levels[line]

    def _read_lines_sync(self) -> RadioLines:
        port = self._port
        if port is None:
            raise DeviceLost(f"{self._url} is not open")
        try:
            if self._rfc is not None:
                return self._read_rfc2217(self._rfc)
            if self._cos_line is None:
                _read_input(port, "cts")  # nothing to report, but notices an unplugged adapter
                return RadioLines(cos=None, ptt=None)
            return RadioLines(cos=_read_input(port, self._cos_line) != self._cos_invert, ptt=None)
        except (OSError, ValueError) as exc:
            raise self._lost(exc) from exc

    def _read_rfc2217(self, port: _Rfc2217Port) -> RadioLines:
        requests = self._poll_requests
        start = port.send_control(requests, poll_modem=True)
        if requests and not port.wait_answers(start, len(requests), self._io_timeout_s):
            raise serial.SerialException(f"no answer within {self._io_timeout_s:g} s")
        ptt: bool | None = None
        if self._read_back:
            answers = port.answers_in(start, len(requests))
            if not all(line in answers for line in self._ptt_lines):
                raise serial.SerialException(f"bad PTT read-back answer {answers!r}")
            ptt = self._keyed_from(answers)
        cos: bool | None = None  # not reported (yet), or no COS line
        state = port.modem_state
        if self._cos_line is not None and state is not None:
            cos = bool(state & _MODEM_BITS[self._cos_line]) != self._cos_invert
        return RadioLines(cos=cos, ptt=ptt)

    def _close_sync(self) -> None:
        port, self._port = self._port, None
        if port is None:
            return
        if self._rfc is not None:
            self._rfc.stop_nowait_writes()  # so the unkey below is the last line command
        try:
            if port.is_open:
                self._drive(port, False, min(self._io_timeout_s, 1.0))
        except Exception as exc:  # already reported if the device was lost
            level = logging.DEBUG if self._lost_logged else logging.WARNING
            log.log(level, "%s: could not unkey before closing: %s", self._url, exc)
        _close_quietly(port)
        self._rfc = None
        # After a loss the channel has said it all; a close then is routine.
        log.log(logging.DEBUG if self._lost_logged else logging.INFO, "%s closed", self._url)


def _read_input(port: Any, line: str) -> bool:
    if line == "cts":
        return bool(port.cts)
    if line == "dsr":
        return bool(port.dsr)
    if line == "cd":
        return bool(port.cd)
    return bool(port.ri)


def _close_quietly(port: serial.SerialBase) -> None:
    try:
        port.close()
    except Exception as exc:
        log.debug("closing %s: %s", port.port, exc)


def _resolve(future: asyncio.Future[None], error: str | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(serial.SerialException(error))


def _consume_exception(future: asyncio.Future[Any]) -> None:
    """Mark an abandoned executor future's exception as retrieved (no asyncio warning)."""
    if not future.cancelled():
        future.exception()
