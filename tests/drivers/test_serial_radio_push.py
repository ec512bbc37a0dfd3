"""SerialRadio against serial servers that never answer a modem-state poll (issue #12).

ser2net 4.x ignores NOTIFY-MODEMSTATE polls and pushes only the changes whose delta bit is
in the client's SET-MODEMSTATE-MASK. The simulator's "push" mode behaves so (checked here
with a raw client by the same function tests/test_ser2net.py runs against ser2net itself);
"changes" mode sends nothing until a line changes. The driver sets the mask at open, takes
the pushed state, and reports COS as None until the server has reported it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from serial import rfc2217

from drivers.serial_radio import SerialRadio
from hw_sim.serial_radio import SimulatedSerialRadio
from tests.rfc2217_client import (
    check_ser2net_modem_rules,
    check_ser2net_needs_will_or_a_mask,
    cos_becomes,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:serial.rfc2217")

WAIT_S = 5.0

SimFactory = Callable[..., SimulatedSerialRadio]
RadioFactory = Callable[..., SerialRadio]

STATE_AND_DELTA = {
    "cts": rfc2217.MODEMSTATE_MASK_CTS | rfc2217.MODEMSTATE_MASK_CTS_CHANGE,
    "dsr": rfc2217.MODEMSTATE_MASK_DSR | rfc2217.MODEMSTATE_MASK_DSR_CHANGE,
    "ri": rfc2217.MODEMSTATE_MASK_RI | rfc2217.MODEMSTATE_MASK_RI_CHANGE,
    "cd": rfc2217.MODEMSTATE_MASK_CD | rfc2217.MODEMSTATE_MASK_CD_CHANGE,
}


def test_push_mode_behaves_as_ser2net(make_sim: SimFactory) -> None:
    sim = make_sim(cos_line="cts", modem_notify="push")
    check_ser2net_modem_rules(sim.port, sim.set_carrier)


def test_push_mode_needs_will_or_a_mask_as_ser2net(make_sim: SimFactory) -> None:
    sim = make_sim(cos_line="cts", modem_notify="push")
    check_ser2net_needs_will_or_a_mask(sim.port, sim.set_carrier)


@pytest.mark.parametrize(
    ("cos_line", "invert"),
    [("cts", False), ("dsr", False), ("cd", False), ("ri", False), ("cd", True)],
)
async def test_cos_from_a_server_that_only_pushes(
    make_sim: SimFactory, make_radio: RadioFactory, cos_line: str, invert: bool
) -> None:
    sim = make_sim(cos_line=cos_line, cos_invert=invert, modem_notify="push")
    radio = make_radio(url=sim.url, ptt_lines=("rts",), cos_line=cos_line, cos_invert=invert)
    await radio.open()
    # The mask asks for the COS line's state and its changes (ser2net pushes only those).
    assert sim.state().modem_mask == STATE_AND_DELTA[cos_line]
    assert (await radio.read_lines()).cos is False  # the server's answer to the mask
    for present in (True, False, True, False):
        sim.set_carrier(present)
        # The push leaves before set_carrier returns and reaches the driver before the
        # answer to its next read's request: the very next read sees it.
        assert (await radio.read_lines()).cos is present
    assert sim.state().modem_polls >= 5, "polls were sent (and never answered)"
    await radio.set_ptt(True)  # PTT and its read-back are not affected
    assert sim.keyed and (await radio.read_lines()).ptt is True


async def test_the_placeholder_at_connect_is_not_taken_for_the_carrier(
    make_sim: SimFactory, make_radio: RadioFactory
) -> None:
    """ser2net reports all lines low at connect, before it has read its device. Carrier is
    up from the start: COS must never read False."""
    sim = make_sim(cos_line="cd", modem_notify="push")
    sim.set_carrier(True)
    radio = make_radio(url=sim.url, ptt_lines=("rts",), cos_line="cd")
    await radio.open()
    assert (await radio.read_lines()).cos is True


async def test_cos_is_unknown_until_the_server_reports_it(
    make_sim: SimFactory, make_radio: RadioFactory, caplog: pytest.LogCaptureFixture
) -> None:
    sim = make_sim(cos_line="cts", modem_notify="changes")
    sim.set_carrier(True)  # present, but the server tells nobody until it changes
    radio = make_radio(url=sim.url, ptt_lines=("rts",), cos_line="cts")
    with caplog.at_level(logging.WARNING, logger="drivers.serial_radio"):
        await radio.open()
    assert "has not reported the modem lines" in caplog.text
    for _ in range(5):
        lines = await radio.read_lines()
        assert lines.cos is None, "unknown, not a guessed False"
        assert lines.ptt is False  # the rest of the interface works
    sim.set_carrier(False)
    assert (await radio.read_lines()).cos is False
    sim.set_carrier(True)
    assert (await radio.read_lines()).cos is True


async def test_a_reconnect_starts_unknown_again(
    make_sim: SimFactory, make_radio: RadioFactory
) -> None:
    sim = make_sim(cos_line="cts", modem_notify="changes")
    radio = make_radio(url=sim.url, ptt_lines=("rts",), cos_line="cts")
    await radio.open()
    sim.set_carrier(True)
    assert (await radio.read_lines()).cos is True
    await radio.close()
    await radio.open()
    assert sim.state().connections == 2
    assert (await radio.read_lines()).cos is None  # the last connection's state is not kept


async def test_without_set_control_answers_the_mask_still_goes_out(
    make_sim: SimFactory, make_radio: RadioFactory
) -> None:
    sim = make_sim(cos_line="dsr", modem_notify="push", readback_supported=False)
    radio = make_radio(url=f"{sim.url}?ign_set_control", ptt_lines=("rts",), cos_line="dsr")
    await radio.open()  # nothing waited for: the mask reaches the server when it does
    await sim.wait(lambda s: s.modem_mask == STATE_AND_DELTA["dsr"], WAIT_S)
    sim.set_carrier(True)
    await cos_becomes(radio, True, "no answers to wait for")


async def test_no_cos_line_reports_none_and_sets_no_mask(
    make_sim: SimFactory, make_radio: RadioFactory
) -> None:
    sim = make_sim(cos_line="cd", modem_notify="push")
    radio = make_radio(url=sim.url, ptt_lines=("rts",), cos_line=None)
    await radio.open()
    sim.set_carrier(True)
    lines = await radio.read_lines()
    assert lines.cos is None and lines.ptt is False
    assert sim.state().modem_mask is None


async def test_a_server_that_answers_polls_still_works(
    make_sim: SimFactory, make_radio: RadioFactory
) -> None:
    """pyserial's PortManager ignores the mask for what it sends at connect and answers every
    poll: COS is known at once (the poll in the probe) and follows the line."""
    sim = make_sim(cos_line="ri", modem_notify="poll")
    sim.set_carrier(True)
    radio = make_radio(url=sim.url, ptt_lines=("rts",), cos_line="ri")
    await radio.open()
    assert sim.state().modem_mask == STATE_AND_DELTA["ri"]
    assert (await radio.read_lines()).cos is True
    sim.set_carrier(False)
    assert (await radio.read_lines()).cos is False
