"""A whole simulated console: every device a gateway config names, served on loopback.

`python -m hw_sim -c config/sim.toml` runs it as its own process (the demo does), with a
JSON-lines control port for fault injection from another process:

    echo '{"device": "fire-north", "action": "carrier", "value": true}' | nc 127.0.0.1 7399

Tests build a SimConsole in-process and call the same operations directly.
"""

from __future__ import annotations

import json
import logging
import socketserver
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from gateway.config import Cm108RadioSection, Config, SerialRadioSection
from hw_sim.cm108 import CM108SimServer, SimCM108
from hw_sim.serial_radio import SimulatedSerialRadio

log = logging.getLogger(__name__)


class SimRadio(Protocol):
    """What the console simulator can do to any simulated radio interface."""

    @property
    def keyed(self) -> bool: ...
    def carrier(self, present: bool) -> None: ...
    def cos_stuck(self, stuck: bool) -> None: ...
    def cos_flap(self, hz: float | None) -> None: ...
    def ptt_no_follow(self, enabled: bool) -> None: ...
    def unplug(self) -> None: ...
    def replug(self) -> None: ...


@dataclass
class SerialSimRadio:
    sim: SimulatedSerialRadio

    @property
    def keyed(self) -> bool:
        return self.sim.state().keyed

    def carrier(self, present: bool) -> None:
        self.sim.set_carrier(present)

    def cos_stuck(self, stuck: bool) -> None:
        self.sim.set_cos_stuck(stuck)

    def cos_flap(self, hz: float | None) -> None:
        self.sim.set_cos_flapping(hz)

    def ptt_no_follow(self, enabled: bool) -> None:
        self.sim.set_ptt_no_follow(enabled)

    def unplug(self) -> None:
        self.sim.unplug()

    def replug(self) -> None:
        self.sim.replug()


@dataclass
class Cm108SimRadio:
    sim: SimCM108

    @property
    def keyed(self) -> bool:
        return self.sim.radio_keyed

    def carrier(self, present: bool) -> None:
        self.sim.set_cos(present)

    def cos_stuck(self, stuck: bool) -> None:
        # Stuck at "present": the failure a technician meets (squelch open, shorted line).
        self.sim.stick_cos(True if stuck else None)

    def cos_flap(self, hz: float | None) -> None:
        self.sim.flap_cos(hz)

    def ptt_no_follow(self, enabled: bool) -> None:
        self.sim.set_ptt_no_follow(enabled)

    def unplug(self) -> None:
        self.sim.unplug()

    def replug(self) -> None:
        self.sim.replug()


def _loopback_port(url: str, scheme: str, where: str) -> int:
    parts = urlsplit(url)
    if parts.scheme != scheme or parts.hostname not in ("127.0.0.1", "localhost"):
        raise ValueError(f"{where}: the simulator serves only {scheme}://127.0.0.1:PORT, not {url}")
    if not parts.port:
        raise ValueError(f"{where}: {url} has no port")
    return parts.port


class SimConsole:
    """Builds and runs the simulated devices for a gateway config."""

    def __init__(self, config: Config) -> None:
        self.radios: dict[str, SimRadio] = {}
        self._serial: list[SimulatedSerialRadio] = []
        self._usb_servers: dict[int, CM108SimServer] = {}
        for channel_id, channel in config.channels.items():
            radio = channel.radio
            where = f"channels.{channel_id}.radio"
            if isinstance(radio, SerialRadioSection):
                sim = SimulatedSerialRadio(
                    port=_loopback_port(radio.url, "rfc2217", where),
                    ptt_line=radio.ptt[0],
                    ptt_invert=radio.ptt_invert,
                    cos_line=radio.cos or "cd",
                    cos_invert=radio.cos_invert,
                )
                self._serial.append(sim)
                self.radios[channel_id] = SerialSimRadio(sim)
            elif isinstance(radio, Cm108RadioSection):
                if radio.usb_backend is None:
                    raise ValueError(f"{where}: set usb_backend = sim://127.0.0.1:PORT to simulate")
                port = _loopback_port(radio.usb_backend, "sim", where)
                server = self._usb_servers.get(port)
                if server is None:
                    server = self._usb_servers[port] = CM108SimServer(port=port)
                device = SimCM108(
                    serial_number=radio.serial,
                    port_path=radio.port_path or f"1-{len(self.radios) + 1}",
                    ptt_gpio=radio.ptt_gpio,
                    ptt_invert=radio.ptt_invert,
                    cos_bit=radio.cos_bit,
                    cos_invert=radio.cos_invert,
                    ptt_sense_gpio=radio.ptt_sense_gpio,
                    ptt_sense_invert=radio.ptt_sense_invert,
                )
                server.add(device)
                self.radios[channel_id] = Cm108SimRadio(device)

    def start(self) -> None:
        for sim in self._serial:
            sim.start()
        for server in self._usb_servers.values():
            server.start()

    def stop(self) -> None:
        for sim in self._serial:
            sim.stop()
        for server in self._usb_servers.values():
            server.stop()

    def control(self, request: dict[str, Any]) -> dict[str, Any]:
        """One fault-injection or query operation; the control port's whole protocol."""
        action = request.get("action")
        if action == "list":
            return {"ok": True, "devices": {k: {"keyed": r.keyed} for k, r in self.radios.items()}}
        device = request.get("device")
        radio = self.radios.get(str(device))
        if radio is None:
            return {"ok": False, "error": f"unknown device {device!r}"}
        value = request.get("value")
        operations: dict[str, Callable[[], None]] = {
            "carrier": lambda: radio.carrier(bool(value)),
            "cos_stuck": lambda: radio.cos_stuck(bool(value)),
            "cos_flap": lambda: radio.cos_flap(float(value) if value else None),
            "ptt_no_follow": lambda: radio.ptt_no_follow(bool(value)),
            "unplug": radio.unplug,
            "replug": radio.replug,
            "state": lambda: None,
        }
        operation = operations.get(str(action))
        if operation is None:
            return {"ok": False, "error": f"unknown action {action!r}; known: {sorted(operations)}"}
        operation()
        return {"ok": True, "device": device, "keyed": radio.keyed}


class ControlServer:
    """JSON lines over loopback TCP: one request object per line, one answer per line."""

    def __init__(self, console: SimConsole, port: int) -> None:
        outer = console

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                for line in self.rfile:
                    try:
                        answer = outer.control(json.loads(line))
                    except (ValueError, TypeError) as exc:
                        answer = {"ok": False, "error": str(exc)}
                    self.wfile.write(json.dumps(answer).encode() + b"\n")

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
