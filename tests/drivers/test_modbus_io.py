"""drivers.modbus_io against hw_sim.modbus: pymodbus's real client over loopback TCP and a pty.

Nothing is mocked: the driver's pymodbus client talks real Modbus TCP (and Modbus RTU over
a pty pair) to the simulator, whose frames are built by pymodbus's framers. The simulator's
register maps are written from the vendor manuals independently of drivers/modbus_presets,
so the preset tests check one against the other (word order included).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from drivers.errors import DeviceError, DeviceLost, DeviceTimeout, DeviceUnavailable
from drivers.modbus_io import (
    AnalogPoint,
    BitPoint,
    Block,
    CounterPoint,
    InputMap,
    LineState,
    ModbusExceptionError,
    ModbusLink,
    ModbusModule,
    ModbusPoller,
    PollFailure,
    RegisterBitPoint,
    Snapshot,
    SupervisedLine,
)
from drivers.modbus_presets import PRESETS, generic_preset, preset
from hw_sim.modbus import SimModbusServer, SimModule

REPO = Path(__file__).resolve().parents[2]
WAIT_S = 5.0  # generous: the box is a loaded 2-core machine
DEAD_NOTICED_S = 1.5  # "a dead module is noticed within about a second", with slack for load

ServerFactory = Callable[..., SimModbusServer]
LinkFactory = Callable[..., ModbusLink]


@pytest.fixture
def make_server() -> Iterator[ServerFactory]:
    servers: list[SimModbusServer] = []

    def make(*modules: SimModule, transport: str = "tcp") -> SimModbusServer:
        server = SimModbusServer(modules=modules, transport=transport)  # type: ignore[arg-type]
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
async def make_link() -> AsyncIterator[LinkFactory]:
    links: list[ModbusLink] = []

    def make(server: SimModbusServer, **kwargs: Any) -> ModbusLink:
        if server.transport == "tcp":
            link = ModbusLink(host=server.host, port=server.port, **kwargs)
        else:
            link = ModbusLink(serial_port=server.serial_path, baudrate=19200, **kwargs)
        links.append(link)
        return link

    yield make
    for link in links:
        await link.close()


async def wait_for(predicate: Callable[[], Any], limit_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + limit_s
    while not await _call(predicate):
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def _call(predicate: Callable[[], Any]) -> Any:
    result = predicate()
    if asyncio.iscoroutine(result):
        return await result
    return result


def snapshot(result: Snapshot | PollFailure) -> Snapshot:
    assert isinstance(result, Snapshot), f"poll failed: {result}"
    return result


# -- input map (pure) ----------------------------------------------------------------------


def test_input_map_reads_each_table_in_as_few_blocks_as_contiguity_allows() -> None:
    imap = InputMap(
        points=[
            BitPoint("a", "discrete_input", 3),
            BitPoint("b", "discrete_input", 4),
            BitPoint("c", "discrete_input", 0),  # 1..2 unused: a separate block
            BitPoint("relay", "coil", 16),
            CounterPoint("n", "input_register", 0x10, 2, "high_first"),
            RegisterBitPoint("w3", "input_register", 0x12, 3),  # touches the counter
            AnalogPoint("ai", "holding_register", 7, scale=0.5, offset=-1.0),
        ]
    )
    assert imap.blocks == (
        Block("discrete_input", 0, 1),
        Block("discrete_input", 3, 2),
        Block("coil", 16, 1),
        Block("input_register", 0x10, 3),
        Block("holding_register", 7, 1),
    )
    values = imap.decode([[True], [False, True], [True], [0x0001, 0x2345, 0b1000], [10]])
    assert values == {
        "a": False,
        "b": True,
        "c": True,
        "relay": True,
        "n": 0x0001_2345,
        "w3": True,
        "ai": 4.0,
    }
    # A gap allowance merges across unused addresses; the register limit still splits.
    gap = InputMap(points=[BitPoint("x", "coil", 0), BitPoint("y", "coil", 3)], max_gap=2)
    assert gap.blocks == (Block("coil", 0, 4),)
    far = InputMap(
        points=[AnalogPoint("p", "input_register", 0), AnalogPoint("q", "input_register", 125)],
        max_gap=100,
    )
    assert len(far.blocks) == 2


def test_input_map_word_order_and_signed_analog() -> None:
    imap = InputMap(
        points=[
            CounterPoint("hi", "holding_register", 0, 2, "high_first"),
            CounterPoint("lo", "holding_register", 2, 2, "low_first"),
            CounterPoint("one", "holding_register", 4, 1),
            AnalogPoint("neg", "holding_register", 5, signed=True),
            AnalogPoint("pos", "holding_register", 6),
        ]
    )
    assert imap.decode([[0x0001, 0x0002, 0x0001, 0x0002, 0xBEEF, 0xFFFF, 0xFFFF]]) == {
        "hi": 0x0001_0002,
        "lo": 0x0002_0001,
        "one": 0xBEEF,
        "neg": -1.0,
        "pos": 65535.0,
    }


def test_input_map_and_points_validate() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        InputMap(points=[BitPoint("x", "coil", 0), BitPoint("x", "coil", 1)])
    with pytest.raises(ValueError):
        InputMap(points=[])
    with pytest.raises(ValueError):
        BitPoint("x", "input_register", 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        RegisterBitPoint("x", "input_register", 0, 16)
    with pytest.raises(ValueError):
        CounterPoint("x", "input_register", 0xFFFF, 2)
    with pytest.raises(ValueError):
        AnalogPoint("x", "input_register", 0, scale=0)


def test_link_and_module_validate() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        ModbusLink(host="127.0.0.1", serial_port="/dev/ttyUSB0")
    with pytest.raises(ValueError, match="exactly one"):
        ModbusLink()
    with pytest.raises(ValueError):
        ModbusLink(host="127.0.0.1", timeout_s=0)
    with pytest.raises(ValueError):
        ModbusLink(serial_port="/dev/ttyUSB0", parity="X")  # type: ignore[arg-type]
    rtu = ModbusLink(serial_port="/dev/ttyUSB0")
    with pytest.raises(ValueError, match="device_id"):
        ModbusModule(link=rtu, device_id=0)  # broadcast: never answered on a serial line
    ModbusModule(link=ModbusLink(host="127.0.0.1"), device_id=0)  # fine on TCP


# -- supervised lines (pure) ---------------------------------------------------------------


def test_supervised_line_bands_and_hysteresis() -> None:
    line = SupervisedLine(
        bands=(
            (0.5, LineState.TROUBLE_SHORT),
            (3.0, LineState.NORMAL),
            (4.5, LineState.ALARM),
            (math.inf, LineState.TROUBLE_OPEN),
        ),
        hysteresis=0.2,
    )
    assert line.classify(0.1) is LineState.TROUBLE_SHORT
    assert line.classify(2.5) is LineState.NORMAL
    assert line.classify(3.7) is LineState.ALARM
    assert line.classify(4.9) is LineState.TROUBLE_OPEN
    # On the boundary: stays in the previous state within the hysteresis...
    assert line.classify(3.1, LineState.NORMAL) is LineState.NORMAL
    assert line.classify(2.9, LineState.ALARM) is LineState.ALARM
    # ...and changes beyond it.
    assert line.classify(3.25, LineState.NORMAL) is LineState.ALARM
    assert line.classify(2.75, LineState.ALARM) is LineState.NORMAL
    # A jump across several bands ignores the previous state.
    assert line.classify(0.0, LineState.ALARM) is LineState.TROUBLE_SHORT


def test_supervised_line_from_nominals_and_validation() -> None:
    line = SupervisedLine.from_nominals(
        {
            LineState.TROUBLE_SHORT: 0,
            LineState.NORMAL: 2000,
            LineState.ALARM: 3000,
            LineState.TROUBLE_OPEN: 4095,
        }
    )
    assert [bound for bound, _ in line.bands] == [1000, 2500, 3547.5, math.inf]
    assert line.hysteresis == pytest.approx(100.0)
    assert line.classify(2550, LineState.NORMAL) is LineState.NORMAL
    assert line.classify(2650, LineState.NORMAL) is LineState.ALARM
    with pytest.raises(ValueError, match="ascending"):
        SupervisedLine(bands=((2.0, LineState.NORMAL), (1.0, LineState.ALARM)))
    with pytest.raises(ValueError, match="inf"):
        SupervisedLine(bands=((1.0, LineState.NORMAL), (2.0, LineState.ALARM)))
    with pytest.raises(ValueError, match="hysteresis"):
        SupervisedLine(
            bands=((1.0, LineState.NORMAL), (1.5, LineState.ALARM), (math.inf, LineState.NORMAL)),
            hysteresis=0.3,
        )


# -- reads and writes over TCP -------------------------------------------------------------


async def test_each_input_kind_over_tcp(make_server: ServerFactory, make_link: LinkFactory) -> None:
    sim = SimModule(device_id=1, profile="generic")
    server = make_server(sim)
    module = ModbusModule(link=make_link(server), device_id=1)
    sim.set_input(2, True)
    sim.set_input(15, True)
    sim.set_bit("coil", 5, True)
    sim.set_analog(3, 2047)
    sim.set_register("holding_register", 9, 0xBEEF)

    assert await module.read_discrete_inputs(0, 16) == tuple(n in (2, 15) for n in range(16))
    assert await module.read_coils(4, 2) == (False, True)
    assert await module.read_input_registers(3, 1) == (2047,)
    assert await module.read_holding_registers(8, 2) == (0, 0xBEEF)
    # The DI bitmask word follows the inputs.
    assert await module.read_input_registers(16, 1) == ((1 << 2) | (1 << 15),)

    imap = InputMap(
        points=[
            BitPoint("door", "discrete_input", 2),
            BitPoint("panic", "discrete_input", 3),
            BitPoint("relay5", "coil", 5),
            RegisterBitPoint("ups", "input_register", 16, 15),
            AnalogPoint("loop", "input_register", 3, scale=10 / 4095),
        ]
    )
    snap = snapshot(await module.poll(imap))
    assert snap.values["door"] is True
    assert snap.values["panic"] is False
    assert snap.values["relay5"] is True
    assert snap.values["ups"] is True
    assert snap.values["loop"] == pytest.approx(2047 * 10 / 4095)
    assert snap.duration_s >= 0
    assert abs(snap.ts - time.time()) < 60

    sim.set_input(2, False)
    assert snapshot(await module.poll(imap)).values["door"] is False


async def test_write_coil_drives_the_output(
    make_server: ServerFactory, make_link: LinkFactory
) -> None:
    sim = SimModule(device_id=3, profile="generic")
    server = make_server(sim)
    module = ModbusModule(link=make_link(server), device_id=3)
    await module.write_coil(6, True)
    assert sim.output(6) is True
    assert await module.read_coils(6, 1) == (True,)
    await module.write_coil(6, False)
    assert sim.output(6) is False
    assert sim.coil_writes() == [(6, True), (6, False)]
    # A coil the module does not have is refused with the exception named.
    with pytest.raises(ModbusExceptionError) as refused:
        await module.write_coil(100, True)
    assert refused.value.code == 2
    assert refused.value.code_name == "ILLEGAL DATA ADDRESS"
    assert "ILLEGAL DATA ADDRESS" in str(refused.value)


@pytest.mark.parametrize("key", sorted(PRESETS))
async def test_preset_map_decodes_the_module(
    key: str, make_server: ServerFactory, make_link: LinkFactory
) -> None:
    p = preset(key)
    sim = SimModule(device_id=1, profile=key)
    server = make_server(sim)
    module = ModbusModule(link=make_link(server), device_id=1)
    channels = len(p.digital_inputs)
    pattern = [n % 3 == 1 for n in range(channels)]
    for ch, on in enumerate(pattern):
        sim.set_input(ch, on)

    expected = {f"di{n}": on for n, on in enumerate(pattern)}
    default_map = p.input_map()
    assert len(default_map.blocks) == 1  # all inputs in one request
    assert snapshot(await module.poll(default_map)).values == expected
    if p.di_word is not None:
        word_map = p.input_map(
            inputs={f"di{n}": n for n in range(min(channels, 16))}, use_di_word=True
        )
        assert len(word_map.blocks) == 1
        assert snapshot(await module.poll(word_map)).values == expected

    if p.counters:
        value = 0x0001_2345 if p.counter_word_order else 0x2345
        sim.set_counter(1, value)
        counted = snapshot(await module.poll(p.input_map(counters={"pulses": 1})))
        assert counted.values == {"pulses": value}
        # A rising edge on the input counts one more pulse.
        sim.set_input(1, False)
        sim.set_input(1, True)
        counted = snapshot(await module.poll(p.input_map(counters={"pulses": 1})))
        assert counted.values == {"pulses": value + 1}

    if p.outputs:
        last = len(p.outputs) - 1
        await module.write_coil(p.outputs[last], True)
        assert sim.output(last) is True
        readback = snapshot(await module.poll(p.input_map(outputs={"relay": last})))
        assert readback.values == {"relay": True}

    if p.analog_inputs:
        sim.set_analog(0, 1234)
        assert snapshot(await module.poll(p.input_map(analogs={"loop": 0}))).values == {
            "loop": 1234.0
        }


def test_presets_name_their_sources_and_word_order() -> None:
    assert PRESETS["adam6050"].counter_word_order == "low_first"
    assert PRESETS["adam6060"].counter_word_order == "low_first"
    assert PRESETS["e1210"].counter_word_order == "high_first"
    assert PRESETS["e1212"].counter_word_order == "high_first"
    assert PRESETS["ed538"].counter_word_order is None  # 16-bit counters
    for p in PRESETS.values():
        assert p.source
    with pytest.raises(ValueError, match="unknown module preset"):
        preset("adam9999")
    with pytest.raises(ValueError, match="no digital input channel 12"):
        PRESETS["adam6050"].input_map(inputs={"x": 12})
    custom = generic_preset(di_count=4, di_table="coil", di_address=100)
    assert custom.input_map().blocks == (Block("coil", 100, 4),)


# -- faults ----------------------------------------------------------------------------------


async def test_no_response_is_a_timeout_within_a_second_then_probed_sparingly(
    make_server: ServerFactory, make_link: LinkFactory
) -> None:
    sim = SimModule(device_id=1)
    server = make_server(sim)
    module = ModbusModule(link=make_link(server), device_id=1, probe_interval_s=0.5)
    assert await module.read_discrete_inputs(0, 1) == (False,)
    sim.set_silent(True)
    before = sim.requests
    start = time.monotonic()
    with pytest.raises(DeviceTimeout):
        await module.read_discrete_inputs(0, 1)
    assert time.monotonic() - start < DEAD_NOTICED_S
    assert sim.requests - before == 2  # the first try and one retry
    assert not module.responsive
    # Within the probe interval, calls fail at once without touching the line.
    start = time.monotonic()
    with pytest.raises(DeviceTimeout, match="skipped"):
        await module.read_discrete_inputs(0, 1)
    assert time.monotonic() - start < 0.1
    assert sim.requests - before == 2
    # The module comes back: the next probe finds it.
    sim.set_silent(False)
    sim.set_input(0, True)

    async def answers() -> bool:
        try:
            return await module.read_discrete_inputs(0, 1) == (True,)
        except DeviceTimeout:
            return False

    await wait_for(answers)
    assert module.responsive


async def test_exception_responses_are_named(
    make_server: ServerFactory, make_link: LinkFactory
) -> None:
    sim = SimModule(device_id=1)
    server = make_server(sim)
    link = make_link(server)
    module = ModbusModule(link=link, device_id=1, probe_interval_s=0.2)
    with pytest.raises(ModbusExceptionError) as illegal:
        await module.read_discrete_inputs(10, 10)  # the module has 0..15
    assert (illegal.value.code, illegal.value.function_code) == (2, 2)
    sim.set_exception(4)
    with pytest.raises(ModbusExceptionError, match="SERVER DEVICE FAILURE"):
        await module.read_input_registers(0, 1)
    assert module.responsive  # an exception reply is an answer
    # A TCP/RTU gateway whose device did not answer: that is a timeout, not a device error.
    sim.set_exception(0x0B)
    with pytest.raises(DeviceTimeout, match="gateway"):
        await module.read_input_registers(0, 1)
    # No module behind the gateway at that device_id.
    with pytest.raises(DeviceTimeout):
        await ModbusModule(link=link, device_id=42).read_coils(0, 1)
    sim.set_exception(None)
    await wait_for(lambda: _reads(module))


async def _reads(module: ModbusModule) -> bool:
    try:
        await module.read_coils(0, 1)
    except DeviceTimeout:
        return False
    return True


async def test_slow_responses(make_server: ServerFactory, make_link: LinkFactory) -> None:
    sim = SimModule(device_id=1)
    server = make_server(sim)
    module = ModbusModule(
        link=make_link(server, timeout_s=0.3), device_id=1, retries=0, probe_interval_s=0.2
    )
    sim.set_analog(0, 111)
    sim.set_delay(0.1)  # slow but within the timeout
    start = time.monotonic()
    assert await module.read_input_registers(0, 1) == (111,)
    assert time.monotonic() - start >= 0.1
    sim.set_delay(0.6)  # beyond it
    with pytest.raises(DeviceTimeout):
        await module.read_input_registers(0, 1)
    # The late answer to the timed-out request must not be taken for a later one.
    sim.set_delay(0)
    sim.set_analog(0, 222)
    await asyncio.sleep(0.4)  # the late reply arrives meanwhile
    await wait_for(lambda: _reads(module))
    assert await module.read_input_registers(0, 1) == (222,)


async def test_malformed_replies(make_server: ServerFactory, make_link: LinkFactory) -> None:
    sim = SimModule(device_id=1)
    server = make_server(sim)
    link = make_link(server)
    module = ModbusModule(link=link, device_id=1, retries=0, probe_interval_s=0.2)
    sim.set_malformed("short")
    with pytest.raises(DeviceError, match="short reply") as short_bits:
        await module.read_discrete_inputs(0, 16)
    assert not isinstance(short_bits.value, DeviceTimeout | DeviceLost)
    with pytest.raises(DeviceError, match="registers") as short_regs:
        await module.read_input_registers(0, 4)
    assert not isinstance(short_regs.value, DeviceTimeout | DeviceLost)
    sim.set_malformed("garbage")  # no frame at all: indistinguishable from silence
    with pytest.raises(DeviceTimeout):
        await module.read_input_registers(0, 4)
    sim.set_malformed(None)
    await wait_for(lambda: _reads(module))


async def test_dropped_connection_reconnects(
    make_server: ServerFactory, make_link: LinkFactory
) -> None:
    sim = SimModule(device_id=1)
    server = make_server(sim)
    link = make_link(server, reconnect_min_s=0.2, reconnect_max_s=0.4)
    module = ModbusModule(link=link, device_id=1)
    assert await module.read_coils(0, 1) == (False,)
    assert server.accepted == 1

    server.drop_connections()  # module rebooted: the next request reconnects at once
    await wait_for(lambda: not link.connected)
    assert await module.read_coils(0, 1) == (False,)
    assert server.accepted == 2

    server.unplug()  # gone: DeviceLost, then attempts spaced by the backoff
    await wait_for(lambda: not link.connected)
    with pytest.raises(DeviceLost):
        await module.read_coils(0, 1)
    start = time.monotonic()
    with pytest.raises(DeviceLost, match="next attempt"):
        await module.read_coils(0, 1)
    assert time.monotonic() - start < 0.1  # no waiting on a link known to be down

    server.replug()
    sim.set_bit("coil", 0, True)

    async def back() -> bool:
        try:
            return await module.read_coils(0, 1) == (True,)
        except DeviceLost:
            return False

    await wait_for(back)
    assert link.connected


async def test_tcp_link_that_answers_nothing_is_reopened(
    make_server: ServerFactory, make_link: LinkFactory
) -> None:
    """A half-open socket only shows as silence: after a few unanswered requests in a row
    (no module on the link answering), the link reconnects."""
    sim = SimModule(device_id=1)
    server = make_server(sim)
    link = make_link(server, lost_after_timeouts=3)
    module = ModbusModule(link=link, device_id=1, retries=0, probe_interval_s=0.05)
    assert await module.read_coils(0, 1) == (False,)
    sim.set_silent(True)
    for _ in range(3):
        with pytest.raises(DeviceTimeout):
            await module.read_coils(0, 1)
        await asyncio.sleep(0.06)  # past the probe interval: each call goes on the wire
    assert not link.connected
    sim.set_silent(False)
    await wait_for(lambda: _reads(module))
    assert server.accepted == 2


async def test_connect_failure_and_close(make_link: LinkFactory) -> None:
    with SimModbusServer(modules=[SimModule(device_id=1)]) as server:
        port = server.port
    link = ModbusLink(host="127.0.0.1", port=port, timeout_s=0.3)  # nothing listens there now
    with pytest.raises(DeviceUnavailable):
        await link.connect()
    module = ModbusModule(link=link, device_id=1)
    with pytest.raises(DeviceLost):
        await module.read_coils(0, 1)
    await link.close()
    await link.close()  # twice is fine
    with pytest.raises(DeviceLost, match="closed"):
        await module.read_coils(0, 1)


async def test_dead_module_beside_live_ones_on_one_link(
    make_server: ServerFactory, make_link: LinkFactory
) -> None:
    """One silent device_id on a shared link (a TCP/RTU gateway) must not starve the others."""
    live = [SimModule(device_id=i) for i in (1, 2, 3)]
    dead = SimModule(device_id=9)
    dead.set_silent(True)
    server = make_server(*live, dead)
    link = make_link(server, timeout_s=0.3)
    imap = InputMap(points=[BitPoint("in0", "discrete_input", 0)])
    interval = 0.1
    duration = 1.5
    results: dict[int, list[Snapshot | PollFailure]] = {}

    async def run(device_id: int) -> None:
        poller = ModbusPoller(
            module=ModbusModule(link=link, device_id=device_id), input_map=imap, interval_s=interval
        )
        out = results.setdefault(device_id, [])
        end = time.monotonic() + duration
        while time.monotonic() < end:
            out.append(await poller.next())

    await asyncio.gather(*(run(i) for i in (1, 2, 3, 9)))
    for sim in live:
        polls = results[sim.device_id]
        assert all(isinstance(r, Snapshot) for r in polls), polls
        times = [r.t_mono for r in polls]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        # Without probe spacing every cycle would wait 2 x 0.3 s for the dead module.
        assert len(polls) >= duration / 0.3, len(polls)
        assert max(gaps) < 0.3 * 2 + interval + 0.5, gaps
    failures = results[9]
    assert failures and all(
        isinstance(r, PollFailure) and isinstance(r.error, DeviceTimeout) for r in failures
    )
    # The dead module is probed about once per second, not every 100 ms.
    assert dead.requests <= 2 + duration / 1.0 + 1, dead.requests
    assert link.connected  # a dead device_id does not take the TCP connection down


async def test_poller_keeps_a_fixed_rate(
    make_server: ServerFactory, make_link: LinkFactory
) -> None:
    sim = SimModule(device_id=1)
    server = make_server(sim)
    poller = ModbusPoller(
        module=ModbusModule(link=make_link(server), device_id=1),
        input_map=InputMap(points=[BitPoint("x", "discrete_input", 0)]),
        interval_s=0.05,
    )
    start = time.monotonic()
    results = [await poller.next() for _ in range(6)]
    assert all(isinstance(r, Snapshot) for r in results)
    assert time.monotonic() - start >= 5 * 0.05  # slots are waited for, never run early


# -- Modbus RTU over a pty pair ------------------------------------------------------------


async def test_rtu_over_pty_shared_line(make_server: ServerFactory, make_link: LinkFactory) -> None:
    adam = SimModule(device_id=1, profile="adam6060")
    moxa = SimModule(device_id=2, profile="e1210")
    dead = SimModule(device_id=3)
    dead.set_silent(True)
    server = make_server(adam, moxa, dead, transport="rtu")
    link = make_link(server)
    adam_mod = ModbusModule(link=link, device_id=1)
    moxa_mod = ModbusModule(link=link, device_id=2)
    dead_mod = ModbusModule(link=link, device_id=3, retries=0)
    adam.set_input(5, True)
    moxa.set_input(9, True)
    moxa.set_counter(9, 0x0002_0001)

    assert snapshot(await adam_mod.poll(PRESETS["adam6060"].input_map())).values["di5"] is True
    snap = snapshot(
        await moxa_mod.poll(PRESETS["e1210"].input_map(inputs={"door": 9}, counters={"n": 9}))
    )
    assert snap.values == {"door": True, "n": 0x0002_0001}
    await adam_mod.write_coil(PRESETS["adam6060"].outputs[2], True)
    assert adam.output(2) is True

    start = time.monotonic()
    with pytest.raises(DeviceTimeout):
        await dead_mod.read_coils(0, 1)
    assert time.monotonic() - start < DEAD_NOTICED_S
    # A device_id nobody answers for on a serial line: silence, not an exception.
    with pytest.raises(DeviceTimeout):
        await ModbusModule(link=link, device_id=99, retries=0).read_coils(0, 1)
    # The line still serves the live modules, and stays open (a silent module is not a
    # missing adapter).
    assert await moxa_mod.read_discrete_inputs(9, 1) == (True,)
    assert link.connected

    adam.set_exception(2)
    with pytest.raises(ModbusExceptionError, match="ILLEGAL DATA ADDRESS"):
        await adam_mod.read_coils(0, 6)


async def test_rtu_missing_serial_port_is_lost_not_hung(tmp_path: Path) -> None:
    link = ModbusLink(serial_port=str(tmp_path / "ttyUSB-missing"), timeout_s=0.3)
    module = ModbusModule(link=link, device_id=1)
    start = time.monotonic()
    with pytest.raises(DeviceLost):
        await module.read_coils(0, 1)
    assert time.monotonic() - start < DEAD_NOTICED_S
    await link.close()


# -- the simulator as a separate process -------------------------------------------------


async def test_simulator_process_is_scriptable_over_stdin() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hw_sim.modbus",
        "--tcp",
        "0=e1210:5,generic:6",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout

    async def command(cmd: dict[str, Any]) -> dict[str, Any]:
        stdin.write((json.dumps(cmd) + "\n").encode())
        await stdin.drain()
        reply: dict[str, Any] = json.loads(await asyncio.wait_for(stdout.readline(), WAIT_S))
        return reply

    link: ModbusLink | None = None
    try:
        server = json.loads(await asyncio.wait_for(stdout.readline(), 3 * WAIT_S))["servers"][0]
        assert server["modules"] == {"5": "e1210", "6": "generic"}
        link = ModbusLink(host=server["host"], port=server["port"])
        moxa = ModbusModule(link=link, device_id=5)
        assert await moxa.read_discrete_inputs(3, 1) == (False,)
        assert await command({"op": "input", "device_id": 5, "channel": 3, "value": True}) == {
            "ok": True
        }
        assert await moxa.read_discrete_inputs(3, 1) == (True,)
        assert (await command({"op": "fault", "device_id": 5, "exception": 6}))["ok"]
        with pytest.raises(ModbusExceptionError, match="BUSY"):
            await moxa.read_discrete_inputs(3, 1)
        assert (await command({"op": "nonsense", "device_id": 5}))["ok"] is False
        state = await command({"op": "state", "device_id": 5})
        assert state["inputs"][3] is True
    finally:
        if link is not None:
            await link.close()
        stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), WAIT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
