"""Modbus IO modules (alarm inputs, relay outputs) over Modbus TCP or RTU, with pymodbus.

Shape:

- `ModbusLink`: one physical connection, a TCP socket or a serial line (RS-485). Every module
  behind it shares one pymodbus client and one asyncio.Lock, so requests on a line never
  overlap. The link reconnects lazily with exponential backoff: a request on a link that is
  down either tries to reconnect (when the backoff allows) or fails at once with DeviceLost.
  No hidden task, no retry loop inside pymodbus (its retries are set to 0 and its own
  reconnect is disabled), so every call is bounded by `timeout_s` plus a small guard.
- `ModbusModule`: one device_id on a link, with a typed read/write API. Errors:
  no response -> DeviceTimeout, exception response -> ModbusExceptionError (a DeviceError
  that names the code), link down -> DeviceLost. Gateway exception 0x0B ("target device
  failed to respond") is a no-response too, so it is a DeviceTimeout.
- A dead module must not starve its neighbours on a shared line: after a timeout, the module
  is probed at most once per `probe_interval_s`; polls in between fail at once with
  DeviceTimeout without touching the line. A module that was answering gets `retries`
  immediate retries first, so one lost frame on a noisy line is not reported.
- `InputMap`: named points (discrete input / coil bits, bits of a register bitmask, analog
  registers with scaling, 16/32-bit counters with their word order), planned into the fewest
  read requests. `ModbusModule.poll()` reads them and returns a `Snapshot` or a `PollFailure`.
- `ModbusPoller`: fixed-rate polling as an awaitable method the gateway calls from its own
  task (the gateway owns the scheduling policy).
- `SupervisedLine`: pure classification of an analog value into end-of-line resistor bands
  (normal, alarm, trouble-open, trouble-short) with hysteresis.

A link belongs to the event loop that first uses it (its lock and pymodbus client do).

Addresses are 0-based protocol addresses (what goes on the wire): the Modicon reference
10001 is discrete input address 0, 40301 is holding register address 300.

pymodbus logs every unanswered request at ERROR level, once per poll of a dead module. This
driver reports each state change once itself, so the first ModbusLink raises the "pymodbus"
logger to CRITICAL unless the application has set a level for it.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from struct import error as struct_error
from typing import Any, Literal, TypeAlias

from pymodbus import ModbusException
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.framer import FramerType
from pymodbus.pdu import ExceptionResponse, ModbusPDU

from drivers.backoff import Backoff
from drivers.errors import DeviceError, DeviceLost, DeviceTimeout, DeviceUnavailable

__all__ = [
    "AnalogPoint",
    "BitPoint",
    "Block",
    "CounterPoint",
    "InputMap",
    "LineState",
    "ModbusExceptionError",
    "ModbusLink",
    "ModbusModule",
    "ModbusPoller",
    "Parity",
    "Point",
    "PointValue",
    "PollFailure",
    "PollResult",
    "RegisterBitPoint",
    "Snapshot",
    "SupervisedLine",
    "Table",
    "WordOrder",
]

log = logging.getLogger(__name__)

Table: TypeAlias = Literal["coil", "discrete_input", "input_register", "holding_register"]
BitTable: TypeAlias = Literal["coil", "discrete_input"]
RegisterTable: TypeAlias = Literal["input_register", "holding_register"]
WordOrder: TypeAlias = Literal["high_first", "low_first"]
Parity: TypeAlias = Literal["N", "E", "O"]
PointValue: TypeAlias = bool | int | float

_BIT_TABLES: frozenset[str] = frozenset({"coil", "discrete_input"})
_REGISTER_TABLES: frozenset[str] = frozenset({"input_register", "holding_register"})
_MAX_BITS = 2000  # Modbus limit per read (FC 1, 2)
_MAX_REGISTERS = 125  # Modbus limit per read (FC 3, 4)
_GUARD_S = 1.0
"""Added to timeout_s as an outer bound on one pymodbus call, in case pymodbus itself hangs."""

EXCEPTION_NAMES: Mapping[int, str] = {
    0x01: "ILLEGAL FUNCTION",
    0x02: "ILLEGAL DATA ADDRESS",
    0x03: "ILLEGAL DATA VALUE",
    0x04: "SERVER DEVICE FAILURE",
    0x05: "ACKNOWLEDGE",
    0x06: "SERVER DEVICE BUSY",
    0x07: "NEGATIVE ACKNOWLEDGE",
    0x08: "MEMORY PARITY ERROR",
    0x0A: "GATEWAY PATH UNAVAILABLE",
    0x0B: "GATEWAY TARGET DEVICE FAILED TO RESPOND",
}
_GATEWAY_NO_RESPONSE = 0x0B


class ModbusExceptionError(DeviceError):
    """The module answered with a Modbus exception (illegal address, device busy...)."""

    def __init__(self, message: str, *, code: int, function_code: int) -> None:
        super().__init__(message)
        self.code = code
        """The Modbus exception code (2 = illegal data address...)."""
        self.code_name = EXCEPTION_NAMES.get(code, f"UNKNOWN EXCEPTION {code}")
        self.function_code = function_code
        """The function code of the refused request (without the 0x80 error bit)."""


# -- validation helpers -------------------------------------------------------------------


def _check_seconds(name: str, value: float, *, maximum: float = 3600.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number of seconds, got {value!r}")
    if not (math.isfinite(value) and 0 < value <= maximum):
        raise ValueError(f"{name} must be > 0 and <= {maximum:g}, got {value!r}")
    return float(value)


def _check_int(name: str, value: int, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in {low}..{high}, got {value!r}")
    return value


def _check_name(value: str) -> str:
    if not isinstance(value, str) or not value or value != value.strip():
        raise ValueError(
            f"a point name must be a non-empty string without spaces around: {value!r}"
        )
    return value


def _check_table(value: str, allowed: frozenset[str], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"{what} table must be one of {sorted(allowed)}, got {value!r}")


# -- input map ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BitPoint:
    """One discrete input or coil bit; its value is a bool."""

    name: str
    table: BitTable
    address: int

    def __post_init__(self) -> None:
        _check_name(self.name)
        _check_table(self.table, _BIT_TABLES, "a BitPoint")
        _check_int("address", self.address, 0, 0xFFFF)

    @property
    def width(self) -> int:
        return 1


@dataclass(frozen=True, slots=True)
class RegisterBitPoint:
    """One bit (0 = least significant) of a register used as a bitmask; a bool."""

    name: str
    table: RegisterTable
    address: int
    bit: int

    def __post_init__(self) -> None:
        _check_name(self.name)
        _check_table(self.table, _REGISTER_TABLES, "a RegisterBitPoint")
        _check_int("address", self.address, 0, 0xFFFF)
        _check_int("bit", self.bit, 0, 15)

    @property
    def width(self) -> int:
        return 1


@dataclass(frozen=True, slots=True)
class AnalogPoint:
    """An analog input register: value = raw * scale + offset (a float).

    `signed` reads the register as a 16-bit two's complement number first.
    """

    name: str
    table: RegisterTable
    address: int
    scale: float = 1.0
    offset: float = 0.0
    signed: bool = False

    def __post_init__(self) -> None:
        _check_name(self.name)
        _check_table(self.table, _REGISTER_TABLES, "an AnalogPoint")
        _check_int("address", self.address, 0, 0xFFFF)
        for label, number in (("scale", self.scale), ("offset", self.offset)):
            if isinstance(number, bool) or not isinstance(number, int | float):
                raise ValueError(f"{label} must be a number, got {number!r}")
            if not math.isfinite(number):
                raise ValueError(f"{label} must be finite, got {number!r}")
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        if not isinstance(self.signed, bool):
            raise ValueError(f"signed must be a bool, got {self.signed!r}")

    @property
    def width(self) -> int:
        return 1


@dataclass(frozen=True, slots=True)
class CounterPoint:
    """A pulse counter: one register (words=1) or two (words=2) in the given word order.

    Vendors disagree: Moxa ioLogik puts the high word first, Advantech ADAM-6000 the low
    word first. Each register itself is big-endian, as Modbus mandates.
    """

    name: str
    table: RegisterTable
    address: int
    words: Literal[1, 2] = 2
    word_order: WordOrder = "high_first"

    def __post_init__(self) -> None:
        _check_name(self.name)
        _check_table(self.table, _REGISTER_TABLES, "a CounterPoint")
        if self.words not in (1, 2):
            raise ValueError(f"words must be 1 or 2, got {self.words!r}")
        _check_int("address", self.address, 0, 0x10000 - self.words)
        if self.word_order not in ("high_first", "low_first"):
            raise ValueError(f"word_order must be high_first or low_first: {self.word_order!r}")

    @property
    def width(self) -> int:
        return self.words


Point: TypeAlias = BitPoint | RegisterBitPoint | AnalogPoint | CounterPoint


@dataclass(frozen=True, slots=True)
class Block:
    """One read request: `count` consecutive items of `table` from `address`."""

    table: Table
    address: int
    count: int


class InputMap:
    """What to read from a module and how to turn it into named points.

    The points are planned into the fewest read requests: points of one table whose
    addresses touch (or lie within `max_gap` unused addresses of each other) share a block.
    The default `max_gap=0` never reads an address no point asked for: many modules answer
    ILLEGAL DATA ADDRESS for a block that crosses a hole in their map.
    """

    def __init__(self, *, points: Sequence[Point], max_gap: int = 0) -> None:
        if isinstance(points, str | bytes) or not isinstance(points, Sequence) or not points:
            raise ValueError("points must be a non-empty sequence of points")
        for point in points:
            if not isinstance(point, BitPoint | RegisterBitPoint | AnalogPoint | CounterPoint):
                raise ValueError(f"not a point: {point!r}")
        names = [p.name for p in points]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate point names: {duplicates}")
        self._max_gap = _check_int("max_gap", max_gap, 0, 100)
        self._points: tuple[Point, ...] = tuple(points)
        self._blocks = self._plan()
        # Per point: (block index, offset in block); precomputed so decode is a few lookups.
        self._where: tuple[tuple[int, int], ...] = tuple(self._locate(p) for p in self._points)

    @property
    def points(self) -> tuple[Point, ...]:
        return self._points

    @property
    def blocks(self) -> tuple[Block, ...]:
        """The read requests one poll makes, in the order they are made."""
        return self._blocks

    def _plan(self) -> tuple[Block, ...]:
        blocks: list[Block] = []
        for table in ("discrete_input", "coil", "input_register", "holding_register"):
            limit = _MAX_BITS if table in _BIT_TABLES else _MAX_REGISTERS
            spans = sorted(
                (p.address, p.address + p.width) for p in self._points if p.table == table
            )
            start = end = -1
            for lo, hi in spans:
                if start >= 0 and lo <= end + self._max_gap and max(hi, end) - start <= limit:
                    end = max(end, hi)
                    continue
                if start >= 0:
                    blocks.append(Block(table, start, end - start))
                start, end = lo, hi
            if start >= 0:
                blocks.append(Block(table, start, end - start))
        return tuple(blocks)

    def _locate(self, point: Point) -> tuple[int, int]:
        for index, block in enumerate(self._blocks):
            if (
                block.table == point.table
                and block.address <= point.address
                and point.address + point.width <= block.address + block.count
            ):
                return index, point.address - block.address
        raise AssertionError(f"no block holds {point!r}")  # the planner covers every point

    def decode(self, data: Sequence[Sequence[int] | Sequence[bool]]) -> dict[str, PointValue]:
        """Turn the values read for each block (in `blocks` order) into named point values."""
        if len(data) != len(self._blocks):
            raise ValueError(f"expected {len(self._blocks)} blocks of data, got {len(data)}")
        values: dict[str, PointValue] = {}
        for point, (index, offset) in zip(self._points, self._where, strict=True):
            raw = data[index]
            if isinstance(point, BitPoint):
                values[point.name] = bool(raw[offset])
            elif isinstance(point, RegisterBitPoint):
                values[point.name] = bool((int(raw[offset]) >> point.bit) & 1)
            elif isinstance(point, AnalogPoint):
                number = int(raw[offset])
                if point.signed and number >= 0x8000:
                    number -= 0x10000
                values[point.name] = number * point.scale + point.offset
            elif point.words == 1:
                values[point.name] = int(raw[offset])
            else:
                first, second = int(raw[offset]), int(raw[offset + 1])
                if point.word_order == "low_first":
                    first, second = second, first
                values[point.name] = (first << 16) | second
        return values

    def __repr__(self) -> str:
        return f"InputMap({len(self._points)} points in {len(self._blocks)} blocks)"


# -- poll results -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One successful poll of a module."""

    t_mono: float
    """time.monotonic() when the last block was received."""
    ts: float
    """Wall-clock time (time.time()) at the same moment, for events."""
    duration_s: float
    """How long the poll took, lock wait included."""
    values: Mapping[str, PointValue]


@dataclass(frozen=True, slots=True)
class PollFailure:
    """One failed poll: `error` is a DeviceTimeout, DeviceLost or other DeviceError."""

    t_mono: float
    ts: float
    duration_s: float
    error: DeviceError


PollResult: TypeAlias = Snapshot | PollFailure


# -- link ---------------------------------------------------------------------------------


class _LinkState(enum.Enum):
    NEVER = "never connected"
    UP = "up"
    DOWN = "down"


_pymodbus_logging_tamed = False


def _tame_pymodbus_logging() -> None:
    global _pymodbus_logging_tamed  # noqa: PLW0603 - once per process
    if _pymodbus_logging_tamed:
        return
    _pymodbus_logging_tamed = True
    logger = logging.getLogger("pymodbus")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.CRITICAL)


class _UndecodableReply(ModbusException):
    """A frame pymodbus could not decode (unknown function code, PDU too short)."""


def _fail_undecodable_replies(client: AsyncModbusTcpClient | AsyncModbusSerialClient) -> None:
    """Make a frame pymodbus cannot decode fail the waiting request as a bad reply.

    pymodbus raises it out of the protocol's data_received, where asyncio logs a "fatal
    error" with its traceback and drops the connection; the request then just times out.
    """
    ctx = client.ctx
    handle = ctx.callback_data

    def callback_data(data: bytes, addr: tuple[Any, ...] | None = None) -> int:
        try:
            return int(handle(data, addr))
        except Exception as exc:
            if not ctx.response_future.done():
                ctx.response_future.set_exception(_UndecodableReply(f"undecodable: {exc}"))
            return len(data)  # what is buffered belongs to that frame or follows it: drop it

    ctx.callback_data = callback_data  # type: ignore[method-assign]


class ModbusLink:
    """One physical Modbus connection: TCP (`host`) or a serial line (`serial_port`).

    All modules on the link share its pymodbus client and lock. `timeout_s` bounds every
    request (and the TCP connect or serial open); pymodbus's own retries and reconnect are
    disabled. After a connection loss, the next request reconnects at once; when that fails
    the following attempts are spaced from `reconnect_min_s` doubling to `reconnect_max_s`,
    and requests in between fail at once with DeviceLost.

    On TCP, `lost_after_timeouts` unanswered requests in a row (no module on the link
    answering in between) close the connection: a half-open socket (cable pulled, module
    rebooted) is only noticed that way. A serial line is never closed for timeouts (a
    silent module is not a missing adapter); it is reopened only after an I/O error.
    """

    def __init__(
        self,
        *,
        host: str | None = None,
        port: int = 502,
        serial_port: str | None = None,
        baudrate: int = 9600,
        parity: Parity = "N",
        bytesize: Literal[7, 8] = 8,
        stopbits: Literal[1, 2] = 1,
        timeout_s: float = 0.3,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        lost_after_timeouts: int = 3,
    ) -> None:
        if (host is None) == (serial_port is None):
            raise ValueError("give exactly one of host (Modbus TCP) or serial_port (Modbus RTU)")
        if host is not None:
            if not isinstance(host, str) or not host.strip() or host != host.strip():
                raise ValueError(f"host must be a non-empty string: {host!r}")
            _check_int("port", port, 1, 65535)
            self._description = f"modbus-tcp://{host}:{port}"
        else:
            if not isinstance(serial_port, str) or not serial_port.strip():
                raise ValueError(f"serial_port must be a non-empty string: {serial_port!r}")
            _check_int("baudrate", baudrate, 50, 4_000_000)
            if parity not in ("N", "E", "O"):
                raise ValueError(f"parity must be 'N', 'E' or 'O', got {parity!r}")
            if bytesize not in (7, 8):
                raise ValueError(f"bytesize must be 7 or 8, got {bytesize!r}")
            if stopbits not in (1, 2):
                raise ValueError(f"stopbits must be 1 or 2, got {stopbits!r}")
            self._description = (
                f"modbus-rtu://{serial_port}?{baudrate}-{bytesize}{parity}{stopbits}"
            )
        self._host = host
        self._port = port
        self._serial_port = serial_port
        self._baudrate = baudrate
        self._parity = parity
        self._bytesize = bytesize
        self._stopbits = stopbits
        self._timeout_s = _check_seconds("timeout_s", timeout_s, maximum=10.0)
        self._reconnect_min_s = _check_seconds("reconnect_min_s", reconnect_min_s)
        self._reconnect_max_s = _check_seconds("reconnect_max_s", reconnect_max_s)
        if self._reconnect_max_s < self._reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        self._lost_after = _check_int("lost_after_timeouts", lost_after_timeouts, 1, 1000)
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        self._lock: asyncio.Lock | None = None
        self._state = _LinkState.NEVER
        self._next_attempt = 0.0
        self._backoff = Backoff(self._reconnect_min_s, self._reconnect_max_s)
        self._failed_attempts = 0
        self._silent_requests = 0
        self._closed = False
        _tame_pymodbus_logging()

    # -- properties -------------------------------------------------------------------

    @property
    def description(self) -> str:
        """Where the link goes, for logs (modbus-tcp://host:port, modbus-rtu://path?...)."""
        return self._description

    @property
    def is_serial(self) -> bool:
        return self._serial_port is not None

    @property
    def timeout_s(self) -> float:
        return self._timeout_s

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    # -- connection -------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect now (ignoring the backoff). Raises DeviceUnavailable when it cannot."""
        async with self._get_lock():
            self._closed = False
            if self.connected:
                return
            if not await self._connect_locked():
                raise DeviceUnavailable(f"{self._description}: cannot connect")

    async def close(self) -> None:
        """Close the connection. Never raises; safe to call twice. Requests then raise
        DeviceLost until `connect()` is called again."""
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception as exc:  # pragma: no cover - pymodbus close does not raise
                log.debug("%s: close: %s", self._description, exc)
            log.info("%s closed", self._description)
        self._state = _LinkState.NEVER
        self._backoff.reset()
        self._next_attempt = 0.0

    async def __aenter__(self) -> ModbusLink:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _get_lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    def _make_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        # reconnect_delay=0: pymodbus must not reconnect on its own; retries=0: one attempt
        # per request, the module decides about retries.
        if self._host is not None:
            return AsyncModbusTcpClient(
                self._host,
                port=self._port,
                framer=FramerType.SOCKET,
                timeout=self._timeout_s,
                retries=0,
                reconnect_delay=0,
                name=self._description,
            )
        assert self._serial_port is not None
        return AsyncModbusSerialClient(
            self._serial_port,
            framer=FramerType.RTU,
            baudrate=self._baudrate,
            bytesize=self._bytesize,
            parity=self._parity,
            stopbits=self._stopbits,
            timeout=self._timeout_s,
            retries=0,
            reconnect_delay=0,
            name=self._description,
        )

    async def _connect_locked(self) -> bool:
        old, self._client = self._client, None
        if old is not None:
            old.close()
        client = self._make_client()
        _fail_undecodable_replies(client)
        # pymodbus closes the connection itself after retries+3 unanswered requests; the
        # link decides that (lost_after_timeouts, TCP only), so push pymodbus's limit away.
        client.set_max_no_responses(1 << 30)
        try:
            async with asyncio.timeout(self._timeout_s + _GUARD_S):
                ok = await client.connect()
        except (TimeoutError, OSError, ModbusException) as exc:
            log.debug("%s: connect: %s", self._description, exc)
            ok = False
        if not ok:
            client.close()
            self._failed_attempts += 1
            delay = self._backoff.next()
            self._next_attempt = time.monotonic() + delay
            level = logging.WARNING if self._failed_attempts == 1 else logging.DEBUG
            log.log(
                level,
                "%s: cannot connect (attempt %d); retrying in %.1f s",
                self._description,
                self._failed_attempts,
                delay,
            )
            if self._state is _LinkState.UP:
                self._state = _LinkState.DOWN
            return False
        if self._state is _LinkState.DOWN or self._failed_attempts:
            log.info("%s connected again", self._description)
        else:
            # At debug: each module on the link logs "online" (gathered at start).
            log.debug("%s connected", self._description)
        self._client = client
        self._state = _LinkState.UP
        self._failed_attempts = 0
        self._backoff.reset()
        self._silent_requests = 0
        return True

    def _mark_lost(self, reason: str) -> None:
        """The connection is gone or unusable: close it; the next request reconnects."""
        client, self._client = self._client, None
        if client is not None:
            client.close()
        if self._state is _LinkState.UP:
            log.warning("%s lost: %s", self._description, reason)
        self._state = _LinkState.DOWN
        self._next_attempt = 0.0  # first reconnect attempt right away, then backoff

    async def _ensure_connected(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        """Called with the lock held: the client, or DeviceLost when the link is down."""
        client = self._client
        if client is not None and client.connected:
            return client
        if client is not None:  # pymodbus saw the connection close
            self._mark_lost("connection closed")
        if self._closed:
            raise DeviceLost(f"{self._description} is closed")
        wait = self._next_attempt - time.monotonic()
        if wait > 0:
            raise DeviceLost(
                f"{self._description}: not connected; next attempt in {wait:.1f} s",
                follow_up=True,
            )
        if not await self._connect_locked():
            raise DeviceLost(f"{self._description}: cannot connect")
        assert self._client is not None
        return self._client

    async def _execute(
        self,
        device_id: int,
        call: Callable[[AsyncModbusTcpClient | AsyncModbusSerialClient], Awaitable[ModbusPDU]],
        what: str,
        function_code: int,
    ) -> ModbusPDU:
        """Run one pymodbus request (of `function_code`) under the link lock and map its
        failures.

        For ModbusModule; returns the (non-exception) response PDU.
        """
        where = f"{self._description} device {device_id}"
        async with self._get_lock():
            client = await self._ensure_connected()
            try:
                async with asyncio.timeout(self._timeout_s + _GUARD_S):
                    response = await call(client)
            except TimeoutError:
                # pymodbus did not return within its own timeout: its state is unknown.
                self._mark_lost(f"{what} hung beyond {self._timeout_s + _GUARD_S:g} s")
                raise DeviceTimeout(f"{where}: {what}: no response") from None
            except ConnectionException as exc:
                self._mark_lost(str(exc))
                raise DeviceLost(f"{where}: {what}: {exc}") from exc
            except ModbusIOException as exc:
                if not client.connected:
                    self._mark_lost("connection closed")
                    raise DeviceLost(f"{where}: {what}: connection closed") from exc
                self._count_silence()
                raise DeviceTimeout(
                    f"{where}: {what}: no response within {self._timeout_s:g} s"
                ) from None
            except (ModbusException, OSError, ValueError, struct_error) as exc:
                # A reply pymodbus could not decode, or an I/O error on the port.
                if not client.connected:
                    self._mark_lost(str(exc))
                    raise DeviceLost(f"{where}: {what}: {exc}") from exc
                raise DeviceError(f"{where}: {what}: bad reply: {exc}") from exc
            self._silent_requests = 0
        if response.function_code & 0x7F != function_code:
            # pymodbus hands back whatever PDU the frame holds: FC 4 data answering an FC 3
            # request would otherwise be read as the registers asked for.
            raise DeviceError(
                f"{where}: {what}: bad reply: function {response.function_code:#04x} "
                f"answers a function {function_code} request"
            )
        if isinstance(response, ExceptionResponse) or response.isError():
            code = int(getattr(response, "exception_code", 0))
            name = EXCEPTION_NAMES.get(code, f"UNKNOWN EXCEPTION {code}")
            if code == _GATEWAY_NO_RESPONSE:
                raise DeviceTimeout(f"{where}: {what}: gateway says the device did not respond")
            raise ModbusExceptionError(
                f"{where}: {what}: exception {code:#04x} ({name})",
                code=code,
                function_code=function_code,
            )
        return response

    def _count_silence(self) -> None:
        self._silent_requests += 1
        if not self.is_serial and self._silent_requests >= self._lost_after:
            self._mark_lost(f"{self._silent_requests} requests in a row unanswered")


# -- module -------------------------------------------------------------------------------


class ModbusModule:
    """One Modbus device (device_id, a.k.a. unit id or slave id) on a link.

    Methods may be called from several tasks: the link lock serializes them. A module that
    stopped answering is probed at most every `probe_interval_s`; calls in between raise
    DeviceTimeout at once, so a dead module costs its line one timeout per probe, not one
    per poll. While the module answers, a timeout is retried `retries` times at once.
    """

    def __init__(
        self,
        *,
        link: ModbusLink,
        device_id: int,
        retries: int = 1,
        probe_interval_s: float = 1.0,
    ) -> None:
        if not isinstance(link, ModbusLink):
            raise ValueError(f"link must be a ModbusLink, got {link!r}")
        # RTU: 0 is broadcast (never answered), 248..255 reserved. TCP: any unit id; 0 and
        # 255 are common for a module addressed directly.
        low, high = (1, 247) if link.is_serial else (0, 255)
        self._device_id = _check_int("device_id", device_id, low, high)
        self._retries = _check_int("retries", retries, 0, 5)
        self._probe_interval_s = _check_seconds("probe_interval_s", probe_interval_s)
        self._link = link
        self._description = f"{link.description} device {device_id}"
        self._silent_since: float | None = None
        self._last_attempt = -math.inf

    @property
    def link(self) -> ModbusLink:
        return self._link

    @property
    def device_id(self) -> int:
        return self._device_id

    @property
    def description(self) -> str:
        return self._description

    @property
    def responsive(self) -> bool:
        """False after a request went unanswered, until one is answered again."""
        return self._silent_since is None

    # -- typed reads and writes -------------------------------------------------------

    async def read_discrete_inputs(self, address: int, count: int) -> tuple[bool, ...]:
        """Function 2."""
        return await self._read_bits("discrete_input", address, count)

    async def read_coils(self, address: int, count: int) -> tuple[bool, ...]:
        """Function 1."""
        return await self._read_bits("coil", address, count)

    async def read_input_registers(self, address: int, count: int) -> tuple[int, ...]:
        """Function 4."""
        return await self._read_registers("input_register", address, count)

    async def read_holding_registers(self, address: int, count: int) -> tuple[int, ...]:
        """Function 3."""
        return await self._read_registers("holding_register", address, count)

    async def read_block(self, block: Block) -> tuple[bool, ...] | tuple[int, ...]:
        if block.table in _BIT_TABLES:
            return await self._read_bits(block.table, block.address, block.count)
        return await self._read_registers(block.table, block.address, block.count)

    async def write_coil(self, address: int, value: bool) -> None:
        """Function 5 (a relay or digital output); checks the module's echo."""
        _check_int("address", address, 0, 0xFFFF)
        if not isinstance(value, bool):
            raise ValueError(f"value must be a bool, got {value!r}")
        what = f"write coil {address} {'on' if value else 'off'}"
        device_id = self._device_id
        response = await self._request(
            lambda c: c.write_coil(address, value, device_id=device_id), what, 5
        )
        echoed = getattr(response, "address", None), list(getattr(response, "bits", []))[:1]
        if echoed != (address, [value]):
            raise DeviceError(f"{self._description}: {what}: module echoed {echoed!r}")

    # -- polling ----------------------------------------------------------------------

    async def poll(self, input_map: InputMap) -> PollResult:
        """Read every block of `input_map`; a Snapshot, or a PollFailure (never raises a
        DeviceError). The first failing block ends the poll."""
        start = time.monotonic()
        data: list[tuple[bool, ...] | tuple[int, ...]] = []
        try:
            for block in input_map.blocks:
                data.append(await self.read_block(block))
        except DeviceError as exc:
            now = time.monotonic()
            return PollFailure(t_mono=now, ts=time.time(), duration_s=now - start, error=exc)
        now = time.monotonic()
        return Snapshot(
            t_mono=now, ts=time.time(), duration_s=now - start, values=input_map.decode(data)
        )

    # -- internals --------------------------------------------------------------------

    async def _read_bits(self, table: str, address: int, count: int) -> tuple[bool, ...]:
        _check_range(address, count, _MAX_BITS)
        device_id = self._device_id
        if table == "coil":
            what = f"read coils {address}+{count}"
            response = await self._request(
                lambda c: c.read_coils(address, count=count, device_id=device_id), what, 1
            )
        else:
            what = f"read discrete inputs {address}+{count}"
            response = await self._request(
                lambda c: c.read_discrete_inputs(address, count=count, device_id=device_id),
                what,
                2,
            )
        bits = list(getattr(response, "bits", None) or [])
        if len(bits) < count:  # bits come padded to whole bytes
            raise DeviceError(f"{self._description}: {what}: short reply ({len(bits)} bits)")
        return tuple(bool(b) for b in bits[:count])

    async def _read_registers(self, table: str, address: int, count: int) -> tuple[int, ...]:
        _check_range(address, count, _MAX_REGISTERS)
        device_id = self._device_id
        if table == "input_register":
            what = f"read input registers {address}+{count}"
            response = await self._request(
                lambda c: c.read_input_registers(address, count=count, device_id=device_id),
                what,
                4,
            )
        else:
            what = f"read holding registers {address}+{count}"
            response = await self._request(
                lambda c: c.read_holding_registers(address, count=count, device_id=device_id),
                what,
                3,
            )
        registers = list(getattr(response, "registers", None) or [])
        if len(registers) != count:
            raise DeviceError(
                f"{self._description}: {what}: reply holds {len(registers)} registers"
            )
        return tuple(int(r) for r in registers)

    async def _request(
        self,
        call: Callable[[AsyncModbusTcpClient | AsyncModbusSerialClient], Awaitable[ModbusPDU]],
        what: str,
        function_code: int,
    ) -> ModbusPDU:
        now = time.monotonic()
        if self._silent_since is not None:
            wait = self._last_attempt + self._probe_interval_s - now
            if wait > 0:
                raise DeviceTimeout(
                    f"{self._description}: {what}: skipped, not answering for "
                    f"{now - self._silent_since:.1f} s (next probe in {wait:.1f} s)",
                    follow_up=True,
                )
        attempts = 1 + (self._retries if self._silent_since is None else 0)
        for attempt in range(attempts):
            self._last_attempt = time.monotonic()
            try:
                response = await self._link._execute(self._device_id, call, what, function_code)
            except DeviceTimeout:
                if attempt + 1 < attempts:
                    continue
                if self._silent_since is None:
                    self._silent_since = time.monotonic()
                    log.warning("%s: not answering (%s)", self._description, what)
                raise
            except ModbusExceptionError:
                self._answered()  # an exception reply is an answer: the module is alive
                raise
            self._answered()
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _answered(self) -> None:
        if self._silent_since is not None:
            log.info(
                "%s answering again after %.1f s",
                self._description,
                time.monotonic() - self._silent_since,
            )
            self._silent_since = None


def _check_range(address: int, count: int, limit: int) -> None:
    _check_int("address", address, 0, 0xFFFF)
    _check_int("count", count, 1, limit)
    if address + count > 0x10000:
        raise ValueError(f"address {address} + count {count} runs past 65535")


# -- poller -------------------------------------------------------------------------------


class ModbusPoller:
    """Fixed-rate polling of one module, driven by the caller.

    `await poller.next()` sleeps until the next slot (every `interval_s` from the first
    call), polls, and returns the result. When a poll overruns its slot the missed slots are
    skipped rather than run back to back.
    """

    def __init__(
        self, *, module: ModbusModule, input_map: InputMap, interval_s: float = 0.1
    ) -> None:
        if not isinstance(module, ModbusModule):
            raise ValueError(f"module must be a ModbusModule, got {module!r}")
        if not isinstance(input_map, InputMap):
            raise ValueError(f"input_map must be an InputMap, got {input_map!r}")
        self._module = module
        self._input_map = input_map
        self._interval_s = _check_seconds("interval_s", interval_s, maximum=3600.0)
        self._due: float | None = None

    @property
    def module(self) -> ModbusModule:
        return self._module

    @property
    def input_map(self) -> InputMap:
        return self._input_map

    @property
    def interval_s(self) -> float:
        return self._interval_s

    async def next(self) -> PollResult:
        now = time.monotonic()
        if self._due is None:
            self._due = now
        elif self._due > now:
            await asyncio.sleep(self._due - now)
        result = await self._module.poll(self._input_map)
        self._due += self._interval_s
        late = time.monotonic() - self._due
        if late > 0:  # overran: skip the slots already missed
            self._due += math.ceil(late / self._interval_s) * self._interval_s
        return result


# -- supervised lines ---------------------------------------------------------------------


class LineState(enum.StrEnum):
    """State of a supervised (end-of-line resistor) alarm loop."""

    NORMAL = "normal"
    ALARM = "alarm"
    TROUBLE_OPEN = "trouble_open"
    TROUBLE_SHORT = "trouble_short"


@dataclass(frozen=True, slots=True)
class SupervisedLine:
    """Classify an analog value (raw counts, volts, ohms: any unit) into line states.

    `bands` are (upper bound, state) pairs in ascending order; a value belongs to the first
    band whose upper bound it is below, and the last bound must be +inf. A typical loop
    measured as a voltage reads: short near 0, then normal (EOL resistor alone), then alarm
    (contact adds or removes a resistor), then open near full scale; the order of normal
    and alarm depends on the wiring, which is why the bands are explicit.

    Hysteresis: a line stays in its previous state while the value is within `hysteresis`
    of that state's band, so a value sitting on a boundary does not flap.
    """

    bands: tuple[tuple[float, LineState], ...]
    hysteresis: float = 0.0
    _lows: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        bands = tuple(self.bands)
        if len(bands) < 2:
            raise ValueError("a supervised line needs at least two bands")
        bounds: list[float] = []
        for entry in bands:
            if not (isinstance(entry, tuple) and len(entry) == 2):
                raise ValueError(f"a band is an (upper bound, LineState) pair, got {entry!r}")
            bound, state = entry
            if isinstance(bound, bool) or not isinstance(bound, int | float) or math.isnan(bound):
                raise ValueError(f"band bound must be a number, got {bound!r}")
            if not isinstance(state, LineState):
                raise ValueError(f"band state must be a LineState, got {state!r}")
            bounds.append(float(bound))
        if any(b <= a for a, b in itertools.pairwise(bounds)):
            raise ValueError(f"band bounds must be strictly ascending: {bounds}")
        if bounds[-1] != math.inf:
            raise ValueError("the last band's upper bound must be math.inf")
        if any(bands[i][1] == bands[i + 1][1] for i in range(len(bands) - 1)):
            raise ValueError("adjacent bands must have different states (merge them)")
        h = self.hysteresis
        if (
            isinstance(h, bool)
            or not isinstance(h, int | float)
            or not (math.isfinite(h) and h >= 0)
        ):
            raise ValueError(f"hysteresis must be a finite number >= 0, got {h!r}")
        widths = [b - a for a, b in itertools.pairwise(bounds)]
        if widths and h * 2 >= min(widths):
            raise ValueError("hysteresis must be less than half the narrowest band")
        object.__setattr__(self, "bands", bands)
        object.__setattr__(self, "_lows", (-math.inf, *bounds[:-1]))

    @classmethod
    def from_nominals(
        cls, nominals: Mapping[LineState, float], *, hysteresis_fraction: float = 0.1
    ) -> SupervisedLine:
        """Bands from the value each state nominally reads, boundaries halfway between.

        E.g. {TROUBLE_SHORT: 0, NORMAL: 2.5, ALARM: 3.75, TROUBLE_OPEN: 5.0} (volts).
        Hysteresis is `hysteresis_fraction` of the smallest gap between nominals.
        """
        if not nominals or len(nominals) < 2:
            raise ValueError("give the nominal value of at least two states")
        if not (0 <= hysteresis_fraction < 0.25):
            raise ValueError(f"hysteresis_fraction must be in [0, 0.25): {hysteresis_fraction}")
        ordered = sorted(nominals.items(), key=lambda item: item[1])
        values = [float(v) for _, v in ordered]
        if any(b <= a for a, b in itertools.pairwise(values)):
            raise ValueError(f"nominal values must differ: {dict(nominals)}")
        bounds = [(a + b) / 2 for a, b in itertools.pairwise(values)] + [math.inf]
        gap = min(b - a for a, b in itertools.pairwise(values))
        return cls(
            bands=tuple((bound, state) for bound, (state, _) in zip(bounds, ordered, strict=True)),
            hysteresis=gap * hysteresis_fraction,
        )

    def classify(self, value: float, previous: LineState | None = None) -> LineState:
        """The state for `value`, given the state the line was in (None: no history)."""
        if math.isnan(value):
            raise ValueError("cannot classify NaN")
        if previous is not None and self.hysteresis > 0:
            for (high, state), low in zip(self.bands, self._lows, strict=True):
                if state == previous and low - self.hysteresis <= value < high + self.hysteresis:
                    return previous
        for high, state in self.bands:
            if value < high:
                return state
        raise AssertionError("unreachable: the last bound is +inf")  # pragma: no cover
