"""Simulated Modbus IO modules: real Modbus TCP on 127.0.0.1, or Modbus RTU over a pty pair.

A `SimModbusServer` is one listener (a TCP port, or one simulated RS-485 line) with one or
more `SimModule`s behind it, each with its own device_id: several device_ids behind one
server is a TCP/RTU gateway or a shared RS-485 line. Requests are decoded and answered with
pymodbus's own framers and PDU classes, so the bytes on the wire are real Modbus; the data
store and the request loop are ours, which lets every device_id answer on its own schedule
(pymodbus's server answers strictly one request after another per connection).

Each SimModule models a real module (see PROFILES): a digital input channel shows at every
address the vendor maps it to (bit, bitmask word), a rising edge increments its counter
(in the vendor's word order), and a relay written as a coil shows in the output word too.
Addresses outside the vendor map answer ILLEGAL DATA ADDRESS, as the modules do.

Faults, per module: silent (no answer at all), a fixed exception code, a delay before each
answer, malformed answers ("short": a well-framed reply with too few values; "garbage":
bytes that are no Modbus frame). Per TCP server: drop every connection, unplug (refuse
connections until replug). A request for a device_id nobody serves is answered 0x0B
(gateway target failed to respond) on TCP, like a TCP/RTU gateway, and ignored on RTU.

Threading: servers run on an asyncio loop in a thread of their own (`SimLoop`; one is made
per server unless several servers share one). Every public method is thread-safe and quick,
so an async test may call them directly. `python -m hw_sim.modbus` runs servers in a
separate process, scripted by JSON lines on stdin (see `main`).

RTU over a pty: the simulator holds the master side and keeps one slave fd open itself so
the line survives clients coming and going; the client opens `serial_path` like any serial
port. A pty has no baud rate, so timing is not simulated; unplug/drop are TCP-only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
import tty
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self, TypeAlias, TypeVar

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ModbusIOException
from pymodbus.framer import FramerBase, FramerRTU, FramerSocket
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU

__all__ = [
    "PROFILES",
    "SimLoop",
    "SimModbusServer",
    "SimModule",
    "SimProfile",
]

Table: TypeAlias = Literal["coil", "discrete_input", "input_register", "holding_register"]
WordOrder: TypeAlias = Literal["high_first", "low_first"]
Malformed: TypeAlias = Literal["short", "garbage"]
Ranges: TypeAlias = tuple[tuple[int, int], ...]
"""(first address, count) pairs."""

_TABLES: tuple[Table, ...] = ("coil", "discrete_input", "input_register", "holding_register")
_FC_TABLE: dict[int, Table] = {
    1: "coil",
    5: "coil",
    15: "coil",
    2: "discrete_input",
    3: "holding_register",
    6: "holding_register",
    16: "holding_register",
    22: "holding_register",
    23: "holding_register",
    4: "input_register",
}
_CALL_TIMEOUT_S = 5.0
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class SimProfile:
    """What a simulated module looks like on the wire (0-based protocol addresses)."""

    name: str
    description: str
    readable: Mapping[Table, Ranges]
    """Addresses that answer reads; anything else is ILLEGAL DATA ADDRESS."""
    writable: Mapping[Table, Ranges] = field(default_factory=dict)
    di_channels: int = 0
    di_bits: tuple[tuple[Table, int], ...] = ()
    """Where DI channel n shows as a bit: (table, address of channel 0), one entry per alias."""
    di_word: tuple[Table, int] | None = None
    """A register whose bit n is DI channel n (channels 0..15)."""
    counters: tuple[Table, int, int, WordOrder] | None = None
    """(table, address of channel 0, registers per counter, word order)."""
    do_channels: int = 0
    do_coil: int | None = None
    """Coil address of output channel 0."""
    do_word: tuple[Table, int] | None = None
    """A register whose bit n is output channel n."""
    analog_channels: int = 0
    analog: tuple[Literal["input_register", "holding_register"], int] | None = None
    """Register of analog channel 0 (raw value, one register per channel)."""


def _r(*pairs: tuple[int, int]) -> Ranges:
    return tuple(pairs)


# Register maps modelled from the vendors' manuals; see drivers/modbus_presets.py for the
# sources and for what could not be confirmed. The simulator is written from the manuals,
# not from the presets, so the preset tests check one against the other.
PROFILES: dict[str, SimProfile] = {
    "generic": SimProfile(
        name="generic",
        description="16 DI (FC2 0-15, word IR 16), 8 coils (0-7), 8 analog IR (0-7)",
        readable={
            "discrete_input": _r((0, 16)),
            "coil": _r((0, 8)),
            "input_register": _r((0, 8), (16, 1)),
            "holding_register": _r((0, 16)),
        },
        writable={"coil": _r((0, 8)), "holding_register": _r((0, 16))},
        di_channels=16,
        di_bits=(("discrete_input", 0),),
        di_word=("input_register", 16),
        do_channels=8,
        do_coil=0,
        analog_channels=8,
        analog=("input_register", 0),
    ),
    # ADAM-6000 manual, appendix B: DI 00001.., DO 00017.., counters 40001.. low word
    # first, DI word 40301, DO word 40303. DIs also answer function 2 (field reports).
    "adam6050": SimProfile(
        name="adam6050",
        description="Advantech ADAM-6050: 12 DI, 6 DO",
        readable={
            "coil": _r((0, 12), (16, 6)),
            "discrete_input": _r((0, 12)),
            "holding_register": _r((0, 24), (300, 1), (302, 1)),
        },
        writable={"coil": _r((16, 6)), "holding_register": _r((302, 1))},
        di_channels=12,
        di_bits=(("coil", 0), ("discrete_input", 0)),
        di_word=("holding_register", 300),
        counters=("holding_register", 0, 2, "low_first"),
        do_channels=6,
        do_coil=16,
        do_word=("holding_register", 302),
    ),
    "adam6060": SimProfile(
        name="adam6060",
        description="Advantech ADAM-6060: 6 DI, 6 relays",
        readable={
            "coil": _r((0, 6), (16, 6)),
            "discrete_input": _r((0, 6)),
            "holding_register": _r((0, 12), (300, 1), (302, 1)),
        },
        writable={"coil": _r((16, 6)), "holding_register": _r((302, 1))},
        di_channels=6,
        di_bits=(("coil", 0), ("discrete_input", 0)),
        di_word=("holding_register", 300),
        counters=("holding_register", 0, 2, "low_first"),
        do_channels=6,
        do_coil=16,
        do_word=("holding_register", 302),
    ),
    # ioLogik E1200 manual, appendix A: DI 10001.. (0x0000), counters 30017.. (0x0010)
    # high word first, DI word 30049 (0x0030).
    "e1210": SimProfile(
        name="e1210",
        description="Moxa ioLogik E1210: 16 DI",
        readable={"discrete_input": _r((0, 16)), "input_register": _r((0x10, 32), (0x30, 1))},
        di_channels=16,
        di_bits=(("discrete_input", 0),),
        di_word=("input_register", 0x30),
        counters=("input_register", 0x10, 2, "high_first"),
    ),
    # E1212: 8 DI + 8 DIO; DIO as inputs are channels 8-15, as outputs coils 0-7; DO word
    # 40033 (0x0020).
    "e1212": SimProfile(
        name="e1212",
        description="Moxa ioLogik E1212: 8 DI + 8 DIO",
        readable={
            "discrete_input": _r((0, 16)),
            "coil": _r((0, 8)),
            "input_register": _r((0x10, 32), (0x30, 1)),
            "holding_register": _r((0x20, 1)),
        },
        writable={"coil": _r((0, 8)), "holding_register": _r((0x20, 1))},
        di_channels=16,
        di_bits=(("discrete_input", 0),),
        di_word=("input_register", 0x30),
        counters=("input_register", 0x10, 2, "high_first"),
        do_channels=8,
        do_coil=0,
        do_word=("holding_register", 0x20),
    ),
    # Brainboxes ED product data tables: DI FC2 0x0000 (and coils 0x0020), DI word IR
    # 0x0020, one 16-bit counter register per channel IR 0x0000, relays coils 0x0000, DO
    # word HR 0x0020.
    "ed538": SimProfile(
        name="ed538",
        description="Brainboxes ED-538: 8 DI, 4 relays",
        readable={
            "discrete_input": _r((0, 8)),
            "coil": _r((0, 4), (0x20, 8)),
            "input_register": _r((0, 8), (0x20, 1)),
            "holding_register": _r((0, 8), (0x20, 1)),
        },
        writable={"coil": _r((0, 4)), "holding_register": _r((0x20, 1))},
        di_channels=8,
        di_bits=(("discrete_input", 0), ("coil", 0x20)),
        di_word=("input_register", 0x20),
        counters=("input_register", 0, 1, "high_first"),
        do_channels=4,
        do_coil=0,
        do_word=("holding_register", 0x20),
    ),
}


def _in(ranges: Ranges, address: int, count: int) -> bool:
    return any(start <= address and address + count <= start + size for start, size in ranges)


@dataclass(frozen=True, slots=True)
class _Faults:
    silent: bool = False
    delay_s: float = 0.0
    exception: int | None = None
    malformed: Malformed | None = None


class SimModule:
    """One simulated IO module (one device_id). Thread-safe."""

    def __init__(self, *, device_id: int, profile: str | SimProfile = "generic") -> None:
        if isinstance(device_id, bool) or not isinstance(device_id, int):
            raise ValueError(f"device_id must be an int, got {device_id!r}")
        if not 0 <= device_id <= 255:
            raise ValueError(f"device_id must be 0..255, got {device_id}")
        if isinstance(profile, str):
            if profile not in PROFILES:
                raise ValueError(f"unknown profile {profile!r}; known: {sorted(PROFILES)}")
            profile = PROFILES[profile]
        self.device_id = device_id
        self.profile = profile
        self._lock = threading.Lock()
        self._values: dict[Table, dict[int, int]] = {t: {} for t in _TABLES}
        self._faults = _Faults()
        self._requests = 0
        self._answered = 0
        self._coil_writes: list[tuple[int, bool]] = []

    # -- channel-level scripting --------------------------------------------------------

    def set_input(self, channel: int, on: bool) -> None:
        """Drive digital input `channel`; a rising edge counts one pulse."""
        p = self.profile
        _check_channel(channel, p.di_channels, "digital input")
        with self._lock:
            was = self._di_locked(channel)
            for table, base in p.di_bits:
                self._values[table][base + channel] = int(on)
            if p.di_word is not None and channel < 16:
                table, address = p.di_word
                word = self._values[table].get(address, 0)
                self._values[table][address] = (
                    word | (1 << channel) if on else word & ~(1 << channel)
                )
            if on and not was and p.counters is not None:
                self._set_counter_locked(channel, self._counter_locked(channel) + 1)

    def input(self, channel: int) -> bool:
        _check_channel(channel, self.profile.di_channels, "digital input")
        with self._lock:
            return self._di_locked(channel)

    def set_counter(self, channel: int, value: int) -> None:
        p = self.profile
        _check_channel(channel, p.di_channels, "counter")
        if p.counters is None:
            raise ValueError(f"{p.name} has no counters")
        limit = 1 << (16 * p.counters[2])
        if not 0 <= value < limit:
            raise ValueError(f"counter value must be 0..{limit - 1}")
        with self._lock:
            self._set_counter_locked(channel, value)

    def counter(self, channel: int) -> int:
        _check_channel(channel, self.profile.di_channels, "counter")
        with self._lock:
            return self._counter_locked(channel)

    def output(self, channel: int) -> bool:
        """The output (relay) as the client last wrote it."""
        p = self.profile
        _check_channel(channel, p.do_channels, "output")
        assert p.do_coil is not None
        with self._lock:
            return bool(self._values["coil"].get(p.do_coil + channel, 0))

    def set_analog(self, channel: int, raw: int) -> None:
        p = self.profile
        _check_channel(channel, p.analog_channels, "analog input")
        assert p.analog is not None
        self.set_register(p.analog[0], p.analog[1] + channel, raw)

    # -- raw tables -----------------------------------------------------------------------

    def set_bit(self, table: Literal["coil", "discrete_input"], address: int, value: bool) -> None:
        if table not in ("coil", "discrete_input"):
            raise ValueError(f"not a bit table: {table!r}")
        with self._lock:
            self._values[table][address] = int(bool(value))

    def set_register(
        self, table: Literal["input_register", "holding_register"], address: int, value: int
    ) -> None:
        if table not in ("input_register", "holding_register"):
            raise ValueError(f"not a register table: {table!r}")
        if not 0 <= value <= 0xFFFF:
            raise ValueError(f"a register holds 0..65535, got {value}")
        with self._lock:
            self._values[table][address] = value

    def get(self, table: Table, address: int) -> int:
        with self._lock:
            return self._values[table].get(address, 0)

    # -- faults and statistics --------------------------------------------------------

    def set_silent(self, silent: bool) -> None:
        """Answer nothing at all (a dead or disconnected module)."""
        self._update_faults(silent=bool(silent))

    def set_delay(self, seconds: float) -> None:
        """Wait this long before answering each request (0 = answer at once)."""
        if not 0 <= seconds <= 60:
            raise ValueError(f"delay must be 0..60 s, got {seconds}")
        self._update_faults(delay_s=float(seconds))

    def set_exception(self, code: int | None) -> None:
        """Answer every request with this Modbus exception code (None = answer normally)."""
        if code is not None and not 1 <= code <= 0x7F:
            raise ValueError(f"exception code must be 1..127, got {code}")
        self._update_faults(exception=code)

    def set_malformed(self, kind: Malformed | None) -> None:
        """ "short": replies with one value too few; "garbage": bytes that are no frame."""
        if kind not in (None, "short", "garbage"):
            raise ValueError(f"malformed must be None, 'short' or 'garbage', got {kind!r}")
        self._update_faults(malformed=kind)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults = _Faults()

    @property
    def requests(self) -> int:
        """Requests received for this device_id (answered or not)."""
        with self._lock:
            return self._requests

    @property
    def answered(self) -> int:
        with self._lock:
            return self._answered

    def coil_writes(self) -> list[tuple[int, bool]]:
        """(address, value) of every coil write received, oldest first."""
        with self._lock:
            return list(self._coil_writes)

    # -- server side (called on the sim loop) -------------------------------------------

    def _faults_and_count(self) -> _Faults:
        with self._lock:
            self._requests += 1
            return self._faults

    def _count_answer(self) -> None:
        with self._lock:
            self._answered += 1

    def _read(self, table: Table, address: int, count: int) -> list[int] | ExcCodes:
        with self._lock:
            if not _in(self.profile.readable.get(table, ()), address, count):
                return ExcCodes.ILLEGAL_ADDRESS
            values = self._values[table]
            return [values.get(a, 0) for a in range(address, address + count)]

    def _write(self, table: Table, address: int, values: Sequence[int]) -> ExcCodes | None:
        p = self.profile
        with self._lock:
            if not _in(p.writable.get(table, ()), address, len(values)):
                return ExcCodes.ILLEGAL_ADDRESS
            for offset, value in enumerate(values):
                self._values[table][address + offset] = int(value)
                if table == "coil":
                    self._coil_writes.append((address + offset, bool(value)))
            self._mirror_outputs_locked(table, address, len(values))
        return None

    # -- internals --------------------------------------------------------------------------

    def _update_faults(self, **changes: Any) -> None:
        with self._lock:
            current = self._faults
            self._faults = _Faults(
                silent=changes.get("silent", current.silent),
                delay_s=changes.get("delay_s", current.delay_s),
                exception=changes.get("exception", current.exception),
                malformed=changes.get("malformed", current.malformed),
            )

    def _di_locked(self, channel: int) -> bool:
        table, base = self.profile.di_bits[0]
        return bool(self._values[table].get(base + channel, 0))

    def _counter_locked(self, channel: int) -> int:
        assert self.profile.counters is not None
        table, base, words, order = self.profile.counters
        regs = [self._values[table].get(base + channel * words + i, 0) for i in range(words)]
        if order == "low_first":
            regs.reverse()
        value = 0
        for reg in regs:
            value = (value << 16) | reg
        return value

    def _set_counter_locked(self, channel: int, value: int) -> None:
        assert self.profile.counters is not None
        table, base, words, order = self.profile.counters
        value &= (1 << (16 * words)) - 1
        regs = [(value >> (16 * (words - 1 - i))) & 0xFFFF for i in range(words)]  # high first
        if order == "low_first":
            regs.reverse()
        for i, reg in enumerate(regs):
            self._values[table][base + channel * words + i] = reg

    def _mirror_outputs_locked(self, table: Table, address: int, count: int) -> None:
        """Keep the output coils and the output word in step, whichever was written."""
        p = self.profile
        if p.do_coil is None or p.do_word is None:
            return
        word_table, word_address = p.do_word
        coils = self._values["coil"]
        if table == "coil":
            word = 0
            for ch in range(p.do_channels):
                word |= coils.get(p.do_coil + ch, 0) << ch
            self._values[word_table][word_address] = word
        elif table == word_table and address <= word_address < address + count:
            word = self._values[word_table][word_address]
            for ch in range(p.do_channels):
                coils[p.do_coil + ch] = (word >> ch) & 1


def _check_channel(channel: int, channels: int, what: str) -> None:
    if isinstance(channel, bool) or not isinstance(channel, int):
        raise ValueError(f"{what} channel must be an int, got {channel!r}")
    if not 0 <= channel < channels:
        raise ValueError(f"{what} channel {channel} out of range (module has {channels})")


class _Context:
    """The two calls pymodbus's request PDUs make on a datastore (datastore_update)."""

    def __init__(self, module: SimModule) -> None:
        self._module = module

    async def async_getValues(  # noqa: N802 - pymodbus's name
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        table = _FC_TABLE.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        values = self._module._read(table, address, count)
        if isinstance(values, ExcCodes) or table not in ("coil", "discrete_input"):
            return values
        return [bool(v) for v in values]

    async def async_setValues(  # noqa: N802 - pymodbus's name
        self, device_id: int, func_code: int, address: int, values: Sequence[int] | Sequence[bool]
    ) -> ExcCodes | None:
        table = _FC_TABLE.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        return self._module._write(table, address, [int(v) for v in values])


# -- event loop thread -----------------------------------------------------------------------


class SimLoop:
    """An asyncio loop in a daemon thread, shared by any number of servers."""

    def __init__(self, name: str = "modbus-sim") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._ready.clear()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        if not self._ready.wait(_CALL_TIMEOUT_S):
            raise RuntimeError("simulator loop did not start")

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # loop already closed
            loop.call_soon_threadsafe(loop.stop)
        thread.join(_CALL_TIMEOUT_S)
        self._thread = None

    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run a coroutine on the loop and wait for its result (from any other thread)."""
        if self._loop is None or not self.running:
            coro.close()
            raise RuntimeError("simulator loop is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(_CALL_TIMEOUT_S)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        loop.call_soon(self._ready.set)
        try:
            loop.run_forever()
        finally:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.close()


# -- servers ---------------------------------------------------------------------------------


class _Line:
    """Request decoding and answering, shared by the TCP connections and the RTU line."""

    def __init__(self, server: SimModbusServer, framer: FramerBase, send: Callable[[bytes], None]):
        self._server = server
        self._framer = framer
        self._send = send
        self._buffer = b""
        self._tasks: set[asyncio.Task[None]] = set()

    def feed(self, data: bytes) -> None:
        self._buffer += data
        while self._buffer:
            try:
                used, pdu = self._framer.handleFrame(self._buffer, 0, 0)
            except ModbusIOException as exc:  # unknown function code
                self._buffer = b""
                reply = ExceptionResponse(
                    exc.fcode or 0, ExcCodes.ILLEGAL_FUNCTION, exc.dev_id or 0, exc.transaction_id
                )
                self._send(self._framer.buildFrame(reply))
                return
            self._buffer = self._buffer[used:]
            if pdu is None:
                if len(self._buffer) > 512:  # no frame in sight: resynchronize
                    self._buffer = b""
                return
            task = asyncio.get_running_loop().create_task(self._answer(pdu))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    async def _answer(self, request: ModbusPDU) -> None:
        module = self._server.module(request.dev_id)
        if module is None:
            if self._server.transport == "tcp":
                reply: ModbusPDU = ExceptionResponse(
                    request.function_code, ExcCodes.GATEWAY_NO_RESPONSE
                )
                self._reply(request, reply)
            return  # on a serial line nobody answers for an absent address
        faults = module._faults_and_count()
        if faults.silent:
            return
        if faults.delay_s:
            await asyncio.sleep(faults.delay_s)
        if faults.malformed == "garbage":
            self._send(b"\xff\xfe\x00\x07\x01\x99garbage")
            module._count_answer()
            return
        if faults.exception is not None:
            reply = ExceptionResponse(request.function_code, faults.exception)
        else:
            reply = await request.datastore_update(_Context(module), request.dev_id)  # type: ignore[arg-type]
        if faults.malformed == "short":
            if getattr(reply, "registers", None):
                reply.registers = reply.registers[:-1]
            elif getattr(reply, "bits", None) and request.function_code != 5:
                reply.bits = reply.bits[: max(0, ((len(reply.bits) + 7) // 8 - 1) * 8)]
        self._reply(request, reply)
        module._count_answer()

    def _reply(self, request: ModbusPDU, reply: ModbusPDU) -> None:
        reply.dev_id = request.dev_id
        reply.transaction_id = request.transaction_id
        self._send(self._framer.buildFrame(reply))


class _TcpConnection(asyncio.Protocol):
    def __init__(self, server: SimModbusServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._line: _Line | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._line = _Line(self._server, FramerSocket(DecodePDU(True)), self._write)
        self._server._connection_made(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._line is not None:
            self._line.cancel()
        self._server._connection_lost(self)

    def data_received(self, data: bytes) -> None:
        if self._line is not None:
            self._line.feed(data)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _write(self, frame: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(frame)


class SimModbusServer:
    """One simulated listener: a TCP port on 127.0.0.1, or an RTU line on a pty pair."""

    def __init__(
        self,
        *,
        modules: Iterable[SimModule],
        transport: Literal["tcp", "rtu"] = "tcp",
        host: str = "127.0.0.1",
        port: int = 0,
        loop: SimLoop | None = None,
    ) -> None:
        mods = list(modules)
        if not mods:
            raise ValueError("a server needs at least one module")
        ids = [m.device_id for m in mods]
        if len(set(ids)) != len(ids):
            raise ValueError(f"device_ids must be unique on a server: {ids}")
        if transport not in ("tcp", "rtu"):
            raise ValueError(f"transport must be 'tcp' or 'rtu', got {transport!r}")
        self.transport = transport
        self._modules = {m.device_id: m for m in mods}
        self._host = host
        self._port = port
        self._own_loop = loop is None
        self._loop = loop if loop is not None else SimLoop(f"modbus-sim-{transport}")
        self._server: asyncio.Server | None = None
        self._connections: set[_TcpConnection] = set()
        self._accepted = 0
        self._lock = threading.Lock()
        self._master_fd: int | None = None
        self._slave_fd: int | None = None
        self._serial_path: str | None = None
        self._rtu_line: _Line | None = None
        self._started = False

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        if self._started:
            return
        self._loop.start()
        self._loop.run(self._start_tcp() if self.transport == "tcp" else self._start_rtu())
        self._started = True

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        with contextlib.suppress(RuntimeError):
            self._loop.run(self._stop_async())
        if self._own_loop:
            self._loop.stop()

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

    # -- what clients need --------------------------------------------------------------

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The TCP port (known after start(), also when port=0 picked a free one)."""
        if self.transport != "tcp":
            raise RuntimeError("an RTU server has no TCP port")
        return self._port

    @property
    def serial_path(self) -> str:
        """The pty a Modbus RTU client opens (after start())."""
        if self._serial_path is None:
            raise RuntimeError("not an RTU server, or not started")
        return self._serial_path

    def module(self, device_id: int) -> SimModule | None:
        return self._modules.get(device_id)

    @property
    def modules(self) -> dict[int, SimModule]:
        return dict(self._modules)

    @property
    def connections(self) -> int:
        """Client connections open now (TCP)."""
        with self._lock:
            return len(self._connections)

    @property
    def accepted(self) -> int:
        """Client connections accepted so far (TCP)."""
        with self._lock:
            return self._accepted

    # -- faults ---------------------------------------------------------------------------

    def drop_connections(self) -> None:
        """Close every client connection now (TCP RST), as a module reboot would."""
        self._require_tcp()
        self._loop.run(self._drop_async())

    def unplug(self) -> None:
        """Drop every connection and refuse new ones until replug()."""
        self._require_tcp()
        self._loop.run(self._unplug_async())

    def replug(self) -> None:
        """Listen again on the same port."""
        self._require_tcp()
        self._loop.run(self._listen())

    # -- loop side ------------------------------------------------------------------------

    def _require_tcp(self) -> None:
        if self.transport != "tcp":
            raise RuntimeError("drop/unplug are TCP-only (a serial line has no connection)")

    async def _listen(self) -> None:
        if self._server is not None:
            return
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _TcpConnection(self), self._host, self._port, reuse_address=True
        )
        self._port = self._server.sockets[0].getsockname()[1]

    async def _start_tcp(self) -> None:
        await self._listen()

    async def _drop_async(self) -> None:
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            connection.close()

    async def _unplug_async(self) -> None:
        server, self._server = self._server, None
        await self._drop_async()
        if server is not None:
            server.close()
            await server.wait_closed()

    async def _start_rtu(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line editing: a pty is a terminal until told otherwise
        os.set_blocking(master, False)
        self._master_fd, self._slave_fd = master, slave
        self._serial_path = os.ttyname(slave)
        self._rtu_line = _Line(self, FramerRTU(DecodePDU(True)), self._pty_write)
        asyncio.get_running_loop().add_reader(master, self._pty_readable)

    def _pty_readable(self) -> None:
        assert self._master_fd is not None and self._rtu_line is not None
        try:
            data = os.read(self._master_fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # EIO: cannot happen while we hold the slave open
            return
        if data:
            self._rtu_line.feed(data)

    def _pty_write(self, frame: bytes) -> None:
        if self._master_fd is not None:
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(self._master_fd, frame)

    async def _stop_async(self) -> None:
        if self.transport == "tcp":
            await self._unplug_async()
            return
        if self._rtu_line is not None:
            self._rtu_line.cancel()
        if self._master_fd is not None:
            asyncio.get_running_loop().remove_reader(self._master_fd)
            os.close(self._master_fd)
            self._master_fd = None
        if self._slave_fd is not None:
            os.close(self._slave_fd)
            self._slave_fd = None

    def _connection_made(self, connection: _TcpConnection) -> None:
        with self._lock:
            self._connections.add(connection)
            self._accepted += 1

    def _connection_lost(self, connection: _TcpConnection) -> None:
        with self._lock:
            self._connections.discard(connection)


# -- separate process --------------------------------------------------------------------


def _parse_modules(spec: str) -> list[SimModule]:
    modules = []
    for item in spec.split(","):
        profile, _, device_id = item.strip().partition(":")
        modules.append(SimModule(device_id=int(device_id or "1"), profile=profile))
    return modules


def _command(servers: Sequence[SimModbusServer], cmd: Mapping[str, Any]) -> dict[str, Any]:
    server = servers[int(cmd.get("server", 0))]
    op = cmd["op"]
    if op in ("drop", "unplug", "replug"):
        getattr(server, {"drop": "drop_connections"}.get(op, op))()
        return {}
    module = server.module(int(cmd["device_id"]))
    if module is None:
        raise ValueError(f"no device_id {cmd['device_id']} on server {cmd.get('server', 0)}")
    if op == "input":
        module.set_input(int(cmd["channel"]), bool(cmd["value"]))
    elif op == "analog":
        module.set_analog(int(cmd["channel"]), int(cmd["value"]))
    elif op == "counter":
        module.set_counter(int(cmd["channel"]), int(cmd["value"]))
    elif op == "bit":
        module.set_bit(cmd["table"], int(cmd["address"]), bool(cmd["value"]))
    elif op == "register":
        module.set_register(cmd["table"], int(cmd["address"]), int(cmd["value"]))
    elif op == "fault":
        if "silent" in cmd:
            module.set_silent(bool(cmd["silent"]))
        if "delay_ms" in cmd:
            module.set_delay(float(cmd["delay_ms"]) / 1000)
        if "exception" in cmd:
            module.set_exception(None if cmd["exception"] is None else int(cmd["exception"]))
        if "malformed" in cmd:
            module.set_malformed(cmd["malformed"])
        if cmd.get("clear"):
            module.clear_faults()
    elif op == "state":
        p = module.profile
        return {
            "inputs": [module.input(ch) for ch in range(p.di_channels)],
            "outputs": [module.output(ch) for ch in range(p.do_channels)],
            "requests": module.requests,
            "answered": module.answered,
        }
    else:
        raise ValueError(f"unknown op {op!r}")
    return {}


def main(argv: list[str] | None = None) -> int:
    """Serve simulated Modbus modules; print one JSON line (servers); obey JSON on stdin.

    --tcp PORT=PROFILE:ID[,PROFILE:ID...]   a TCP server (PORT 0 picks a free one); repeatable
    --rtu PROFILE:ID[,PROFILE:ID...]        an RTU line on a pty; repeatable
    Profiles: generic, adam6050, adam6060, e1210, e1212, ed538.

    Commands, one JSON object per line ("server" is the index in the printed list, default
    0); each is answered by {"ok": true, ...} or {"ok": false, "error": ...}:
      {"op": "input", "device_id": 1, "channel": 3, "value": true}
      {"op": "analog", "device_id": 1, "channel": 0, "value": 2048}
      {"op": "counter", "device_id": 1, "channel": 0, "value": 70000}
      {"op": "bit", "device_id": 1, "table": "discrete_input", "address": 5, "value": true}
      {"op": "register", "device_id": 1, "table": "input_register", "address": 5, "value": 7}
      {"op": "fault", "device_id": 1, "silent": true, "delay_ms": 200, "exception": 2,
       "malformed": "short" | "garbage" | null, "clear": true}
      {"op": "state", "device_id": 1}
      {"op": "drop"} / {"op": "unplug"} / {"op": "replug"}      (TCP servers)
    Stops on end of input, SIGTERM or SIGINT.
    """
    parser = argparse.ArgumentParser(prog="python -m hw_sim.modbus", description=main.__doc__)
    parser.add_argument("--tcp", action="append", default=[], metavar="PORT=MODULES")
    parser.add_argument("--rtu", action="append", default=[], metavar="MODULES")
    args = parser.parse_args(argv)
    if not args.tcp and not args.rtu:
        parser.error("give at least one --tcp or --rtu server")
    loop = SimLoop()
    loop.start()
    servers: list[SimModbusServer] = []
    for spec in args.tcp:
        port, _, mods = spec.partition("=")
        servers.append(SimModbusServer(modules=_parse_modules(mods), port=int(port), loop=loop))
    for spec in args.rtu:
        servers.append(SimModbusServer(modules=_parse_modules(spec), transport="rtu", loop=loop))
    for server in servers:
        server.start()

    def _stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    described = [
        {
            "transport": s.transport,
            **({"host": s.host, "port": s.port} if s.transport == "tcp" else {}),
            **({"serial_path": s.serial_path} if s.transport == "rtu" else {}),
            "modules": {str(i): m.profile.name for i, m in s.modules.items()},
        }
        for s in servers
    ]
    print(json.dumps({"servers": described}), flush=True)
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                reply: dict[str, Any] = {"ok": True, **_command(servers, json.loads(line))}
            except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as exc:
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(reply), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        for server in servers:
            server.stop()
        loop.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
