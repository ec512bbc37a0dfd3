"""The RFC 2217 driver against a real ser2net (Debian's ser2net 4.x package), issue #12.

ser2net needs a serial-capable device behind it. A pty is a tty but has no modem lines (Linux
refuses TIOCMGET/TIOCMBIS on one), so through a pty ser2net can neither set RTS nor report
CTS. So ser2net relays here to the simulator, with gensio's RFC 2217 client as its connector
(`connector: telnet(rfc2217),tcp,...`): the simulator's lines reach ser2net as modem state,
and everything between ser2net and our driver is ser2net's own server code (modem-state
mask, poll handling, SET-CONTROL). What this does not exercise is ser2net reading a real
UART's lines (its serialdev connector). The pty test shows what ser2net does on a pty.

What was found (ser2net 4.3.11, Debian 12): polls are never answered; changes are pushed only
when their delta bit is in the client's mask; that mask is all lines only after the client
says WILL COM-PORT, which pyserial's client leaves out whenever ser2net's DO COM-PORT comes
first, so about one connection in two heard no modem state at all until the driver began
setting the mask itself.

Skipped when ser2net is not installed, except under CI=true (`make test` installs it).
"""

from __future__ import annotations

import contextlib
import os
import pty
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from drivers.errors import DeviceUnavailable
from drivers.serial_radio import SerialRadio
from hw_sim.serial_radio import SimulatedSerialRadio
from tests.mqtt_tools import Broker, Daemon, Subscriber, free_port
from tests.radio_gateway import RadioGateway, serial_channel, start_radio_gateway
from tests.rfc2217_client import (
    NOTIFY_MODEMSTATE,
    SERVER_SET_CONTROL,
    SET_CONTROL,
    RawRfc2217,
    check_ser2net_modem_rules,
    check_ser2net_needs_will_or_a_mask,
    cos_becomes,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:serial.rfc2217"),
]

WAIT_S = 5.0


def _ser2net_binary() -> str:
    found = shutil.which("ser2net") or next(
        (p for p in ("/usr/sbin/ser2net", "/usr/local/sbin/ser2net") if os.access(p, os.X_OK)),
        None,
    )
    if found is None:
        if os.environ.get("CI", "").lower() in {"true", "1"}:
            pytest.fail("ser2net is not installed; make test installs it (DEB_PACKAGES)")
        pytest.skip("ser2net is not installed (apt-get install ser2net)")
    return found


def _listening_inodes(port: int) -> set[str]:
    """Inodes of the IPv4 sockets listening on `port` (from /proc/net/tcp)."""
    inodes = set()
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":
                inodes.add(fields[9])
    return inodes


def _holds_socket(pid: int, inodes: set[str]) -> bool:
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return True
    return False


class Ser2net:
    """One ser2net process serving one connection on a free loopback port."""

    def __init__(self, workdir: Path, connector: str) -> None:
        self._binary = _ser2net_binary()
        self._workdir = workdir
        self._connector = connector
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        for _ in range(3):  # a free port can be taken by someone else before ser2net binds it
            self.port = free_port()
            config = self._workdir / "ser2net.yaml"
            config.write_text(
                "%YAML 1.1\n---\nconnection: &radio\n"
                f"    accepter: telnet(rfc2217),tcp,127.0.0.1,{self.port}\n"
                "    enable: on\n"
                f"    connector: {self._connector}\n"
            )
            log = (self._workdir / "ser2net.log").open("ab")
            self._proc = subprocess.Popen(
                [self._binary, "-n", "-u", "-c", str(config), "-P", str(self._workdir / "pid")],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            log.close()
            deadline = time.monotonic() + 10.0
            while time.monotonic() < deadline and self._proc.poll() is None:
                if _holds_socket(self._proc.pid, _listening_inodes(self.port)):
                    return
                time.sleep(0.02)
            self.stop()
        raise RuntimeError(f"ser2net did not listen: {self.log()}")

    def log(self) -> str:
        path = self._workdir / "ser2net.log"
        return path.read_text(errors="replace") if path.exists() else ""

    @property
    def url(self) -> str:
        return f"rfc2217://127.0.0.1:{self.port}"

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def relay(
    tmp_path: Path, make_sim: Callable[..., SimulatedSerialRadio]
) -> Iterator[tuple[Ser2net, SimulatedSerialRadio]]:
    """ser2net in front of a simulated radio: PTT on RTS, COS on CTS."""
    sim = make_sim(ptt_line="rts", cos_line="cts")
    server = Ser2net(tmp_path, f"telnet(rfc2217),tcp,127.0.0.1,{sim.port}")
    try:
        server.start()
        yield server, sim
    finally:
        server.stop()


def test_what_ser2net_does_with_modem_state(relay: tuple[Ser2net, SimulatedSerialRadio]) -> None:
    """The same checks as the simulator's push mode (tests/drivers/test_serial_radio_push.py)."""
    server, sim = relay
    check_ser2net_modem_rules(server.port, sim.set_carrier)


def test_ser2net_needs_will_or_a_mask(relay: tuple[Ser2net, SimulatedSerialRadio]) -> None:
    """Why the issue's connections were blind, shown without pyserial's race."""
    server, sim = relay
    check_ser2net_needs_will_or_a_mask(server.port, sim.set_carrier)


async def test_driver_through_ser2net(relay: tuple[Ser2net, SimulatedSerialRadio]) -> None:
    server, sim = relay
    radio = SerialRadio(url=server.url, ptt_lines=("rts",), cos_line="cts")
    try:
        await radio.open()
        assert radio.can_read_back_ptt  # ser2net relays the state queries
        lines = await radio.read_lines()
        assert lines.cos is False and lines.ptt is False  # known: ser2net answered the mask
        await radio.set_ptt(True)
        assert sim.keyed and (await radio.read_lines()).ptt is True
        await radio.set_ptt(False)
        assert not sim.keyed and (await radio.read_lines()).ptt is False
        for present in (True, False, True, False):
            sim.set_carrier(present)
            await cos_becomes(radio, present, "through ser2net")
    finally:
        await radio.close()
    assert sim.wait_blocking(lambda s: not s.connected, WAIT_S).keyed is False


async def test_every_open_through_ser2net_hears_the_carrier(
    relay: tuple[Ser2net, SimulatedSerialRadio],
) -> None:
    """The issue: through ser2net, COS was blind for a whole connection in about half the
    opens (9 of 20 here before the fix). pyserial's client skips WILL COM-PORT when ser2net's
    DO COM-PORT arrives first, and ser2net sets its default modem-state mask only on that
    WILL: with mask 0 it sends no modem state at all. The driver's own mask fixes it."""
    server, sim = relay
    for attempt in range(12):
        sim.set_carrier(False)
        radio = SerialRadio(url=server.url, ptt_lines=("rts",), cos_line="cts")
        try:
            await radio.open()
            assert (await radio.read_lines()).cos is False, f"open {attempt}"
            sim.set_carrier(True)
            await cos_becomes(radio, True, f"open {attempt}")
        finally:
            await radio.close()
        sim.wait_blocking(lambda s: not s.connected, WAIT_S)  # ser2net let go of its device


def _more_events(
    gw: RadioGateway, channel: str, event_type: str, count: int
) -> Callable[[Any], bool]:
    """A wait predicate: the channel has had more than `count` events of `event_type`."""
    return lambda _: len(gw.events_of(channel, event_type)) > count


def test_gateway_through_ser2net(
    tmp_path: Path,
    broker: Broker,
    daemon_factory: Callable[..., Daemon],
    subscriber_factory: Callable[..., Subscriber],
    relay: tuple[Ser2net, SimulatedSerialRadio],
) -> None:
    """The issue's symptom was `cos: false` for good, COS events never seen. Through ser2net
    the channel reports carrier coming and going, and busy lockout acts on it. (One daemon
    start: the blind connections were one open in two; the test above opens twelve times.)"""
    server, sim = relay
    channels = serial_channel("fire", server.url, extra="busy_lockout = true")
    gw = start_radio_gateway(tmp_path, broker, daemon_factory, subscriber_factory, channels)
    state = gw.wait_state("fire", device="online", cos=False)
    assert state["faults"] == [] and state["ptt_readback"] is True
    for _ in range(3):
        before = len(gw.events_of("fire", "cos.on"))
        sim.set_carrier(True)
        gw.sub.wait(_more_events(gw, "fire", "cos.on", before), 10.0, "cos.on")
        gw.wait_state("fire", cos=True, state="receiving")
        refused = gw.ptt("fire", "on")
        assert refused["status"] == "error" and "carrier present" in refused["error"]
        assert not sim.keyed
        sim.set_carrier(False)
        gw.wait_state("fire", cos=False, state="idle")
        assert gw.ptt("fire", "on")["data"]["ptt"] is True
        assert sim.keyed
        assert gw.ptt("fire", "off")["data"]["ptt"] is False
    assert gw.faults_raised("fire", "cos_unknown") == []


@pytest.fixture
def pty_server(tmp_path: Path) -> Iterator[Ser2net]:
    master, slave = pty.openpty()
    server = Ser2net(tmp_path, f"serialdev,{os.ttyname(slave)},9600n81,local")
    try:
        server.start()
        yield server
    finally:
        server.stop()
        os.close(master)
        os.close(slave)


async def test_ser2net_on_a_pty(pty_server: Ser2net) -> None:
    """A pty has no modem lines. ser2net reports them all low, answers a line-state query with
    the query itself (no state), and does not answer SET-CONTROL RTS on: the driver refuses
    to open such a port (loudly), rather than drive a PTT line that does not exist."""
    with RawRfc2217(pty_server.port) as client:
        client.wait(lambda c: bool(c.modem_reports()), WAIT_S, "a modem state at connect")
        client.send(NOTIFY_MODEMSTATE)
        client.send(SET_CONTROL, bytes([11]))  # RTS on
        client.send(SET_CONTROL, bytes([10]))  # what is RTS?
        client.wait(lambda c: (SERVER_SET_CONTROL, b"\x0a") in c.received, WAIT_S, "an answer")
        client.pump(0.3)
        answers: list[Any] = [v for o, v in client.received if o == SERVER_SET_CONTROL]
        assert answers == [b"\x0a"], "RTS on went unanswered; the query echoed back"
        assert client.modem_reports() == [0]
    radio = SerialRadio(url=f"{pty_server.url}?timeout=0.5", ptt_lines=("rts",), cos_line="cts")
    try:
        with pytest.raises(DeviceUnavailable, match="no answer to SET-CONTROL"):
            await radio.open()
    finally:
        await radio.close()
