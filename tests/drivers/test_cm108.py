"""CM108Radio through pyusb's real core (usb.core.find, Device) on the simulated chip.

Every test runs twice: with the simulator's backend in-process ("local") and through
RemoteBackend over loopback TCP to a SimUsbServer ("remote"), the daemon's setup.
Nothing is mocked: the only thing missing on this machine is the USB hardware itself,
which hw_sim.cm108 replaces at the control/interrupt-transfer level.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any

import pytest

from drivers.cm108 import COS_VOLDN, CM108Radio, cos_bit_for_gpio
from drivers.errors import DeviceLost, DeviceUnavailable
from drivers.radio import RadioInterface, RadioLines
from drivers.usb_loopback import RemoteBackend
from hw_sim.cm108 import SimCM108
from hw_sim.usb_backend import SimUsbBackend
from hw_sim.usb_server import SimUsbServer

BackendFactory = Callable[[Sequence[SimCM108]], Any]


@pytest.fixture(params=["local", "remote"])
def make_backend(request: pytest.FixtureRequest) -> Iterator[BackendFactory]:
    servers: list[SimUsbServer] = []
    remotes: list[RemoteBackend] = []
    sims: list[SimCM108] = []

    def make(devices: Sequence[SimCM108]) -> Any:
        sims.extend(devices)
        if request.param == "local":
            return SimUsbBackend(devices)
        server = SimUsbServer(devices=devices).start()
        servers.append(server)
        host, port = server.address
        remote = RemoteBackend(host, port)
        remotes.append(remote)
        return remote

    yield make
    for remote in remotes:
        remote.close()
    for server in servers:
        server.stop()
    for sim in sims:
        sim.close()


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll until `check` holds; the generous bound only catches a hang."""
    deadline = time.monotonic() + 5.0
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


async def lines_become(radio: CM108Radio, **expected: bool | None) -> RadioLines:
    last: list[RadioLines] = []

    async def check() -> bool:
        lines = await radio.read_lines()
        last[:] = [lines]
        return all(getattr(lines, k) == v for k, v in expected.items())

    try:
        await eventually(check)
    except AssertionError:
        raise AssertionError(f"lines never became {expected}: last {last}") from None
    return last[0]


@pytest.fixture
async def closing() -> AsyncIterator[list[CM108Radio]]:
    radios: list[CM108Radio] = []
    yield radios
    for radio in radios:
        await radio.close()


def test_implements_radio_interface() -> None:
    radio: RadioInterface = CM108Radio(backend=SimUsbBackend())
    assert radio.can_read_back_ptt is False
    assert "0d8c" in radio.description


@pytest.mark.parametrize("invert", [False, True])
async def test_open_unkeys_before_anything_else(
    make_backend: BackendFactory, closing: list[CM108Radio], invert: bool
) -> None:
    sim = SimCM108(ptt_gpio=3, ptt_invert=invert)
    radio = CM108Radio(backend=make_backend([sim]), ptt_gpio=3, ptt_invert=invert)
    closing.append(radio)
    await radio.open()
    assert sim.ptt_log() == []  # never keyed, not even for a moment
    first = sim.hid_requests()[0]
    unkeyed_level = 0x04 if invert else 0x00
    assert (first.kind, first.data) == ("set_report", bytes((0, unkeyed_level, 0x04, 0)))
    assert sim.gpio_direction == 0x04 and not sim.ptt_keyed
    assert not sim.kernel_driver_attached() and sim.claimed()
    assert "1-1" in radio.description


async def test_key_and_unkey_the_configured_gpio(
    make_backend: BackendFactory, closing: list[CM108Radio]
) -> None:
    sim = SimCM108(product_id=0x013A, ptt_gpio=5)  # CM119A: GPIO1-8
    radio = CM108Radio(backend=make_backend([sim]), ptt_gpio=5)
    closing.append(radio)
    await radio.open()
    await radio.set_ptt(True)
    assert sim.ptt_keyed and sim.radio_keyed
    assert (sim.gpio_output, sim.gpio_direction) == (0x10, 0x10)
    await radio.set_ptt(False)
    assert [c.keyed for c in sim.ptt_log()] == [True, False]
    assert (await radio.read_lines()).ptt is None  # no read-back without a sense input


async def test_inverted_ptt_drives_low_to_key(
    make_backend: BackendFactory, closing: list[CM108Radio]
) -> None:
    sim = SimCM108(ptt_gpio=4, ptt_invert=True)
    radio = CM108Radio(backend=make_backend([sim]), ptt_gpio=4, ptt_invert=True)
    closing.append(radio)
    await radio.open()
    assert sim.gpio_output == 0x08 and not sim.ptt_keyed
    await radio.set_ptt(True)
    assert sim.gpio_output == 0x00 and sim.gpio_direction == 0x08 and sim.ptt_keyed
    await radio.set_ptt(False)
    assert not sim.ptt_keyed


@pytest.mark.parametrize("cos_bit", [COS_VOLDN, cos_bit_for_gpio(2)], ids=["voldn", "gpio2"])
@pytest.mark.parametrize("invert", [False, True], ids=["active-high", "inverted"])
async def test_cos_follows_carrier(
    make_backend: BackendFactory, closing: list[CM108Radio], cos_bit: int, invert: bool
) -> None:
    sim = SimCM108(cos_bit=cos_bit, cos_invert=invert)
    radio = CM108Radio(backend=make_backend([sim]), cos_bit=cos_bit, cos_invert=invert)
    closing.append(radio)
    await radio.open()
    assert (await radio.read_lines()).cos is False
    sim.set_carrier(True)
    await lines_become(radio, cos=True)
    sim.set_carrier(False)
    await lines_become(radio, cos=False)


async def test_cos_polarity_flag_inverts_the_reading(
    make_backend: BackendFactory, closing: list[CM108Radio]
) -> None:
    sim = SimCM108(cos_invert=False)
    radio = CM108Radio(backend=make_backend([sim]), cos_invert=True)  # miswired on purpose
    closing.append(radio)
    await radio.open()
    assert (await radio.read_lines()).cos is True
    sim.set_carrier(True)
    await lines_become(radio, cos=False)


async def test_carrier_present_before_open_is_seen_at_once(
    make_backend: BackendFactory, closing: list[CM108Radio]
) -> None:
    # usbhid consumed the interrupt report before the driver detached it: only the
    # GET_REPORT read at open can tell the carrier is already up.
    sim = SimCM108()
    sim.set_carrier(True)
    radio = CM108Radio(backend=make_backend([sim]))
    closing.append(radio)
    await radio.open()
    assert (await radio.read_lines()).cos is True


async def test_cos_unknown_while_the_chip_refuses_get_report(
    make_backend: BackendFactory, closing: list[CM108Radio]
) -> None:
    # Without GET_REPORT only the next input change tells the inputs: until then COS is
    # unknown, not a guessed "no carrier" (the carrier may well be up).
    sim = SimCM108(ptt_sense_gpio=2)
    sim.set_carrier(True)
    sim.refuse_get_report(True)
    radio = CM108Radio(backend=make_backend([sim]), ptt_sense_gpio=2)
    closing.append(radio)
    await radio.open()
    assert await radio.read_lines() == RadioLines(cos=None, ptt=None)
    sim.set_carrier(False)
    await lines_become(radio, cos=False, ptt=False)
    sim.set_carrier(True)
    await lines_become(radio, cos=True)


async def test_ptt_read_back_through_a_sense_gpio(
    make_backend: BackendFactory, closing: list[CM108Radio]
) -> None:
    sim = SimCM108(ptt_gpio=3, ptt_sense_gpio=2)
    radio = CM108Radio(backend=make_backend([sim]), ptt_gpio=3, ptt_sense_gpio=2)
    closing.append(radio)
    assert radio.can_read_back_ptt
    await radio.open()
    assert (await radio.read_lines()).ptt is False
    await radio.set_ptt(True)
    await lines_become(radio, ptt=True)
    # The radio stops following its PTT line: unkeying leaves it transmitting.
    sim.set_ptt_no_follow(True)
    await radio.set_ptt(False)
    assert not sim.ptt_keyed and sim.radio_keyed
    sim.set_carrier(True)  # a fresh input report, read after the unkey
    lines = await lines_become(radio, cos=True)
    assert lines.ptt is True  # the mismatch the channel monitor reports


async def test_identify_by_serial_number_and_by_port_path(
    make_backend: BackendFactory, closing: list[CM108Radio]
) -> None:
    a = SimCM108(serial_number="RADIO-A", port_path="1-1.4")
    b = SimCM108(serial_number="RADIO-B", port_path="1-1.5", product_id=0x000C)
    backend = make_backend([a, b])
    by_serial = CM108Radio(backend=backend, serial_number="RADIO-B")
    by_path = CM108Radio(backend=backend, port_path="1-1.4")
    closing.extend([by_serial, by_path])
    await by_serial.open()
    await by_path.open()
    await by_serial.set_ptt(True)
    assert b.ptt_keyed and not a.ptt_keyed
    await by_path.set_ptt(True)
    assert a.ptt_keyed
    assert "1-1.5" in by_serial.description and "RADIO-B" in by_serial.description


async def test_two_devices_without_criteria_is_ambiguous(make_backend: BackendFactory) -> None:
    a = SimCM108(serial_number="RADIO-A", port_path="1-1.4")
    b = SimCM108(port_path="2-3")
    other = SimCM108(vendor_id=0x1234, product_id=0x5678, port_path="1-2")
    backend = make_backend([a, b, other])
    with pytest.raises(DeviceUnavailable) as caught:
        await CM108Radio(backend=backend).open()
    message = str(caught.value)
    assert "2 devices match" in message
    assert "1-1.4" in message and "RADIO-A" in message and "2-3" in message
    assert "1234" not in message
    for sim in (a, b):  # nothing touched: no detach, no claim, no PTT write
        assert sim.kernel_driver_attached() and not sim.claimed() and not sim.hid_requests()


async def test_no_match_lists_what_was_found(make_backend: BackendFactory) -> None:
    backend = make_backend([SimCM108(serial_number="RADIO-A", port_path="1-1.4")])
    with pytest.raises(DeviceUnavailable, match=r"no matching device.*1-1\.4.*RADIO-A"):
        await CM108Radio(backend=backend, serial_number="RADIO-Z").open()
    with pytest.raises(DeviceUnavailable, match="no CM108/CM119 device"):
        await CM108Radio(backend=make_backend([])).open()


async def test_refuses_a_gpio_the_chip_does_not_have(make_backend: BackendFactory) -> None:
    sim = SimCM108(product_id=0x013C)  # CM108AH: GPIO1-4
    with pytest.raises(DeviceUnavailable, match="no GPIO6"):
        await CM108Radio(backend=make_backend([sim]), ptt_gpio=6).open()
    assert not sim.hid_requests() and sim.kernel_driver_attached()


async def test_unplug_is_device_lost_and_replug_reopens(
    make_backend: BackendFactory, closing: list[CM108Radio]
) -> None:
    sim = SimCM108(serial_number="RADIO-A", port_path="1-1.4")
    radio = CM108Radio(backend=make_backend([sim]), port_path="1-1.4")
    closing.append(radio)
    await radio.open()
    await radio.set_ptt(True)
    sim.unplug()
    assert not sim.ptt_keyed  # the unpowered chip drops its outputs

    async def lost() -> bool:
        try:
            await radio.read_lines()
        except DeviceLost as exc:
            assert "unplugged" in str(exc)
            return True
        return False

    await eventually(lost)
    with pytest.raises(DeviceLost):
        await radio.set_ptt(False)
    await radio.close()  # best effort, never raises
    with pytest.raises(DeviceUnavailable):
        await radio.open()

    sim.replug()
    sim.clear_ptt_log()
    await radio.open()
    assert sim.ptt_log() == [] and not sim.kernel_driver_attached()
    await radio.set_ptt(True)
    assert sim.ptt_keyed
    sim.set_carrier(True)
    await lines_become(radio, cos=True)


async def test_close_unkeys_releases_and_reattaches(make_backend: BackendFactory) -> None:
    sim = SimCM108()
    radio = CM108Radio(backend=make_backend([sim]))
    await radio.open()
    await radio.set_ptt(True)
    await radio.close()
    assert not sim.ptt_keyed
    assert sim.kernel_driver_attached() and not sim.claimed()
    await radio.close()  # twice is fine
    with pytest.raises(DeviceLost, match="not open"):
        await radio.read_lines()
    with pytest.raises(DeviceLost, match="not open"):
        await radio.set_ptt(True)
    assert not sim.ptt_keyed


async def test_kernel_driver_left_alone_when_not_bound(make_backend: BackendFactory) -> None:
    sim = SimCM108(kernel_driver=False)
    radio = CM108Radio(backend=make_backend([sim]))
    await radio.open()
    await radio.close()
    assert (sim.detach_count, sim.attach_count) == (0, 0)
    assert not sim.kernel_driver_attached()


async def test_stuck_and_flapping_carrier(
    make_backend: BackendFactory, closing: list[CM108Radio]
) -> None:
    sim = SimCM108()
    radio = CM108Radio(backend=make_backend([sim]))
    closing.append(radio)
    await radio.open()
    sim.set_cos_stuck(True)
    await lines_become(radio, cos=True)
    sim.set_carrier(False)  # the radio drops carrier, the stuck line does not
    sim.set_cos_stuck(False)
    await lines_become(radio, cos=False)

    sim.set_cos_flap(20.0)
    seen: list[bool | None] = []

    async def toggled_several_times() -> bool:
        cos = (await radio.read_lines()).cos
        if not seen or seen[-1] != cos:
            seen.append(cos)
        return len(seen) >= 4

    await eventually(toggled_several_times)
    sim.set_cos_flap(None)


async def test_simulator_gone_while_open_is_device_lost(closing: list[CM108Radio]) -> None:
    sim = SimCM108()
    server = SimUsbServer(devices=[sim]).start()
    host, port = server.address
    backend = RemoteBackend(host, port)
    radio = CM108Radio(backend=backend)
    closing.append(radio)
    try:
        await radio.open()
        server.stop()  # drops the connections, as if the simulator process died
        await eventually(lambda: _raises_lost(radio))
        with pytest.raises(DeviceLost):
            await radio.set_ptt(True)
    finally:
        server.stop()
        backend.close()
        sim.close()
    with pytest.raises(DeviceUnavailable, match="unreachable"):
        await CM108Radio(backend=RemoteBackend(host, port)).open()


async def _raises_lost(radio: CM108Radio) -> bool:
    try:
        await radio.read_lines()
    except DeviceLost:
        return True
    return False


async def test_remote_session_end_releases_claims() -> None:
    sim = SimCM108()
    with SimUsbServer(devices=[sim]) as server:
        crashed = RemoteBackend(*server.address)
        radio = CM108Radio(backend=crashed)
        await radio.open()
        assert sim.claimed()
        crashed.close()  # the daemon dies without closing anything

        async def released() -> bool:
            return not sim.claimed()

        await eventually(released)
        restarted = CM108Radio(backend=RemoteBackend(*server.address))
        await restarted.open()
        await restarted.set_ptt(True)
        assert sim.ptt_keyed
        await restarted.close()
        assert not sim.ptt_keyed


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ptt_gpio": 0},
        {"ptt_gpio": 9},
        {"cos_bit": 2},
        {"cos_bit": 16},
        {"cos_bit": cos_bit_for_gpio(3), "ptt_gpio": 3},
        {"ptt_sense_gpio": 3},
        {"port_path": "usb1/004"},
        {"serial_number": ""},
        {"vendor_id": 0x1234},
        {"product_id": 0x10000},
    ],
)
def test_constructor_refuses_bad_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        CM108Radio(**kwargs)
    with pytest.raises(TypeError):
        CM108Radio(ptt_invert=1)  # type: ignore[arg-type]


def test_remote_backend_closes_the_connections_of_threads_that_ended() -> None:
    # The driver gets a new I/O thread at every reopen; a device that stays unplugged for
    # an hour must not leave an hour of reopen attempts' connections open.
    import threading

    sim = SimCM108(serial_number="SIM-LEAK")
    server = SimUsbServer(devices=[sim]).start()
    backend = RemoteBackend(*server.address)
    try:
        for _ in range(12):
            worker = threading.Thread(target=lambda: list(backend.enumerate_devices()))
            worker.start()
            worker.join()
        list(backend.enumerate_devices())  # this thread's, which prunes the ended ones
        assert len(backend._sockets) <= 2
    finally:
        backend.close()
        server.stop()
        sim.close()
