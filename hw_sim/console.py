"""A whole simulated console: every device a gateway config names, served on loopback.

`python -m hw_sim -c config/sim.toml` runs it as its own process (the demo does), with a
JSON-lines control port for fault injection from another process:

    echo '{"device": "fire-north", "action": "carrier", "value": true}' | nc 127.0.0.1 7399

Tests build a SimConsole in-process and call the same operations directly.
"""

from __future__ import annotations

import functools
import json
import logging
import socketserver
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import urlsplit

from gateway.config import AlarmSection, ChannelSignallingSection, Config
from gateway.radios import RadioSectionBase, kind_of
from gateway.radios.cm108 import Cm108RadioSection
from gateway.radios.serial import SerialRadioSection
from hw_sim.audio import PCM_PREFIX, AudioSim, SimChannel, SpeechBursts, WhiteNoise
from hw_sim.cm108 import SimCM108
from hw_sim.modbus import SimLoop, SimModbusServer, SimModule
from hw_sim.resolve import PortKey, PortUse, SimPortError
from hw_sim.serial_radio import SimulatedSerialRadio
from hw_sim.usb_server import SimUsbServer

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
        self.sim.set_cos_flap(hz)

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
        self.sim.set_carrier(present)

    def cos_stuck(self, stuck: bool) -> None:
        self.sim.set_cos_stuck(stuck)

    def cos_flap(self, hz: float | None) -> None:
        self.sim.set_cos_flap(hz)

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


_T = TypeVar("_T")


def _bind(use: PortUse, bind: Callable[[], _T]) -> _T:
    """Run what binds `use`'s port; a failure is a SimPortError naming port and device."""
    try:
        return bind()
    except OSError as exc:
        raise SimPortError(use, exc) from None


BACKGROUND_DBFS = -60.0
"""A live audio line always carries some noise: what a healthy idle channel sounds like."""
SPEECH_DBFS = -20.0


def _signalling_of(config: Config) -> dict[str, ChannelSignallingSection]:
    """The channels the daemon reads signalling on, with what it reads."""
    return {c: s.signalling for c, s in config.channels.items() if s.signalling is not None}


class SimConsole:
    """Builds and runs the simulated devices for a gateway config.

    The devices are served on the ports the config names, or with `free_ports` on ports
    the system picks (no clash with another simulator): `ports` then says which, and
    `hw_sim.resolve.config_text(config, ports=console.ports)` is the config the daemon needs.
    A port that cannot be bound raises SimPortError from start(), naming port and device.
    """

    def __init__(
        self, config: Config, *, audio_workdir: str | None = None, free_ports: bool = False
    ) -> None:
        self.radios: dict[str, SimRadio] = {}
        self._free_ports = free_ports
        self._serial: list[tuple[PortUse, SimulatedSerialRadio]] = []
        self._usb_devices: dict[int, tuple[PortUse, list[PortKey], list[SimCM108]]] = {}
        self._usb_servers: list[SimUsbServer] = []
        self._ports: dict[PortKey, int] = {}
        for channel_id, channel in config.channels.items():
            radio = channel.radio
            if radio is None:
                continue  # a channel without a radio interface (audio or TTY only)
            kind = kind_of(radio).name
            if kind not in RADIO_SIMULATORS:
                raise ValueError(
                    f"channels.{channel_id}.radio: the simulator has no radio of kind {kind!r}"
                )
            simulate = RADIO_SIMULATORS[kind]
            if simulate is not None:
                simulate(self, channel_id, radio)
        self.modules: dict[str, SimModule] = {}
        self.links: dict[str, SimModbusServer] = {}
        self._link_uses: dict[str, PortUse] = {}
        self._modbus_loop = SimLoop("modbus-sim")  # one thread serves every simulated link
        for link_id, link in config.modbus.links.items():
            members = {m: s for m, s in config.modbus.modules.items() if s.link == link_id}
            if not members:
                continue
            if link.host not in ("127.0.0.1", "localhost"):
                raise ValueError(
                    f"modbus.links.{link_id}: the simulator serves Modbus TCP on 127.0.0.1 only"
                )
            for module_id, section in members.items():
                self.modules[module_id] = SimModule(
                    device_id=section.device_id, profile=section.preset
                )
            use = PortUse(
                key=("modbus", "links", link_id, "port"),
                what=f"the Modbus TCP link {link_id}",
                port=link.port,
            )
            self._link_uses[link_id] = use
            self.links[link_id] = SimModbusServer(
                modules=[self.modules[m] for m in members],
                port=0 if free_ports else use.port,
                loop=self._modbus_loop,
            )
        self.tty_channels = [c for c, section in config.channels.items() if section.tty]
        self.signalling = _signalling_of(config)
        self._alarms = dict(config.alarms)
        self.audio: AudioSim | None = None
        self.audio_channels: dict[str, SimChannel] = {}
        self._audio_devices: dict[str, str] = {}  # config device id -> simulated card name
        sim_cards: dict[str, int] = {}
        for audio_id, card_section in config.audio.devices.items():
            if card_section.device.startswith(PCM_PREFIX):
                name = card_section.device.removeprefix(PCM_PREFIX).rstrip("$")
                self._audio_devices[audio_id] = name
                sim_cards[name] = card_section.channels
        if sim_cards:
            rates = {config.audio.devices[d].samplerate for d in self._audio_devices}
            if len(rates) != 1:
                raise ValueError("simulated audio devices must share one samplerate")
            self.audio = AudioSim(devices=sim_cards, samplerate=rates.pop(), workdir=audio_workdir)
            for channel_id, channel_section in config.channels.items():
                wired = channel_section.audio
                if wired is not None and wired.device in self._audio_devices:
                    card = self._audio_devices[wired.device]
                    self.audio_channels[channel_id] = self.audio.channel(card, wired.column)
        for alarm in config.alarms.values():
            if alarm.nominal is not None and alarm.module in self.modules:
                # A healthy supervised loop reads its EOL resistor, not 0 (a short).
                self.modules[alarm.module].set_analog(alarm.channel, int(alarm.nominal["normal"]))

    def _add_serial_radio(self, channel_id: str, radio: RadioSectionBase) -> None:
        assert isinstance(radio, SerialRadioSection)  # kind_of checked the section's class
        use = PortUse(
            key=("channels", channel_id, "radio", "url"),
            what=f"the RFC 2217 serial radio of {channel_id}",
            port=_loopback_port(radio.url, "rfc2217", f"channels.{channel_id}.radio"),
        )
        sim = SimulatedSerialRadio(
            port=0 if self._free_ports else use.port,
            ptt_line=radio.ptt[0],
            ptt_invert=radio.ptt_invert,
            cos_line=radio.cos or "cd",
            cos_invert=radio.cos_invert,
        )
        self._serial.append((use, sim))
        self.radios[channel_id] = SerialSimRadio(sim)

    def _add_cm108_radio(self, channel_id: str, radio: RadioSectionBase) -> None:
        assert isinstance(radio, Cm108RadioSection)  # kind_of checked the section's class
        where = f"channels.{channel_id}.radio"
        if radio.usb_backend is None:
            raise ValueError(f"{where}: set usb_backend = sim://127.0.0.1:PORT to simulate")
        port = _loopback_port(radio.usb_backend, "sim", where)
        key = ("channels", channel_id, "radio", "usb_backend")
        use = PortUse(key=key, what=f"the USB simulator of {channel_id}", port=port)
        _, keys, devices = self._usb_devices.setdefault(port, (use, [], []))
        keys.append(key)
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
        devices.append(device)
        self.radios[channel_id] = Cm108SimRadio(device)

    @property
    def env(self) -> dict[str, str]:
        """What the daemon's environment needs to see the simulated sound cards."""
        return self.audio.env if self.audio is not None else {}

    @property
    def ports(self) -> dict[PortKey, int]:
        """The port each device is served on, by its config key (after start())."""
        return dict(self._ports)

    def carrier(self, channel_id: str, present: bool) -> None:
        """A unit talks (or stops): carrier on the radio, speech on the channel's audio."""
        radio = self.radios.get(channel_id)
        if radio is not None:
            radio.carrier(present)
        audio = self.audio_channels.get(channel_id)
        if audio is not None:
            audio.source = (
                SpeechBursts(rms_dbfs=SPEECH_DBFS, talk_s=(30.0, 60.0), pause_s=(0.2, 0.3))
                if present
                else WhiteNoise(rms_dbfs=BACKGROUND_DBFS)
            )

    def tty_call(
        self,
        channel_id: str,
        text: str,
        *,
        baud: float = 45.45,
        convention: Literal["both", "unshift_on_space", "keep"] = "both",
    ) -> float:
        """A caller's TTY types `text` on the channel's line; returns its length in seconds.

        `convention`: how the caller's TTY shifts after a space. "unshift_on_space" (RTTY
        software, minimodem) sends no LTRS after a space and FIGS again before figures;
        "keep" (TIA-825-A) keeps figures across a space; "both" sends what either kind of
        receiver needs.
        """
        from gateway.dsp import TtyEncoder

        channel = self.audio_channels[channel_id]
        assert self.audio is not None
        encoder = TtyEncoder(sample_rate=self.audio.samplerate, baud=baud, convention=convention)
        audio = encoder.encode(text)
        channel.queue(audio * 0.5)  # about -12 dBFS, a typical line level
        return len(audio) / self.audio.samplerate

    def dtmf(self, channel_id: str, digits: str, *, on_s: float = 0.08) -> float:
        """A radio or phone patch sends DTMF digits on the channel; returns their length."""
        from gateway.dsp.dtmf import dtmf_signal

        assert self.audio is not None
        audio = dtmf_signal(digits, self.audio.samplerate, on_s=on_s, off_s=on_s, level_dbfs=-16)
        self.audio_channels[channel_id].queue(audio)
        return len(audio) / self.audio.samplerate

    def selcall(self, channel_id: str, digits: str, *, standard: str = "ccir") -> float:
        """A 5-tone call on the channel (repeats sent as E); returns its length in seconds."""
        from gateway.dsp.selcall import selcall_signal

        assert self.audio is not None
        rate = self.audio.samplerate
        audio = selcall_signal(digits, rate, standard=standard, level_dbfs=-13)
        self.audio_channels[channel_id].queue(audio)
        return len(audio) / rate

    def page(self, channel_id: str, a_hz: float, b_hz: float | None) -> float:
        """A two-tone page on the channel (1 s A then 3 s B; b_hz None: an 8 s long tone)."""
        from gateway.dsp.twotone import page_signal

        assert self.audio is not None
        rate = self.audio.samplerate
        audio = page_signal(a_hz, b_hz, rate, a_s=1.0 if b_hz is not None else 8.0, level_dbfs=-13)
        self.audio_channels[channel_id].queue(audio)
        return len(audio) / rate

    def mdc(
        self, channel_id: str, op: int, arg: int, unit: int, extra: bytes | None = None
    ) -> float:
        """An MDC-1200 burst on the channel (a PTT ID, an emergency...); its length in s."""
        from gateway.dsp.mdc1200 import mdc_signal

        assert self.audio is not None
        rate = self.audio.samplerate
        audio = mdc_signal(op, arg, unit, rate, extra=extra, level_dbfs=-13)
        self.audio_channels[channel_id].queue(audio)
        return len(audio) / rate

    def _mdc_from_control(self, channel_id: str, value: Any) -> None:
        """`KIND:UNIT` (ptt_id:1234, emergency:0042...) or `OPARG:UNIT` in hex."""
        from gateway.dsp.mdc1200 import parse_packet

        self.mdc(channel_id, *parse_packet(str(value)))

    def _page_from_control(self, channel_id: str, value: Any) -> None:
        """`A/B` in Hz, or `A` for a long tone."""
        tones = [float(t) for t in str(value).split("/")]
        self.page(channel_id, tones[0], tones[1] if len(tones) > 1 else None)

    def _dtmf_from_control(self, channel_id: str, value: Any) -> None:
        self.dtmf(channel_id, str(value))

    def _selcall_from_control(self, channel_id: str, value: Any) -> None:
        """`[standard:]digits`, e.g. `zvei1:12345`; CCIR unless named."""
        standard, _, digits = str(value).rpartition(":")
        self.selcall(channel_id, digits, standard=standard or "ccir")

    def _tty_from_control(self, channel_id: str, text: Any) -> None:
        if text:
            self.tty_call(channel_id, str(text))

    def start(self) -> None:
        """Bind every port first (a busy one fails fast, before the sound cards start)."""
        try:
            self._start_servers()
            if self.audio is not None:
                for channel in self.audio_channels.values():
                    channel.source = WhiteNoise(rms_dbfs=BACKGROUND_DBFS)
                self.audio.start()
        except BaseException:
            self.stop()
            raise

    def _start_servers(self) -> None:
        for use, sim in self._serial:
            _bind(use, sim.start)
            self._ports[use.key] = sim.port
        for use, keys, devices in self._usb_devices.values():
            port = 0 if self._free_ports else use.port
            server = _bind(use, functools.partial(SimUsbServer, port=port))
            self._usb_servers.append(server)
            for device in devices:
                server.add(device)
            server.start()
            self._ports.update(dict.fromkeys(keys, server.address[1]))
        for link_id, link in self.links.items():
            use = self._link_uses[link_id]
            _bind(use, link.start)
            self._ports[use.key] = link.port

    def stop(self) -> None:
        for _, sim in self._serial:
            sim.stop()
        for server in self._usb_servers:
            server.stop()
        self._usb_servers.clear()
        for link in self.links.values():
            link.stop()
        self._modbus_loop.stop()
        if self.audio is not None:
            self.audio.stop()

    def alarm_wiring(self) -> dict[str, AlarmSection]:
        """The alarms the config wires to simulated modules."""
        return {a: s for a, s in self._alarms.items() if s.module in self.modules}

    def set_alarm_input(self, alarm_id: str, value: bool | float) -> None:
        """Drive the input an alarm is wired to: a contact closed (True) or an analog value."""
        alarm = self._alarms[alarm_id]
        module = self.modules[alarm.module]
        if alarm.kind == "digital":
            module.set_input(alarm.channel, bool(value))
        else:
            module.set_analog(alarm.channel, int(value))

    def control(self, request: dict[str, Any]) -> dict[str, Any]:
        """One fault-injection or query operation; the control port's whole protocol."""
        action = str(request.get("action"))
        if action == "list":
            return {
                "ok": True,
                "radios": {k: {"keyed": r.keyed} for k, r in self.radios.items()},
                "modules": sorted(self.modules),
                "links": sorted(self.links),
                "alarms": sorted(self._alarms),
            }
        device = str(request.get("device"))
        value = request.get("value")
        operations = self._operations(device, value, request.get("channel"))
        if operations is None:
            return {"ok": False, "error": f"unknown device {device!r}"}
        operation = operations.get(action)
        if operation is None:
            return {"ok": False, "error": f"unknown action {action!r}; known: {sorted(operations)}"}
        operation()
        answer: dict[str, Any] = {"ok": True, "device": device}
        if device in self.radios:
            answer["keyed"] = self.radios[device].keyed
        return answer

    def _operations(
        self, device: str, value: Any, channel: Any
    ) -> dict[str, Callable[[], None]] | None:
        audio = self.audio_channels.get(device)
        audio_ops: dict[str, Callable[[], None]] = {}
        if audio is not None:
            audio_ops = {
                "audio_dead": lambda: setattr(audio, "silence", bool(value)),
                "hum": lambda: setattr(audio, "hum_hz", float(value) if value else None),
                "clip": lambda: setattr(audio, "clip_gain_db", float(value) if value else None),
                "talk": lambda: self.carrier(device, bool(value)),
                "loopback": lambda: setattr(audio, "loopback", bool(value)),
                "tty": lambda: self._tty_from_control(device, value),
                "dtmf": lambda: self._dtmf_from_control(device, value),
                "selcall": lambda: self._selcall_from_control(device, value),
                "page": lambda: self._page_from_control(device, value),
                "mdc": lambda: self._mdc_from_control(device, value),
            }
        radio = self.radios.get(device)
        if radio is not None:
            return {
                **audio_ops,
                "carrier": lambda: self.carrier(device, bool(value)),
                "cos_stuck": lambda: radio.cos_stuck(bool(value)),
                "cos_flap": lambda: radio.cos_flap(float(value) if value else None),
                "ptt_no_follow": lambda: radio.ptt_no_follow(bool(value)),
                "unplug": radio.unplug,
                "replug": radio.replug,
                "state": lambda: None,
            }
        if device in self._alarms:
            return {"input": lambda: self.set_alarm_input(device, value)}
        module = self.modules.get(device)
        if module is not None:
            return {
                "input": lambda: module.set_input(int(channel), bool(value)),
                "analog": lambda: module.set_analog(int(channel), int(value)),
                "silent": lambda: module.set_silent(bool(value)),
                "delay": lambda: module.set_delay(float(value or 0)),
                "exception": lambda: module.set_exception(int(value) if value else None),
                "clear_faults": module.clear_faults,
            }
        link = self.links.get(device)
        if link is not None:
            return {"unplug": link.unplug, "replug": link.replug, "drop": link.drop_connections}
        card = self._audio_devices.get(device)
        if card is not None and self.audio is not None:
            sim = self.audio
            return {"unplug": lambda: sim.unplug(card), "replug": lambda: sim.replug(card)}
        return audio_ops or None


RadioSimulator = Callable[[SimConsole, str, RadioSectionBase], None]

RADIO_SIMULATORS: dict[str, RadioSimulator | None] = {
    "serial": SimConsole._add_serial_radio,
    "cm108": SimConsole._add_cm108_radio,
    "rigctld": None,
}
"""How the console simulates each radio kind of the gateway's registry (gateway.radios.KINDS),
by kind name. None: a kind whose tests use a real peer instead (rigctld: Debian's rigctld with
its dummy rig); its channels get no simulated radio. A kind missing here fails loudly."""


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

        use = PortUse(key=("--control-port",), what="the simulator's control port", port=port)
        self._server = _bind(use, functools.partial(Server, ("127.0.0.1", port), Handler))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
