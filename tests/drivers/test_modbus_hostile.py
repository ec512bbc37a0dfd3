"""The Modbus boundary is total: a peer answering with ANY bytes gives a fault or a reading.

A raw asyncio TCP server plays a hostile Modbus TCP module: hypothesis picks how it answers
each request (a valid MBAP frame, one with a field changed, exception codes 0..255, frames
cut short, split or padded, garbage, silence, a connection closed mid-frame) and the real
driver (pymodbus client and all) polls it, as the gateway's module monitor does. What must
hold: every poll ends within the driver's timeouts with a Snapshot or a PollFailure (a
DeviceError inside), nothing escapes to a thread, the loop or the log with a traceback, and
once the peer answers properly again the driver reads the right values.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st

from drivers.errors import DeviceError
from drivers.modbus_io import (
    AnalogPoint,
    BitPoint,
    CounterPoint,
    InputMap,
    ModbusLink,
    ModbusModule,
    PollFailure,
    Snapshot,
)
from gateway.alarms import build_alarm_system
from gateway.config import AlarmSection, ModbusLinkSection, ModbusModuleSection
from gateway.outbox import Outbox
from gateway.publisher import Publisher
from gateway.supervisor import Supervisor
from tests.drivers.hostile import Escapes, hostile_settings, watch_escapes, watch_loop

TIMEOUT_S = 0.1
GUARD_S = 1.0  # drivers.modbus_io._GUARD_S: the outer bound on one pymodbus call
RECOVER_S = 5.0  # generous: a loaded 2-core machine

# -- the hostile peer ---------------------------------------------------------------------


def _bit(address: int) -> bool:
    return (address * 7 + 3) % 5 < 2


def _register(address: int) -> int:
    return (address * 1031 + 17) & 0xFFFF


def _valid_pdu(fc: int, body: bytes) -> bytes:
    """A correct answer to request PDU fc+body for the peer's fixed memory map."""
    if fc in (1, 2, 3, 4) and len(body) >= 4:
        address = int.from_bytes(body[0:2], "big")
        count = int.from_bytes(body[2:4], "big")
        if fc in (1, 2):
            packed = bytearray((count + 7) // 8)
            for n in range(count):
                if _bit(address + n):
                    packed[n // 8] |= 1 << (n % 8)
            return bytes([fc, len(packed)]) + bytes(packed)
        data = b"".join(_register(address + n).to_bytes(2, "big") for n in range(count))
        return bytes([fc, len(data)]) + data
    if fc == 5:
        return bytes([fc]) + body[:4]  # echo
    return bytes([fc | 0x80, 1])


@dataclass(frozen=True)
class Reply:
    """How the peer answers one request; the default is a correct frame."""

    tid: int | None = None
    pid: int | None = None
    length: int | None = None
    unit: int | None = None
    fc: int | None = None
    exception: int | None = None
    """Answer with this exception code (any byte) instead of data."""
    flips: tuple[tuple[int, int], ...] = ()
    """(index, xor mask) applied to the PDU after the function code."""
    cut: int | None = None
    """Send only this many bytes of the frame."""
    extra: bytes = b""
    chunks: int = 1
    """Written in this many pieces, a moment apart."""
    garbage: bytes | None = None
    """Send these bytes instead of a frame."""
    silent: bool = False
    close: bool = False
    """Close the connection after writing."""

    def frame(self, tid: int, unit: int, fc: int, body: bytes) -> bytes:
        if self.garbage is not None:
            return self.garbage
        pdu = bytearray(
            bytes([fc | 0x80, self.exception])
            if self.exception is not None
            else _valid_pdu(fc, body)
        )
        if self.fc is not None:
            pdu[0] = self.fc
        for index, mask in self.flips:
            if len(pdu) > 1:
                pdu[1 + index % (len(pdu) - 1)] ^= mask
        header = (
            (tid if self.tid is None else self.tid).to_bytes(2, "big")
            + (0 if self.pid is None else self.pid).to_bytes(2, "big")
            + (len(pdu) + 1 if self.length is None else self.length).to_bytes(2, "big")
            + bytes([unit if self.unit is None else self.unit])
        )
        frame = header + bytes(pdu) + self.extra
        return frame if self.cut is None else frame[: self.cut]


class HostilePeer:
    """A Modbus TCP server whose answers follow a script of Replies (played once, or over and
    over with `repeat`), then are correct; `hostile = False` makes them correct at once."""

    def __init__(self, replies: list[Reply], *, repeat: bool = False) -> None:
        self._script: Iterator[Reply] = itertools.cycle(replies) if repeat else iter(replies)
        self.hostile = True
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.requests = 0
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._tasks:  # each ends on its closed connection
            await asyncio.wait(self._tasks, timeout=1.0)
        with contextlib.suppress(Exception):
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                header = await reader.readexactly(7)
                length = int.from_bytes(header[4:6], "big")
                pdu = await reader.readexactly(max(length - 1, 0))
                self.requests += 1
                reply = next(self._script, Reply()) if self.hostile else Reply()
                if reply.silent:
                    continue
                tid = int.from_bytes(header[0:2], "big")
                frame = reply.frame(tid, header[6], pdu[0] if pdu else 0, pdu[1:])
                step = max(1, math.ceil(len(frame) / reply.chunks))
                for start in range(0, len(frame), step):
                    writer.write(frame[start : start + step])
                    await writer.drain()
                    if reply.chunks > 1:
                        await asyncio.sleep(0.005)
                if reply.close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.close()


def _u16() -> st.SearchStrategy[int]:
    return st.integers(0, 0xFFFF)


def _maybe(strategy: st.SearchStrategy[int]) -> st.SearchStrategy[int | None]:
    return st.none() | strategy


REPLIES: st.SearchStrategy[Reply] = st.one_of(
    st.just(Reply()),
    st.builds(Reply, tid=_u16()),
    st.builds(Reply, pid=st.integers(1, 0xFFFF)),
    st.builds(Reply, length=_u16()),
    st.builds(Reply, length=st.integers(0, 12)),
    st.builds(Reply, unit=st.integers(0, 255)),
    st.builds(Reply, fc=st.integers(0, 255)),
    st.builds(Reply, exception=st.integers(0, 255)),
    st.builds(Reply, exception=st.integers(0, 255), fc=_maybe(st.integers(0, 255))),
    st.builds(Reply, flips=st.lists(st.tuples(_u16(), st.integers(1, 255)), max_size=3).map(tuple)),
    st.builds(Reply, cut=st.integers(0, 16), close=st.booleans()),
    st.builds(Reply, extra=st.binary(min_size=1, max_size=300)),
    st.builds(Reply, chunks=st.integers(2, 5)),
    st.builds(Reply, garbage=st.binary(max_size=600), close=st.booleans()),
    st.builds(Reply, silent=st.just(True)),
    st.builds(Reply, close=st.just(True)),
    st.builds(
        Reply,
        tid=_maybe(_u16()),
        length=_maybe(_u16()),
        unit=_maybe(st.integers(0, 255)),
        fc=_maybe(st.integers(0, 255)),
        cut=_maybe(st.integers(0, 300)),
        extra=st.binary(max_size=40),
    ),
)


# -- the driver under attack --------------------------------------------------------------

INPUT_MAP = InputMap(
    points=[
        *(BitPoint(f"di{n}", "discrete_input", n) for n in range(10)),
        BitPoint("relay", "coil", 4),
        CounterPoint("pulses", "holding_register", 8),
        AnalogPoint("level", "input_register", 3, scale=0.5),
    ]
)
TRUTH = {
    **{f"di{n}": _bit(n) for n in range(10)},
    "relay": _bit(4),
    "pulses": (_register(8) << 16) | _register(9),
    "level": _register(3) * 0.5,
}


def _link(port: int) -> ModbusLink:
    return ModbusLink(
        host="127.0.0.1",
        port=port,
        timeout_s=TIMEOUT_S,
        reconnect_min_s=0.02,
        reconnect_max_s=0.05,
    )


def _check_no_hang(escapes: Escapes) -> None:
    # The driver's outer guard fires only when pymodbus overran its own timeout.
    hung = [m for m in escapes.messages("drivers.modbus_io") if "hung beyond" in m]
    assert not hung, hung


async def _recovered(module: ModbusModule) -> Snapshot:
    """Poll until a Snapshot comes (the peer answers properly again)."""
    deadline = time.monotonic() + RECOVER_S
    while True:
        result = await module.poll(INPUT_MAP)
        if isinstance(result, Snapshot):
            return result
        assert time.monotonic() < deadline, f"no recovery: {result.error}"
        await asyncio.sleep(0.01)


async def _attack(replies: list[Reply], device_id: int, escapes: Escapes) -> None:
    watch_loop(escapes)
    peer = HostilePeer(replies)
    await peer.start()
    link = _link(peer.port)
    module = ModbusModule(link=link, device_id=device_id, retries=1, probe_interval_s=0.02)
    # Per request: one attempt and one retry, each bounded by timeout_s + guard.
    bound = len(INPUT_MAP.blocks) * 2 * (TIMEOUT_S + GUARD_S) + 1.0
    try:
        while peer.requests < len(replies):
            started = time.monotonic()
            async with asyncio.timeout(bound):
                result = await module.poll(INPUT_MAP)
            assert isinstance(result, Snapshot | PollFailure)
            if isinstance(result, PollFailure):
                assert isinstance(result.error, DeviceError)
            else:
                assert set(result.values) == set(TRUTH)
            assert time.monotonic() - started < bound
            with contextlib.suppress(DeviceError):
                async with asyncio.timeout(2 * (TIMEOUT_S + GUARD_S) + 1.0):
                    await module.write_coil(4, True)
        assert (await _recovered(module)).values == TRUTH
    finally:
        await link.close()
        await peer.stop()
    _check_no_hang(escapes)


@hostile_settings(60)
@given(
    replies=st.lists(REPLIES, min_size=1, max_size=10),
    device_id=st.sampled_from([0, 1, 17, 255]),
)
def test_any_reply_is_a_fault_or_a_reading(replies: list[Reply], device_id: int) -> None:
    with watch_escapes() as escapes:
        asyncio.run(_attack(replies, device_id, escapes))
    escapes.check()


# -- a reply to another request is not a reading ------------------------------------------


READS = {
    1: lambda m: m.read_coils(0, 3),
    2: lambda m: m.read_discrete_inputs(0, 3),
    3: lambda m: m.read_holding_registers(0, 2),
    4: lambda m: m.read_input_registers(0, 2),
    5: lambda m: m.write_coil(0, True),
}


async def _wrong_function(request_fc: int, reply_fc: int) -> None:
    peer = HostilePeer([Reply(fc=reply_fc)])
    await peer.start()
    link = _link(peer.port)
    module = ModbusModule(link=link, device_id=1, retries=0)
    try:
        try:
            result = await READS[request_fc](module)
        except DeviceError:
            pass
        else:
            raise AssertionError(f"FC {request_fc} accepted an FC {reply_fc} reply: {result!r}")
        assert await module.read_coils(0, 3) == (_bit(0), _bit(1), _bit(2))  # still in step
    finally:
        await link.close()
        await peer.stop()


@hostile_settings(40)
@example(request_fc=3, reply_fc=4)
@example(request_fc=2, reply_fc=1)
@given(
    request_fc=st.sampled_from(sorted(READS)),
    reply_fc=st.sampled_from(sorted(READS)) | st.integers(0, 255),
)
def test_a_reply_with_another_function_code_is_a_fault(request_fc: int, reply_fc: int) -> None:
    """A frame of the right shape but for another function (FC 4 data answering an FC 3
    request) would otherwise be decoded as the values asked for."""
    if reply_fc == request_fc:
        return
    asyncio.run(_wrong_function(request_fc, reply_fc))


# -- through the gateway: the module monitor reports, and keeps running --------------------


def _surely_faulty(reply: Reply) -> bool:
    return reply.silent or replace(reply, exception=None) == Reply() != reply


async def _monitor_under_attack(replies: list[Reply], state_dir: Path, escapes: Escapes) -> None:
    watch_loop(escapes)
    peer = HostilePeer(replies, repeat=True)
    await peer.start()
    outbox = Outbox(path=state_dir / "outbox.sqlite", max_events=1000, fsync=False)
    outbox.open()
    publisher = Publisher(prefix="consolegw/test", gateway_id="test", outbox=outbox)
    links, monitors, points = build_alarm_system(
        links={"bus": ModbusLinkSection(host="127.0.0.1", port=peer.port, timeout_s=TIMEOUT_S)},
        modules={
            "io1": ModbusModuleSection(
                link="bus", preset="generic", poll_ms=20, offline_after_misses=2
            )
        },
        alarms={
            "door": AlarmSection(module="io1", channel=0, debounce_ms=0),
            "fire": AlarmSection(module="io1", channel=5, debounce_ms=0),
        },
        publisher=publisher,
    )
    monitor = monitors["io1"]
    supervisor = Supervisor()
    supervisor.start("module io1", monitor.run)
    try:
        seen_offline = False
        hostile_until = time.monotonic() + 1.0
        while time.monotonic() < hostile_until and not seen_offline:
            await asyncio.sleep(0.01)
            state = monitor.snapshot()
            if state.state == "offline":
                seen_offline = True
                assert state.last_error, state
                assert all(p.snapshot().state == "unknown" for p in points.values())
        if all(_surely_faulty(r) for r in replies):
            assert seen_offline, monitor.snapshot()
        peer.hostile = False
        deadline = time.monotonic() + RECOVER_S
        expected = {
            "door": "alarm" if _bit(0) else "normal",
            "fire": "alarm" if _bit(5) else "normal",
        }
        while not (
            monitor.online and {a: p.snapshot().input for a, p in points.items()} == expected
        ):
            assert time.monotonic() < deadline, f"no recovery: {monitor.snapshot()}"
            await asyncio.sleep(0.01)
        assert monitor.snapshot().last_error is None
        assert supervisor.crashes["module io1"] == 0
    finally:
        await supervisor.stop()
        for link in links.values():
            await link.close()
        await peer.stop()
        outbox.close()
    _check_no_hang(escapes)


@hostile_settings(6)
@example(replies=[Reply(silent=True)])
@example(replies=[Reply(exception=2)])
@example(replies=[Reply(garbage=b"\xff" * 40, close=True)])
@given(replies=st.lists(REPLIES, min_size=1, max_size=3))
def test_module_monitor_reports_a_hostile_module_and_keeps_running(replies: list[Reply]) -> None:
    with tempfile.TemporaryDirectory() as state_dir, watch_escapes() as escapes:
        asyncio.run(_monitor_under_attack(replies, Path(state_dir), escapes))
    escapes.check()


def test_replies_render_as_configured() -> None:
    """The peer's frame builder itself: a default Reply is the frame pymodbus would send."""
    frame = Reply().frame(7, 1, 3, b"\x00\x08\x00\x02")
    assert frame == bytes.fromhex("0007 0000 0007 01 03 04") + b"".join(
        _register(a).to_bytes(2, "big") for a in (8, 9)
    )
    assert replace(Reply(), cut=3).frame(7, 1, 3, b"\x00\x08\x00\x02") == frame[:3]
