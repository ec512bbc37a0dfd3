"""SerialRadio against the simulator: pyserial's RFC 2217 client and server over loopback.

Nothing is mocked: the driver's real pyserial client talks to pyserial's PortManager in
hw_sim. The pty test at the end uses a real kernel tty (a pty has no modem lines, so it only
checks what a pty can show: termios HUPCL and the exclusive lock).
"""

from __future__ import annotations

import asyncio
import os
import pty
import socket
import termios
import time
from collections.abc import Callable
from typing import Any

import pytest
import serial

from drivers.errors import DeviceLost, DeviceUnavailable
from drivers.radio import RadioLines
from drivers.serial_radio import SerialRadio
from hw_sim.serial_radio import SimEvent, SimulatedSerialRadio

# pyserial 3.5's RFC 2217 client calls Thread.setDaemon()/setName(), deprecated since 3.10.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:serial.rfc2217")

WAIT_S = 5.0  # generous: the box is a loaded 2-core machine

SimFactory = Callable[..., SimulatedSerialRadio]
RadioFactory = Callable[..., SerialRadio]


def _names(events: list[SimEvent]) -> list[tuple[str, bool]]:
    return [(e.name, e.value) for e in events]


@pytest.mark.parametrize(
    ("sim_line", "ptt_lines", "invert"),
    [
        ("rts", ("rts",), False),
        ("dtr", ("dtr",), False),
        ("rts", ("rts", "dtr"), False),
        ("dtr", ("dtr", "rts"), False),
        ("rts", ("rts",), True),
        ("dtr", ("rts", "dtr"), True),
    ],
)
async def test_open_never_keys_then_keys_and_unkeys(
    make_sim: SimFactory,
    make_radio: RadioFactory,
    sim_line: str,
    ptt_lines: tuple[str, ...],
    invert: bool,
) -> None:
    sim = make_sim(ptt_line=sim_line, ptt_invert=invert)
    radio = make_radio(url=sim.url, ptt_lines=ptt_lines, ptt_invert=invert)
    # With inverted PTT the radio transmits while no client holds the line (module docs).
    assert sim.keyed is invert
    t0 = time.monotonic()
    await radio.open()

    opened = sim.events(since=t0)
    assert ("connected", True) in _names(opened)
    if invert:
        # The first level the client sets on the PTT line is the unkeyed one (asserted), and
        # from then on the radio is never keyed.
        assert _names(sim.events(since=t0, name=sim_line))[0] == (sim_line, True)
        assert _names(sim.events(since=t0, name="keyed")) == [("keyed", False)]
    else:
        assert (sim_line, True) not in _names(opened)
        assert ("keyed", True) not in _names(opened)
    assert sim.keyed is False
    assert radio.can_read_back_ptt is True
    assert (await radio.read_lines()).ptt is False

    await radio.set_ptt(True)
    state = sim.state()  # set_ptt returns once the server has applied and acknowledged it
    assert state.keyed is True
    for line in ("rts", "dtr"):
        # Every PTT line at the keyed level; an unused output line stays low.
        expected = (not invert) if line in ptt_lines else False
        assert getattr(state, line) is expected, line
    assert (await radio.read_lines()).ptt is True

    await radio.set_ptt(False)
    assert sim.keyed is False
    assert (await radio.read_lines()).ptt is False


def test_pyserial_defaults_key_the_radio_and_a_dropped_connection_unkeys(
    make_sim: SimFactory,
) -> None:
    """The control experiment for the open test: pyserial left alone asserts RTS and DTR on
    open, which the simulator's log shows. Dropping the connection unkeys (HUPCL)."""
    sim = make_sim(ptt_line="rts")
    port = serial.serial_for_url(sim.url)
    try:
        assert sim.wait_blocking(lambda s: s.keyed, WAIT_S).rts is True
        assert ("keyed", True) in _names(sim.events())
    finally:
        port.close()  # no unkey first: the connection just goes away
    state = sim.wait_blocking(lambda s: not s.connected, WAIT_S)
    assert (state.rts, state.dtr, state.keyed) == (False, False, False)


async def test_dropped_connection_keys_an_inverted_radio(
    make_sim: SimFactory, make_radio: RadioFactory
) -> None:
    """The documented hazard: with inverted PTT a dropped line means keyed."""
    sim = make_sim(ptt_line="rts", ptt_invert=True)
    radio = make_radio(url=sim.url, ptt_lines=("rts",), ptt_invert=True)
    await radio.open()
    assert sim.keyed is False
    sim.unplug()
    assert sim.state().connected is False
    assert sim.keyed is True


@pytest.mark.parametrize(
    ("cos_line", "invert"),
    [("cts", False), ("dsr", False), ("cd", False), ("ri", False), ("cd", True), ("dsr", True)],
)
async def test_cos_is_read_fresh(
    make_sim: SimFactory, make_radio: RadioFactory, cos_line: str, invert: bool
) -> None:
    sim = make_sim(cos_line=cos_line, cos_invert=invert)
    radio = make_radio(url=sim.url, ptt_lines=("rts",), cos_line=cos_line, cos_invert=invert)
    await radio.open()
    assert getattr(sim.state(), cos_line) is invert  # idle level on the wire
    assert (await radio.read_lines()).cos is False
    for present in (True, False, True):
        sim.set_carrier(present)
        assert getattr(sim.state(), cos_line) is (present != invert)
        # The very next read sees it: no cache, no poll interval.
        assert (await radio.read_lines()).cos is present


async def test_reads_and_keying_do_not_sleep(
    make_sim: SimFactory, make_radio: RadioFactory
) -> None:
    """pyserial's own waits sleep 50 ms per answer; ours wake on the answer. The minimum of a
    few calls stays far below 50 ms even on a loaded machine."""
    sim = make_sim(cos_line="cd")
    radio = make_radio(url=sim.url, ptt_lines=("rts", "dtr"), cos_line="cd")
    await radio.open()
    read_costs, key_costs = [], []
    for i in range(8):
        t = time.perf_counter()
        await radio.read_lines()
        read_costs.append(time.perf_counter() - t)
        t = time.perf_counter()
        await radio.set_ptt(i % 2 == 0)
        key_costs.append(time.perf_counter() - t)
    assert min(read_costs) < 0.025
    assert min(key_costs) < 0.025


async def test_keying_does_not_wait_behind_a_read_on_a_slow_server(
    make_sim: SimFactory, make_radio: RadioFactory
) -> None:
    """A slow serial server holds its answers 1 s. The PTT command reaches the line at once,
    while the read sent before it still waits; and each call waits for its own answer, not
    for whichever comes next (the read's answer must not end the command's wait)."""
    sim = make_sim(ptt_line="rts", cos_line="cd")
    radio = make_radio(url=sim.url, ptt_lines=("rts",), cos_line="cd", io_timeout_s=3.0)
    await radio.open()
    sim.set_answer_delay(1.0)
    read = asyncio.create_task(radio.read_lines())
    await asyncio.sleep(0.4)  # its requests are at the server; the answers are held
    key = asyncio.create_task(radio.set_ptt(True))
    await sim.wait_keyed(True, timeout_s=WAIT_S)
    keyed_at = time.monotonic()
    assert not read.done(), "the line changed only after the earlier read was answered"
    lines = await asyncio.wait_for(read, WAIT_S)
    assert lines.ptt is False  # read back before the command: what the server saw then
    await asyncio.wait_for(key, WAIT_S)
    # Its answer left the server 1 s after the command arrived; the read's, 0.6 s after.
    assert time.monotonic() - keyed_at >= 0.9
    sim.set_answer_delay(0)
    assert (await radio.read_lines()).ptt is True


async def test_keying_times_out_when_the_server_never_answers(
    make_sim: SimFactory, make_radio: RadioFactory
) -> None:
    sim = make_sim(ptt_line="rts")
    radio = make_radio(url=sim.url, ptt_lines=("rts",), io_timeout_s=0.3)
    await radio.open()
    sim.set_answer_delay(30)
    with pytest.raises(DeviceLost, match="no answer"):
        await radio.set_ptt(True)
    assert sim.keyed  # the command arrived; only its answer is missing


async def test_read_back_shows_an_output_that_does_not_follow(
    make_sim: SimFactory, make_radio: RadioFactory
) -> None:
    sim = make_sim(ptt_line="rts")
    radio = make_radio(url=sim.url, ptt_lines=("rts",))
    await radio.open()

    sim.set_ptt_no_follow(True)
    await radio.set_ptt(True)
    assert sim.keyed is False
    assert (await radio.read_lines()).ptt is False  # commanded keyed, reads back unkeyed

    sim.set_ptt_no_follow(False)
    await radio.set_ptt(True)
    assert (await radio.read_lines()).ptt is True

    sim.set_ptt_no_follow(True)
    await radio.set_ptt(False)
    assert sim.keyed is True
    assert (await radio.read_lines()).ptt is True  # the dangerous case: stuck keyed

    sim.set_ptt_no_follow(False)
    await radio.set_ptt(False)
    assert (await radio.read_lines()).ptt is False


async def test_server_without_read_back(make_sim: SimFactory, make_radio: RadioFactory) -> None:
    """Stock PortManager ignores DTR/RTS state requests: no read-back, keying still works."""
    sim = make_sim(ptt_line="dtr", cos_line="cts", readback_supported=False)
    radio = make_radio(url=sim.url, ptt_lines=("dtr",), cos_line="cts")
    await radio.open()
    assert radio.can_read_back_ptt is False
    assert await radio.read_lines() == RadioLines(cos=False, ptt=None)
    await radio.set_ptt(True)
    assert sim.keyed is True
    sim.set_carrier(True)
    assert await radio.read_lines() == RadioLines(cos=True, ptt=None)
    await radio.set_ptt(False)
    assert sim.keyed is False


async def test_unplug_loses_the_device_and_replug_reopens(
    make_sim: SimFactory, make_radio: RadioFactory
) -> None:
    sim = make_sim(ptt_line="rts")
    radio = make_radio(url=sim.url, ptt_lines=("rts",), cos_line="cd")
    await radio.open()
    await radio.set_ptt(True)
    assert sim.keyed is True

    sim.unplug()
    assert sim.keyed is False  # the port vanished with the line low
    with pytest.raises(DeviceLost):
        await radio.read_lines()
    with pytest.raises(DeviceLost):
        await radio.set_ptt(False)
    await radio.close()  # never raises, even though it cannot unkey
    with pytest.raises(DeviceUnavailable):
        await radio.open()  # refused while unplugged

    sim.replug()
    await radio.open()
    assert sim.state().connections == 2
    assert sim.keyed is False
    await radio.set_ptt(True)
    assert sim.keyed is True
    assert (await radio.read_lines()).ptt is True


@pytest.mark.parametrize("invert", [False, True])
async def test_close_unkeys_before_disconnecting(
    make_sim: SimFactory, make_radio: RadioFactory, invert: bool
) -> None:
    sim = make_sim(ptt_line="rts", ptt_invert=invert)
    radio = make_radio(url=sim.url, ptt_lines=("rts",), ptt_invert=invert)
    await radio.open()
    await radio.set_ptt(True)
    t0 = time.monotonic()
    await radio.close()
    await radio.close()  # safe twice
    # The server notices the drop on its own thread: wait for it, then read its log.
    # Then the server closes its port: normal polarity stays unkeyed, inverted keys (hazard).
    assert sim.wait_blocking(lambda s: not s.connected, WAIT_S).keyed is invert
    events = _names(sim.events(since=t0))
    assert events.index(("keyed", False)) < events.index(("connected", False)), events


async def test_open_of_a_dead_port_fails_fast(make_radio: RadioFactory) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    radio = make_radio(
        url=f"rfc2217://127.0.0.1:{dead_port}", ptt_lines=("rts",), open_timeout_s=30.0
    )
    t0 = time.monotonic()
    with pytest.raises(DeviceUnavailable):
        await radio.open()
    assert time.monotonic() - t0 < 5.0  # refused at once, not the 30 s open timeout
    with pytest.raises(DeviceLost):
        await radio.read_lines()


async def test_open_times_out_on_a_silent_server(make_radio: RadioFactory) -> None:
    with socket.socket() as silent:  # accepts TCP (kernel backlog) but never speaks Telnet
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        # pyserial's own negotiation timeout (URL option) just bounds the cleanup wait.
        url = f"rfc2217://127.0.0.1:{silent.getsockname()[1]}?timeout=0.5"
        radio = make_radio(url=url, ptt_lines=("rts",), open_timeout_s=0.2)
        t0 = time.monotonic()
        with pytest.raises(DeviceUnavailable, match="timed out"):
            await radio.open()
        assert time.monotonic() - t0 < 1.0
        await radio.close()  # waits for the abandoned open to finish and be closed


async def test_cos_faults(make_sim: SimFactory, make_radio: RadioFactory) -> None:
    sim = make_sim(cos_line="cd")
    radio = make_radio(url=sim.url, ptt_lines=("rts",), cos_line="cd")
    await radio.open()

    sim.set_cos_stuck(True)
    assert (await radio.read_lines()).cos is True
    sim.set_cos_stuck(False)
    assert (await radio.read_lines()).cos is False

    t0 = time.monotonic()
    sim.set_cos_flap(50)
    seen: set[bool | None] = set()
    async with asyncio.timeout(WAIT_S):
        while len(seen) < 2:
            seen.add((await radio.read_lines()).cos)
            await asyncio.sleep(0.002)
        await sim.wait(lambda s: len(sim.events(since=t0, name="cd")) >= 4, WAIT_S)
    sim.set_cos_flap(None)
    assert sim.state().carrier is False  # back to what the receiver hears


def test_constructor_validates() -> None:
    good: dict[str, Any] = {"url": "rfc2217://127.0.0.1:7000", "ptt_lines": ("rts",)}
    SerialRadio(**good)
    bad: list[dict[str, Any]] = [
        {"url": ""},
        {"url": " /dev/ttyUSB0"},
        {"url": "nosuchscheme://x"},
        {"url": "rfc2217://127.0.0.1"},
        {"ptt_lines": ()},
        {"ptt_lines": ["rts"]},
        {"ptt_lines": ("rts", "rts")},
        {"ptt_lines": ("cts",)},
        {"cos_line": "rts"},
        {"ptt_invert": 1},
        {"open_timeout_s": 0},
        {"io_timeout_s": float("nan")},
    ]
    for override in bad:
        with pytest.raises(ValueError):
            SerialRadio(**{**good, **override})


async def test_local_tty_hupcl_follows_polarity_and_port_is_exclusive(
    make_radio: RadioFactory,
) -> None:
    master, slave = pty.openpty()
    try:
        path = os.ttyname(slave)
        for invert in (True, False):
            radio = make_radio(url=path, ptt_lines=("rts",), ptt_invert=invert)
            await radio.open()
            assert radio.can_read_back_ptt is False
            hupcl = bool(termios.tcgetattr(slave)[2] & termios.HUPCL)
            assert hupcl is not invert  # cleared for inverted PTT, set for normal
            other = make_radio(url=path, ptt_lines=("rts",))
            with pytest.raises(DeviceUnavailable):
                await other.open()  # locked by the first
            await radio.close()
    finally:
        os.close(master)
        os.close(slave)
