"""Radio interface over Hamlib's rigctld: PTT by CAT command, PTT read-back, COS from DCD.

rigctld (Hamlib's network daemon) controls any radio Hamlib has a backend for, so one driver
keys every CAT-controlled radio. This driver speaks rigctld's Extended Response Protocol: each
command is sent as `+\\long_name args`, and every reply is an echo of the command, then
`Key: value` records, then `RPRT n`, where n is 0 or a negative Hamlib error code. That last
line is an unambiguous end of reply, which the default protocol lacks (a get command answers
bare values, or a lone `RPRT -n` on error).

What Hamlib 4.5.4 (Debian 12) was seen to do, and what follows from it here:

- `set_ptt 0|1` answers `set_ptt: 0` / `RPRT 0`; `get_ptt` answers `get_ptt:` / `PTT: 0` /
  `RPRT 0`. PTT values are 0 (RX) and 1..3 (TX, TX mic, TX data): anything but 0 is keyed.
- `get_dcd` answers `DCD: 0|1` (squelch closed or open): that is COS. A rig whose backend has
  no DCD answers `RPRT -11` (feature not available): COS is then None (unknown), said once,
  and not asked again until the next open. With `dcd=False` the driver never asks.
- A rigctld whose PTT type is NONE (the dummy rig's default; `-P NONE`) answers `set_ptt`
  with `RPRT -1` and `get_ptt` with `RPRT -11`. The first makes open() fail (it cannot
  unkey); the second alone means no read-back (`can_read_back_ptt` False).
- Hamlib caches the PTT state for `cache_timeout` (500 ms by default): a `get_ptt` within
  that time of a `set_ptt` answers the value set, not the radio's. `-C cache_timeout=0` on
  rigctld's command line makes every read-back a real CAT query.
- A client disconnecting, or rigctld dying, leaves the radio as it was: keyed stays keyed.
  open() therefore sends `set_ptt 0` first, and close() unkeys, over a fresh connection when
  the old one is broken.
- Started with `-o` (VFO mode) rigctld expects a VFO before every argument and waits, silent,
  for the missing one; open() says so instead of only "no answer". Unknown commands get no
  answer at all either: every request has a deadline (`io_timeout_s`).
- rigctld 4.5.4 closes each client's socket three times as the client leaves (fclose of its
  input and output streams, then close). A connection accepted in between gets the freed
  descriptor number and is closed by the leaving thread; and a thread whose descriptor was so
  taken over, still busy with a command, writes that command's reply into the new
  connection and goes on serving it. Replies to commands never sent on our connection
  therefore arrive (5 in 1,500 opens under connection churn): a complete, well-formed reply
  echoing another command, or a lone chk_vfo answer, is skipped (at most four per request,
  within its deadline). A stray reply echoing the very command awaited cannot be told from
  the answer: it is taken, and the real answer is skipped at the next command of another
  kind, so the connection is back in step at the next change of command.
- The record separator (`+` gives newlines; `;`, `|` or `,` give one line per reply) is one
  setting of the whole daemon: a reply to us can carry another client's separator, so the
  parser accepts those three between records as well as newlines.

One request is in flight at a time (an asyncio.Lock); a request that times out, is cancelled
or draws a reply that is not rigctld's (garbage, a line over 4 KiB, a reply that echoes no
command, more stray replies than above) leaves the connection out of step, so it is dropped:
DeviceLost now and for every later call until the next open().
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import socket
from collections.abc import Mapping

from drivers.errors import DeviceError, DeviceLost, DeviceUnavailable
from drivers.radio import RadioLines

__all__ = ["HAMLIB_ERRORS", "RigctldError", "RigctldRadio", "hamlib_meaning"]

_log = logging.getLogger(__name__)

HAMLIB_ERRORS: Mapping[int, str] = {
    1: "invalid parameter",
    2: "invalid configuration",
    3: "memory shortage",
    4: "feature not implemented",
    5: "communication timed out",
    6: "IO error",
    7: "internal Hamlib error",
    8: "protocol error",
    9: "command rejected by the rig",
    10: "command performed, but argument truncated",
    11: "feature not available",
    12: "target VFO unaccessible",
    13: "communication bus error",
    14: "communication bus collision",
    15: "NULL rig handle or invalid pointer parameter",
    16: "invalid VFO",
    17: "argument out of domain",
    18: "function deprecated",
    19: "security error (password not provided or crypto failure)",
    20: "rig is not powered on",
}
"""What Hamlib's error codes mean (`RPRT -n`), as Hamlib 4.5's rigerror() words them."""

_UNSUPPORTED = frozenset({4, 11})
"""Codes meaning the rig (or rigctld's configuration) lacks the function, not that it failed."""

_MAX_LINE = 4096
"""Longest reply line accepted, in bytes (rigctld's PTT and DCD replies are a few bytes)."""
_MAX_LINES = 16
"""Most lines one reply may take (get_ptt takes three)."""
_RETRY_DELAY_S = 0.02
# The hint's probe is a second connection rigctld must accept in a new thread: on a
# loaded console that can take longer than one request's time-out, and a wrong hint
# ("hangs" for a VFO-mode rigctld) sends the technician the wrong way.
_HINT_TIMEOUT_S = 2.0
_CLOSED = "rigctld closed the connection"
_RESET = "rigctld reset the connection"
_SEPARATORS = ";|,"
_END = re.compile(r"(?:^|[;|,])RPRT (-?\d{1,6})$")
_RECORD = re.compile(r"([A-Za-z][A-Za-z0-9 _/()-]{0,63}): ?(.{0,256})")
_PRINTABLE = re.compile(r"[\x20-\x7e\t]*")
_ECHO = re.compile(r"[a-z][a-z0-9_]{0,31}:(?: [\x21-\x7e][\x20-\x7e]{0,255})?")
"""A reply's first record: the long command name, a colon, the arguments as sent."""
_CHK_VFO = re.compile(r"ChkVFO: [01]|CHKVFO [01]")
"""chk_vfo's answer, the one reply without RPRT."""
_MAX_STRAYS = 4
"""Most replies to other commands skipped while awaiting one (see _request)."""
_PTT_VALUES = {"0": False, "1": True, "2": True, "3": True}
_DCD_VALUES = {"0": False, "1": True}


class RigctldError(DeviceError):
    """rigctld answered `RPRT -n`: Hamlib (or the rig behind it) refused or failed a command.

    The connection is still in step; `code` is Hamlib's error number (positive, as in
    HAMLIB_ERRORS), `command` the rigctld command that drew it.
    """

    def __init__(self, message: str, *, command: str, code: int) -> None:
        super().__init__(message)
        self.command = command
        self.code = code

    @property
    def unsupported(self) -> bool:
        """True when the code says the function is missing (-4, -11), not that it failed."""
        return self.code in _UNSUPPORTED


class _ProtocolError(Exception):
    """The peer's reply is not what rigctld sends."""


def hamlib_meaning(code: int) -> str:
    """Hamlib's wording for an error code (positive, as in HAMLIB_ERRORS)."""
    return HAMLIB_ERRORS.get(code, "unknown Hamlib error")


def _check_timeout(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number of seconds, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return float(value)


def _split_records(text: str) -> list[str]:
    """A reply line's records: one per line, or several joined by a rigctld separator."""
    for sep in _SEPARATORS:
        if sep in text:
            return text.split(sep)
    return [text]


def _parse_reply(lines: list[str]) -> tuple[str, int, dict[str, str]]:
    """(echo, Hamlib code, values) of a complete reply; _ProtocolError if it is not rigctld's.

    The echo is the reply's first record (`get_ptt:`, `set_ptt: 1`); the caller checks that
    it is its own command's.
    """
    *body, last = lines
    end = _END.search(last)
    if end is None:  # the caller only hands over a reply whose last line matched
        raise _ProtocolError(f"reply without RPRT: {last[:80]!r}")
    records: list[str] = []
    for line in [*body, last[: end.start()]]:
        records.extend(record for record in _split_records(line) if record)
    if not records or _ECHO.fullmatch(records[0].rstrip()) is None:
        first = records[0][:80] if records else lines[0][:80]
        raise _ProtocolError(f"a reply that echoes no command: {first!r}")
    echo = records[0].rstrip()
    command = echo.split(":", 1)[0]
    values: dict[str, str] = {}
    for record in records[1:]:
        match = _RECORD.fullmatch(record)
        if match is None:
            raise _ProtocolError(f"reply to {command} has a malformed record {record[:80]!r}")
        key, value = match.groups()
        if key in values:
            raise _ProtocolError(f"reply to {command} repeats {key!r}")
        values[key] = value.strip()
    code = int(end.group(1))
    if code > 0:
        raise _ProtocolError(f"reply to {command} ends with RPRT {code}, not 0 or negative")
    return echo, code, values


class RigctldRadio:
    """A radio keyed through a rigctld daemon (implements RadioInterface).

    `host` and `port` are where rigctld listens (`-T`/`-t`; 4532 by default). `io_timeout_s`
    bounds the connection and every request: a rigctld that has not answered by then counts
    as lost. `dcd` asks the rig for carrier (`get_dcd`) at every read; False leaves COS None
    without asking, for rigs whose squelch state Hamlib cannot read or that should not be
    polled for it. `can_read_back_ptt` is known after open(): True when rigctld answers
    `get_ptt`.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int = 4532,
        io_timeout_s: float = 1.0,
        dcd: bool = True,
    ) -> None:
        if (
            not isinstance(host, str)
            or not host
            or len(host) > 253
            or not host.isprintable()
            or any(c.isspace() for c in host)
        ):
            raise ValueError(f"host must be a non-empty host name or address: {host!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValueError(f"port must be an integer in 1..65535, not {port!r}")
        if not isinstance(dcd, bool):
            raise ValueError(f"dcd must be a bool, not {dcd!r}")
        self._host = host
        self._port = port
        self._io_timeout_s = _check_timeout("io_timeout_s", io_timeout_s)
        self._dcd = dcd
        self._where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

        self._lock = asyncio.Lock()  # one request in flight; close() queues behind it too
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._opened = False  # open() succeeded and close() has not run since
        self._lost: str | None = None  # why the connection is unusable; None while it works
        self._read_back = False
        self._dcd_supported = False
        # What was last said about the rig's capabilities, so each is logged once.
        self._said_read_back: bool | None = None
        self._said_dcd: bool | None = None

    # ------------------------------------------------------------------ interface
    @property
    def description(self) -> str:
        return f"rigctld {self._where}"

    @property
    def can_read_back_ptt(self) -> bool:
        return self._read_back

    async def open(self) -> None:
        if self._opened:
            raise RuntimeError(f"{self.description} is already open")
        await self._drop_connection()  # what a failed open may have left
        try:
            await self._unkey_at_open()
            await self._probe_read_back()
            await self._probe_dcd()
        except BaseException:
            await self._drop_connection()
            raise
        self._opened = True
        # At debug: the channel logs the open (gateway/startup.py gathers the first ones).
        _log.debug(
            "%s open: PTT unkeyed, PTT read-back %s, carrier from DCD %s",
            self.description,
            "yes" if self._read_back else "no",
            "off" if not self._dcd else ("yes" if self._dcd_supported else "no"),
        )

    async def close(self) -> None:
        if not self._opened:
            await self._drop_connection()  # a failed open's leftovers (none normally)
            return
        self._opened = False
        unkeyed = False
        try:
            await self._request("set_ptt", "0", internal=True)  # SAFETY: unkey, then let go
            unkeyed = True
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            _log.debug("%s: unkey on close over the open connection: %s", self.description, exc)
        finally:
            if not unkeyed:
                await self._drop_connection()
        if not unkeyed:
            # The connection broke (or rigctld did): unkey over a new one if rigctld is up.
            await self._unkey_fresh()
        await self._drop_connection()
        _log.info("%s: closed", self.description)

    async def set_ptt(self, keyed: bool) -> None:
        if not isinstance(keyed, bool):
            raise TypeError(f"keyed must be a bool, not {keyed!r}")
        await self._request("set_ptt", "1" if keyed else "0")
        _log.debug("%s: PTT %s", self.description, "keyed" if keyed else "unkeyed")

    async def read_lines(self) -> RadioLines:
        if not self._opened:
            raise DeviceLost(f"{self.description}: not open", follow_up=True)
        reader, _ = self._require_usable()
        if not self._read_back and not (self._dcd and self._dcd_supported):
            # Nothing to ask: at least notice a connection rigctld has closed.
            if reader.at_eof() or reader.exception() is not None:
                raise self._lose(_CLOSED)
            return RadioLines(cos=None, ptt=None)
        ptt: bool | None = None
        if self._read_back:
            ptt = await self._get_ptt()
        cos: bool | None = None
        if self._dcd and self._dcd_supported:
            try:
                cos = await self._get_dcd()
            except RigctldError as exc:
                if not exc.unsupported:
                    raise
                self._dcd_supported = False
                self._say_dcd(False, exc)
        return RadioLines(cos=cos, ptt=ptt)

    # ------------------------------------------------------------------ open steps
    async def _connect_and_unkey(self) -> None:
        """Connect, and drive PTT unkeyed: SAFETY, the first command on every connection.

        rigctld 4.5.4 sometimes closes a connection it has just accepted, before answering
        anything (a close or a reset), when another client disconnects at the same moment
        (about 4 in 100 tries under load; strace shows each client thread closing its socket
        three times, so a descriptor reused by the new connection in between gets closed).
        One more connection is tried then; any other failure is final.
        """
        for attempt in (1, 2):
            try:
                async with asyncio.timeout(self._io_timeout_s):
                    reader, writer = await asyncio.open_connection(
                        self._host, self._port, limit=_MAX_LINE
                    )
            except TimeoutError:
                raise DeviceUnavailable(
                    f"{self.description}: no connection within {self._io_timeout_s:g} s"
                ) from None
            except OSError as exc:
                raise DeviceUnavailable(
                    f"{self.description}: cannot connect: {exc.strerror or exc}"
                ) from None
            _set_nodelay(writer)  # every request is one small write awaiting its answer
            self._reader, self._writer, self._lost = reader, writer, None
            try:
                await self._request("set_ptt", "0", internal=True)
                return
            except DeviceLost:
                if attempt == 2 or self._lost not in (_CLOSED, _RESET):
                    raise
            await self._drop_connection()
            _log.debug("%s: rigctld closed a new connection at once; again", self.description)
            await asyncio.sleep(_RETRY_DELAY_S)

    async def _unkey_at_open(self) -> None:
        try:
            await self._connect_and_unkey()
        except RigctldError as exc:
            hint = ""
            if exc.code in (1, 11):
                hint = "; is rigctld's PTT type NONE? start it with -P RIG (CAT PTT)"
            raise DeviceUnavailable(f"{exc}{hint}") from None
        except DeviceLost as exc:
            hint = ""
            if self._lost is not None and "did not answer" in self._lost:
                hint = await self._why_silent()
            raise DeviceUnavailable(f"{exc}{hint}") from None

    async def _probe_read_back(self) -> None:
        try:
            keyed = await self._get_ptt(internal=True)
        except RigctldError as exc:
            if not exc.unsupported:
                raise DeviceUnavailable(str(exc)) from None
            self._read_back = False
            if self._said_read_back is not False:
                _log.warning(
                    "%s: rigctld cannot read PTT back (%s); PTT reported is the command sent",
                    self.description,
                    _rprt(exc.code),
                )
            self._said_read_back = False
            return
        except DeviceLost as exc:
            raise DeviceUnavailable(str(exc)) from None
        self._read_back = True
        self._said_read_back = True
        if keyed:
            _log.warning("%s: PTT reads back KEYED right after set_ptt 0", self.description)

    async def _probe_dcd(self) -> None:
        self._dcd_supported = False
        if not self._dcd:
            return
        try:
            await self._get_dcd(internal=True)
        except RigctldError as exc:
            if not exc.unsupported:
                raise DeviceUnavailable(str(exc)) from None
            self._say_dcd(False, exc)
            return
        except DeviceLost as exc:
            raise DeviceUnavailable(str(exc)) from None
        self._dcd_supported = True
        self._say_dcd(True, None)

    def _say_dcd(self, supported: bool, exc: RigctldError | None) -> None:
        """Log that the rig has no DCD once, not at every open (again after it had one)."""
        if not supported and self._said_dcd is not False:
            _log.warning(
                "%s: this rig reports no carrier (get_dcd: %s); COS is unknown",
                self.description,
                _rprt(exc.code) if exc is not None else "no answer",
            )
        self._said_dcd = supported

    async def _why_silent(self) -> str:
        """A hint for a rigctld that accepted us but did not answer set_ptt."""
        try:
            async with asyncio.timeout(max(self._io_timeout_s, _HINT_TIMEOUT_S)):
                reader, writer = await asyncio.open_connection(
                    self._host, self._port, limit=_MAX_LINE
                )
                try:
                    writer.write(b"+\\chk_vfo\n")  # answered by rigctld itself, no RPRT
                    await writer.drain()
                    line = await reader.readuntil(b"\n")
                finally:
                    writer.transport.abort()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return "; rigctld (or the rig behind it) hangs"
        if line.strip() in (b"ChkVFO: 1", b"CHKVFO 1"):
            return (
                "; rigctld runs in VFO mode (-o/--vfo), where set_ptt waits for a VFO "
                "argument: run it without -o"
            )
        return "; rigctld (or the rig behind it) hangs"

    # ------------------------------------------------------------------ commands
    async def _get_ptt(self, *, internal: bool = False) -> bool:
        values = await self._request("get_ptt", internal=internal)
        return self._value(values, "get_ptt", "PTT", _PTT_VALUES)

    async def _get_dcd(self, *, internal: bool = False) -> bool:
        values = await self._request("get_dcd", internal=internal)
        return self._value(values, "get_dcd", "DCD", _DCD_VALUES)

    def _value(
        self, values: dict[str, str], command: str, key: str, allowed: Mapping[str, bool]
    ) -> bool:
        raw = values.get(key)
        if raw is None or raw not in allowed:
            shown = "nothing" if raw is None else repr(raw[:40])
            raise self._lose(f"protocol error: {command} answered {key} {shown}")
        return allowed[raw]

    # ------------------------------------------------------------------ the connection
    def _require_usable(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._lost is not None:
            raise DeviceLost(f"{self.description}: {self._lost}", follow_up=True)
        reader, writer = self._reader, self._writer
        if reader is None or writer is None:
            raise DeviceLost(f"{self.description}: not open", follow_up=True)
        return reader, writer

    async def _request(self, command: str, *args: str, internal: bool = False) -> dict[str, str]:
        """Send one command and return its values; RigctldError on `RPRT -n`.

        `internal` requests are open()'s and close()'s own; any other needs the radio open,
        checked under the lock, so nothing queued behind close() reaches a connection that
        close() is using to unkey.
        """
        async with self._lock:
            if not internal and not self._opened:
                raise DeviceLost(f"{self.description}: not open", follow_up=True)
            reader, writer = self._require_usable()
            line = "+\\" + " ".join((command, *args)) + "\n"
            expected = " ".join((f"{command}:", *args))
            strays: list[str] = []  # replies to commands not ours, skipped
            try:
                async with asyncio.timeout(self._io_timeout_s):
                    writer.write(line.encode("ascii"))
                    await writer.drain()
                    code, values = await self._await_reply(reader, expected, strays)
            except TimeoutError:
                raise self._lose(
                    f"rigctld did not answer {command} within {self._io_timeout_s:g} s"
                    + _strays_said(strays)
                ) from None
            except asyncio.CancelledError:
                # The answer may still come and would be read as the next one's.
                self._lose("a request was cancelled before its answer", quiet=True)
                raise
            except asyncio.IncompleteReadError:
                raise self._lose(_CLOSED) from None
            except asyncio.LimitOverrunError:
                raise self._lose(f"protocol error: a reply line over {_MAX_LINE} bytes") from None
            except _ProtocolError as exc:
                raise self._lose(f"protocol error: {exc}") from None
            except ConnectionResetError:
                raise self._lose(_RESET) from None
            except OSError as exc:  # BrokenPipeError and the like
                raise self._lose(f"connection failed: {exc.strerror or exc}") from None
        if strays:
            _log.debug(
                "%s: skipped replies to commands not sent on this connection (%s) before %s's",
                self.description,
                ", ".join(repr(echo) for echo in strays),
                command,
            )
        if code < 0:
            raise RigctldError(
                f"{self.description}: {' '.join((command, *args))}: {_rprt(-code)}",
                command=command,
                code=-code,
            )
        return values

    @classmethod
    async def _await_reply(
        cls, reader: asyncio.StreamReader, expected: str, strays: list[str]
    ) -> tuple[int, dict[str, str]]:
        """(code, values) of the reply echoing `expected`; the echoes of others to `strays`."""
        while True:
            echo, code, values = _parse_reply(await cls._read_reply(reader, strays))
            if echo == expected:
                return code, values
            if len(strays) >= _MAX_STRAYS:
                raise _ProtocolError(f"reply to {expected!r} does not echo it: {echo[:80]!r}")
            strays.append(echo)

    @staticmethod
    async def _read_reply(reader: asyncio.StreamReader, strays: list[str]) -> list[str]:
        """The lines of one reply, up to and including the one ending with `RPRT n`.

        A lone chk_vfo answer before the reply begins is another client's (see _request):
        it goes to `strays`, within the same bound.
        """
        lines: list[str] = []
        while len(lines) < _MAX_LINES:
            raw = await reader.readuntil(b"\n")
            try:
                text = raw.decode("ascii").rstrip("\r\n")
            except UnicodeDecodeError:
                raise _ProtocolError(f"a reply that is not ASCII: {raw[:40]!r}") from None
            if _PRINTABLE.fullmatch(text) is None:
                raise _ProtocolError(f"control characters in a reply: {text[:40]!r}")
            if not lines and _CHK_VFO.fullmatch(text) and len(strays) < _MAX_STRAYS:
                strays.append(text)
                continue
            lines.append(text)
            if _END.search(text):
                return lines
        raise _ProtocolError(f"no RPRT after {_MAX_LINES} lines")

    def _lose(self, reason: str, *, quiet: bool = False) -> DeviceLost:
        """Mark the connection unusable (it is out of step or gone) and say why, once."""
        if self._lost is None:
            self._lost = reason
            if quiet or not self._opened:  # open() and close() report their own failures
                _log.debug("%s: connection dropped: %s", self.description, reason)
            else:
                _log.warning("%s lost: %s", self.description, reason)
        writer = self._writer
        if writer is not None:
            writer.transport.abort()  # nothing more is read from it; the socket goes now
        return DeviceLost(f"{self.description}: {reason}")

    async def _drop_connection(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is None:
            return
        writer.transport.abort()
        with contextlib.suppress(Exception):
            await writer.wait_closed()

    async def _unkey_fresh(self) -> None:
        """Best effort: `set_ptt 0` over a new connection, within about two io timeouts."""
        try:
            await self._connect_and_unkey()
        except asyncio.CancelledError:
            raise
        except DeviceUnavailable as exc:  # cannot connect: rigctld is down, nothing to say
            _log.debug("%s: cannot reconnect to unkey on close: %s", self.description, exc)
        except Exception as exc:
            _log.warning("%s: could not unkey on close: %s", self.description, exc)
        else:
            _log.info("%s: unkeyed on close over a new connection", self.description)
        finally:
            await self._drop_connection()


def _strays_said(strays: list[str]) -> str:
    if not strays:
        return ""
    shown = ", ".join(repr(echo[:40]) for echo in strays)
    return f" (it answered commands not sent on this connection: {shown})"


def _rprt(code: int) -> str:
    return f"RPRT -{code} ({hamlib_meaning(code)})"


def _set_nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
