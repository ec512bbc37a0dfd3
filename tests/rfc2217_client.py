"""A raw RFC 2217 client that records what a serial server sends, byte for byte.

Not the product's client (drivers/serial_radio.py): this one sends exactly what a test asks
and nothing else, so a test can say what a server (ser2net, the simulator) does with a
modem-state poll or mask. Used by the simulator's push-only tests and the ser2net tests,
with `cos_becomes`, a wait for what the driver reads.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable

from drivers.serial_radio import SerialRadio

IAC, SB, SE, WILL, WONT, DO, DONT = 255, 250, 240, 251, 252, 253, 254
BINARY, SGA, COM_PORT = 0, 3, 44
SET_CONTROL, NOTIFY_MODEMSTATE, SET_MODEMSTATE_MASK = 5, 7, 11
SERVER_SET_CONTROL, SERVER_NOTIFY_MODEMSTATE = 105, 107
CTS, CTS_DELTA = 0x10, 0x01


class RawRfc2217:
    """One connection; `received` holds every COM-PORT subnegotiation as (option, value)."""

    def __init__(self, port: int, *, host: str = "127.0.0.1", will_com_port: bool = True) -> None:
        self._sock = socket.create_connection((host, port), timeout=5.0)
        self._sock.setblocking(False)
        self._pending = bytearray()
        self.received: list[tuple[int, bytes]] = []
        offer = b"".join(
            bytes([IAC, verb, option])
            for option in (COM_PORT, SGA, BINARY)
            for verb in (WILL, DO)
            if will_com_port or (option, verb) != (COM_PORT, WILL)
        )
        self._send_raw(offer)

    def _send_raw(self, data: bytes) -> None:
        self._sock.setblocking(True)
        try:
            self._sock.sendall(data)
        finally:
            self._sock.setblocking(False)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> RawRfc2217:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, option: int, value: bytes = b"") -> None:
        """One COM-PORT subnegotiation (IAC in the value doubled)."""
        body = value.replace(bytes([IAC]), bytes([IAC, IAC]))
        self._send_raw(bytes([IAC, SB, COM_PORT, option]) + body + bytes([IAC, SE]))

    def modem_reports(self) -> list[int]:
        return [v[0] for o, v in self.received if o == SERVER_NOTIFY_MODEMSTATE and v]

    def pump(self, seconds: float) -> None:
        """Read for `seconds`, parsing what comes."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            ready, _, _ = select.select([self._sock], [], [], left)
            if ready:
                data = self._sock.recv(4096)
                if not data:
                    raise ConnectionError("the server closed the connection")
                self._pending += data
                self._parse()

    def wait(self, predicate: Callable[[RawRfc2217], bool], timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > end:
                raise AssertionError(f"{what}: not within {timeout:g} s; got {self.received}")
            self.pump(0.02)

    def _parse(self) -> None:
        buf = self._pending
        i = 0
        while i < len(buf):
            if buf[i] != IAC:
                i += 1  # serial data: nobody listens
                continue
            if i + 1 >= len(buf):
                break
            verb = buf[i + 1]
            if verb in (WILL, WONT, DO, DONT):
                if i + 2 >= len(buf):
                    break
                i += 3
            elif verb == SB:
                end = self._subnegotiation_end(buf, i + 2)
                if end is None:
                    break
                body = bytes(buf[i + 2 : end]).replace(bytes([IAC, IAC]), bytes([IAC]))
                if len(body) >= 2 and body[0] == COM_PORT:
                    self.received.append((body[1], body[2:]))
                i = end + 2
            else:
                i += 2
        del buf[:i]

    @staticmethod
    def _subnegotiation_end(buf: bytearray, start: int) -> int | None:
        """Index of the IAC of the IAC SE that ends the subnegotiation from `start`."""
        j = start
        while j + 1 < len(buf):
            if buf[j] == IAC:
                if buf[j + 1] == SE:
                    return j
                j += 2  # IAC IAC: a data byte
            else:
                j += 1
        return None


def check_ser2net_modem_rules(port: int, set_carrier: Callable[[bool], None]) -> None:
    """What ser2net 4.x does with modem state, asserted against the server on `port`, whose
    device carries COS on CTS (low when this starts) and `set_carrier` drives it.

    Observed with ser2net 4.3.11: it reports at connect, never answers a NOTIFY-MODEMSTATE
    poll, answers SET-MODEMSTATE-MASK with the masked state, and pushes a change only when
    the change's delta bit is in the mask.
    """
    with RawRfc2217(port) as client:
        client.wait(lambda c: len(c.modem_reports()) >= 1, 5.0, "a modem state at connect")
        client.pump(0.3)
        assert all(not r & CTS for r in client.modem_reports()), client.received

        before = len(client.modem_reports())
        for _ in range(5):
            client.send(NOTIFY_MODEMSTATE)
        client.pump(0.5)
        assert len(client.modem_reports()) == before, "a poll was answered"

        client.send(SET_MODEMSTATE_MASK, bytes([CTS]))  # the state bit alone
        client.wait(lambda c: len(c.modem_reports()) == before + 1, 2.0, "the mask answered")
        assert (client.modem_reports()[-1] & CTS) == 0
        set_carrier(True)
        client.pump(0.8)
        assert len(client.modem_reports()) == before + 1, "a change pushed without its delta bit"

        client.send(SET_MODEMSTATE_MASK, bytes([CTS | CTS_DELTA]))
        client.wait(lambda c: len(c.modem_reports()) == before + 2, 2.0, "the mask answered")
        assert client.modem_reports()[-1] & CTS, "the answer is the line as it is now"
        set_carrier(False)
        client.wait(lambda c: len(c.modem_reports()) == before + 3, 2.0, "carrier off pushed")
        assert client.modem_reports()[-1] == CTS_DELTA  # CTS low, CTS changed
        set_carrier(True)
        client.wait(lambda c: len(c.modem_reports()) == before + 4, 2.0, "carrier on pushed")
        assert client.modem_reports()[-1] == CTS | CTS_DELTA
        set_carrier(False)
        client.wait(lambda c: len(c.modem_reports()) == before + 5, 2.0, "carrier off pushed")


def check_ser2net_needs_will_or_a_mask(port: int, set_carrier: Callable[[bool], None]) -> None:
    """The issue's blind connections: a client that never says WILL COM-PORT (pyserial's,
    when the server's DO COM-PORT arrives first) hears no modem state from ser2net at all,
    until it sets a modem-state mask itself. The device's CTS is low when this starts."""
    with RawRfc2217(port, will_com_port=False) as client:
        client.pump(0.5)
        set_carrier(True)
        client.send(NOTIFY_MODEMSTATE)
        client.pump(0.8)
        assert client.modem_reports() == [], client.received
        client.send(SET_MODEMSTATE_MASK, bytes([CTS | CTS_DELTA]))
        client.wait(lambda c: len(c.modem_reports()) == 1, 2.0, "the mask answered")
        assert client.modem_reports()[0] & CTS
        set_carrier(False)
        client.wait(lambda c: len(c.modem_reports()) == 2, 2.0, "carrier off pushed")
        assert client.modem_reports()[1] == CTS_DELTA


async def cos_becomes(radio: SerialRadio, present: bool, what: str, timeout_s: float = 5.0) -> None:
    """Read until the driver reports `present`: a pushed change arrives when it arrives."""
    deadline = time.monotonic() + timeout_s
    while (await radio.read_lines()).cos is not present:
        assert time.monotonic() < deadline, f"{what}: COS never read {present}"
