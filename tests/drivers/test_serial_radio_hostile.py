"""The RFC 2217 boundary is total: a server sending ANY bytes gives DeviceUnavailable or
DeviceLost, or normal operation; never a hang, a dead reader thread, unbounded memory or a
traceback.

A raw asyncio TCP server plays an RFC 2217 serial server that is honest (it negotiates,
answers every request and tracks RTS/DTR as a real one does) until hypothesis's bytes go out:
broken Telnet negotiation (IAC sequences cut short, unknown options, WILL/DO storms),
subnegotiations left open or answering requests never made, random bytes; at connect, during
negotiation, after open or in the middle of a read; then it goes on, falls silent or closes.
The real SerialRadio (pyserial's client under it) is driven through its async API.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import tracemalloc
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Literal

from hypothesis import example, given
from hypothesis import strategies as st
from serial import rfc2217

from drivers.errors import DeviceError, DeviceLost, DeviceUnavailable
from drivers.serial_radio import SerialRadio
from tests.drivers.hostile import Escapes, hostile_settings, watch_escapes, watch_loop

IAC, SB, SE = rfc2217.IAC, rfc2217.SB, rfc2217.SE
WILL, WONT, DO, DONT = rfc2217.WILL, rfc2217.WONT, rfc2217.DO, rfc2217.DONT
COM_PORT = rfc2217.COM_PORT_OPTION

IO_TIMEOUT_S = 0.15
OPEN_TIMEOUT_S = 2.0
NETWORK_TIMEOUT_S = 0.4  # pyserial's own negotiation waits (the url's timeout option)
SLACK_S = 1.5  # a loaded 2-core machine
READER_THREAD = "pySerial RFC 2217 reader thread"

When = Literal["connect", "negotiating", "configuring", "opened", "polled"]
Then = Literal["continue", "silent", "close"]


def _sb(option: bytes, value: bytes = b"") -> bytes:
    return IAC + SB + COM_PORT + option + value.replace(IAC, IAC + IAC) + IAC + SE


FORGED_ANSWER = _sb(rfc2217.SERVER_SET_CONTROL)[:4]
"""How a SET-CONTROL answer starts."""


class Rfc2217Peer:
    """One-client RFC 2217 server over asyncio; `hostile` bytes go out at `when`."""

    def __init__(self, hostile: bytes = b"", when: When = "opened", then: Then = "continue"):
        self.hostile = hostile
        self.when = when
        self.then = then
        self.injected = False
        self.rts = False
        self.dtr = False
        self.cts = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._silent = False
        self._armed = False

    @property
    def dead(self) -> bool:
        """Injected, and no longer answering."""
        return self.injected and self.then != "continue"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"rfc2217://127.0.0.1:{self.port}?timeout={NETWORK_TIMEOUT_S}"

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        if self._writer is not None:
            self._writer.close()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)
        with contextlib.suppress(Exception):
            await self._server.wait_closed()

    async def inject(self) -> None:
        """Send the hostile bytes now (when = "opened")."""
        if self._writer is not None and not self.injected:
            with contextlib.suppress(ConnectionError):
                await self._inject(self._writer)

    def arm(self) -> None:
        """Send them before answering the next modem-state poll (when = "polled")."""
        self._armed = True

    async def _inject(self, writer: asyncio.StreamWriter) -> None:
        self.injected = True
        for start in range(0, len(self.hostile), 1 << 16):
            writer.write(self.hostile[start : start + (1 << 16)])
            await writer.drain()
        if self.then == "close":
            writer.close()
            raise ConnectionResetError("closed by the hostile peer")
        self._silent = self.then == "silent"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writer = writer
        try:
            if self.when == "connect":
                await self._inject(writer)
            await self._talk(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            self.rts = self.dtr = False  # a server closes its port: the lines drop

    async def _talk(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            byte = await reader.readexactly(1)
            if byte != IAC:
                continue  # serial data: nobody listens
            command = await reader.readexactly(1)
            if command in (WILL, WONT, DO, DONT):
                option = await reader.readexactly(1)
                if self.when == "negotiating" and not self.injected:
                    await self._inject(writer)
                if not self._silent and command in (WILL, DO):
                    writer.write(IAC + (DO if command == WILL else WILL) + option)
            elif command == SB:
                sub = await self._subnegotiation(reader)
                if self.when == "configuring" and not self.injected:
                    await self._inject(writer)
                if sub[:1] == COM_PORT and len(sub) >= 2 and not self._silent:
                    if self._armed and sub[1:2] == rfc2217.NOTIFY_MODEMSTATE:
                        self._armed = False
                        await self._inject(writer)
                        if self._silent:
                            continue
                    writer.write(self._answer(sub[1], sub[2:]))
            await writer.drain()

    async def _subnegotiation(self, reader: asyncio.StreamReader) -> bytes:
        sub = bytearray()
        while True:
            byte = await reader.readexactly(1)
            if byte == IAC:
                byte = await reader.readexactly(1)
                if byte == SE:
                    return bytes(sub)
            sub += byte

    def _answer(self, option: int, value: bytes) -> bytes:
        if option == 5 and value:  # SET-CONTROL: levels set, read back as ser2net does
            v = value[0]
            if v in (8, 9):
                self.dtr = v == 8
            elif v in (11, 12):
                self.rts = v == 11
            reply = {7: 8 if self.dtr else 9, 10: 11 if self.rts else 12, 0: 1}.get(v, v)
            return _sb(bytes([105]), bytes([reply]))
        if option == 7:  # modem-state poll
            return _sb(bytes([107]), bytes([rfc2217.MODEMSTATE_MASK_CTS if self.cts else 0]))
        return _sb(bytes([option + 100]), value)  # port settings, purge: acknowledged as asked


# -- what the peer sends ------------------------------------------------------------------

_BYTE = st.integers(0, 255).map(lambda b: bytes([b]))
_NEGOTIATION = st.sampled_from([WILL, WONT, DO, DONT])
TOKENS: st.SearchStrategy[bytes] = st.one_of(
    st.binary(min_size=1, max_size=64),
    st.just(IAC),
    st.builds(bytes.__add__, st.just(IAC), st.sampled_from([WILL, WONT, DO, DONT, SB, SE]) | _BYTE),
    st.builds(lambda c, o: IAC + c + o, _NEGOTIATION, _BYTE),
    st.builds(lambda c, o, n: (IAC + c + o) * n, _NEGOTIATION, _BYTE, st.integers(2, 300)),
    st.builds(
        lambda o, v, end: IAC + SB + COM_PORT + o + v + (IAC + SE if end else b""),
        _BYTE,
        st.binary(max_size=8),
        st.booleans(),
    ),
    # Answers to requests never made: SET-CONTROL, purge, port settings, modem state.
    st.builds(lambda o, v: _sb(bytes([o]), v), st.sampled_from([101, 102, 105, 107, 112]), _BYTE),
    st.builds(lambda o, v: IAC + SB + o + v + IAC + SE, _BYTE, st.binary(max_size=16)),
    st.builds(lambda n: IAC + SB + COM_PORT + b"\x07" + b"\x00" * n, st.integers(100, 5000)),
)
HOSTILE_BYTES = st.lists(TOKENS, max_size=10).map(b"".join)


# -- the driver under attack --------------------------------------------------------------


@dataclass
class Bounded:
    """Runs driver calls with a time bound; DeviceError is an allowed outcome."""

    limit_s: float

    async def __call__(self, call: Awaitable[object]) -> DeviceError | None:
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.limit_s + SLACK_S):
                await call
        except DeviceError as exc:
            return exc
        finally:
            assert time.monotonic() - started < self.limit_s + SLACK_S
        return None


def _radio(peer: Rfc2217Peer, io_timeout_s: float = IO_TIMEOUT_S) -> SerialRadio:
    return SerialRadio(
        url=peer.url,
        ptt_lines=("rts",),
        cos_line="cts",
        open_timeout_s=OPEN_TIMEOUT_S,
        io_timeout_s=io_timeout_s,
    )


async def _reader_thread_ends(peer: Rfc2217Peer) -> None:
    deadline = time.monotonic() + 3.0
    name = f"{READER_THREAD} for {peer.url}"
    while any(t.name == name for t in threading.enumerate()):
        assert time.monotonic() < deadline, "an RFC 2217 reader thread outlived its port"
        await asyncio.sleep(0.02)


async def _attack(peer: Rfc2217Peer, escapes: Escapes) -> None:
    watch_loop(escapes)
    await peer.start()
    radio = _radio(peer)
    io = Bounded(IO_TIMEOUT_S)
    try:
        failure = await Bounded(OPEN_TIMEOUT_S)(radio.open())
        if failure is not None:
            assert isinstance(failure, DeviceUnavailable)
            return
        if peer.when == "opened":
            await peer.inject()
        elif peer.when == "polled":
            peer.arm()
        # Answers carry no request number: a forged one that arrives while a request is out
        # cannot be told from the real one. Each can buy one early success.
        forged = peer.hostile.count(FORGED_ANSWER)
        for keyed in (True, False):
            dead = peer.dead
            failure = await io(radio.set_ptt(keyed))
            if dead and failure is None:  # not blind: a server that stopped answering is noticed
                forged -= 1
                assert forged >= 0, "set_ptt succeeded against a dead server"
            if failure is None and not forged and not peer.dead:
                assert peer.rts is keyed  # acknowledged means applied
            await io(radio.read_lines())
        if IAC not in peer.hostile and peer.then == "continue":
            # Plain serial data from the port is no reason to fail.
            assert failure is None, failure
            assert (await radio.read_lines()).ptt is False
    finally:
        await Bounded(3.0)(radio.close())
        await peer.stop()
    await _reader_thread_ends(peer)


@hostile_settings(50)
@example(hostile=IAC + SE, when="opened", then="continue")
@example(hostile=_sb(bytes([112]), b"\x01"), when="connect", then="continue")
@example(hostile=_sb(bytes([105]), b"\x0b"), when="opened", then="silent")
@example(hostile=IAC + SB + COM_PORT, when="polled", then="close")
@example(hostile=(IAC + WILL + b"\x99") * 300, when="negotiating", then="continue")
@example(hostile=IAC + SE, when="configuring", then="continue")
@example(hostile=b"\x00" * 2000, when="opened", then="continue")
@given(
    hostile=HOSTILE_BYTES,
    when=st.sampled_from(["connect", "negotiating", "configuring", "opened", "polled"]),
    then=st.sampled_from(["continue", "silent", "close"]),
)
def test_any_server_bytes_give_lost_unavailable_or_normal_operation(
    hostile: bytes, when: When, then: Then
) -> None:
    with watch_escapes() as escapes:
        asyncio.run(_attack(Rfc2217Peer(hostile, when, then), escapes))
    escapes.check()


async def _forged_answer(escapes: Escapes) -> None:
    watch_loop(escapes)
    peer = Rfc2217Peer(_sb(rfc2217.SERVER_SET_CONTROL, b"\x0b"), "opened", "continue")
    await peer.start()
    radio = _radio(peer)
    try:
        await radio.open()
        await peer.inject()
        await _reader_thread_ends(peer)  # the connection is dropped as soon as it comes in
        failure = await Bounded(IO_TIMEOUT_S)(radio.set_ptt(True))
        assert isinstance(failure, DeviceLost), failure
        assert not peer.rts
    finally:
        await radio.close()
        await peer.stop()


def test_an_answer_to_no_request_loses_the_link() -> None:
    """Counted as the answer to the next request, a forged RTS-on answer would acknowledge a
    PTT the server has not applied yet, and shift every later read-back by one."""
    with watch_escapes() as escapes:
        asyncio.run(_forged_answer(escapes))
    escapes.check()


# -- memory stays bounded -----------------------------------------------------------------


async def _flood(payload: bytes, escapes: Escapes) -> int:
    """Open, let the peer send `payload` then behave; returns how much more memory was
    traced at the peak while the client read it (the peer's own buffers included)."""
    watch_loop(escapes)
    peer = Rfc2217Peer(payload, "opened", "continue")
    await peer.start()
    radio = _radio(peer, io_timeout_s=30.0)  # the answer waits behind the whole flood
    try:
        await radio.open()
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        await peer.inject()
        # The answer to this comes after the flood, so once it is in, all of it was read.
        with contextlib.suppress(DeviceError):
            await radio.set_ptt(False)
        _, peak = tracemalloc.get_traced_memory()
        peak -= base
        with contextlib.suppress(DeviceError):
            await radio.read_lines()
    finally:
        await radio.close()
        await peer.stop()
    return peak


def test_huge_subnegotiation_and_data_floods_use_bounded_memory() -> None:
    megabyte = 1 << 20
    size = 4 * megabyte
    floods = {
        "subnegotiation without IAC SE": IAC + SB + COM_PORT + b"\x07" + b"\x01" * size,
        "closed subnegotiation": IAC + SB + COM_PORT + b"\x07" + b"\x01" * size + IAC + SE,
        "serial data": b"\x55" * size,
    }
    tracemalloc.start()
    try:
        for name, payload in floods.items():
            with watch_escapes() as escapes:
                peak = asyncio.run(_flood(payload, escapes))
            escapes.check()
            assert peak < megabyte, f"{name}: {peak} bytes held"
    finally:
        tracemalloc.stop()
