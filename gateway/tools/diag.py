"""`consolegw diag`: what this machine's hardware looks like, and guided PASS/FAIL checks.

The checks drive the hardware directly through the shipped drivers, exactly as the daemon
would, so the daemon must not be running on the same hardware: two processes on one serial
port or USB interface fight over PTT, and closing a port drops its lines under the other. The
`daemon` check runs first: the daemon holds an flock in its state_dir (gateway.lock) while it
runs, so a held lock proves it runs, and a lock diag can take proves it does not (diag then
holds it until it is done, so no daemon can start under its checks). The broker's retained
status is asked too. No check touches the hardware while the daemon runs, or while neither
the lock nor the broker can tell, unless the technician passes --force.

Checks are a registry (`register_check`) run in registration order; each returns one result
per target (channel, module...): `daemon`, `ptt`, `modbus`, then the audio loop-back checks
`tone` and `tty`, which play on a channel's output and measure what a loop-back cable (or a
radio in repeat) brings back on its input. A new check is one more call:

    register_check("name", "what it proves", run, keys_transmitters=False)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import aiomqtt
import numpy as np
from numpy.typing import NDArray

from drivers.errors import DeviceError
from gateway.config import (
    AudioDeviceSection,
    ChannelSection,
    ChannelTtySection,
    Cm108RadioSection,
    Config,
    SerialRadioSection,
)
from gateway.events import utc_timestamp
from gateway.tools import ToolError

if TYPE_CHECKING:
    from drivers.audio import AudioCapture, AudioPlayback
    from gateway.lock import LockProbe, StateDirLock

Status = Literal["PASS", "FAIL", "SKIP"]

READBACK_GRACE_S = 0.5
"""How long a read-back may lag the PTT command before the check calls it wrong."""
SAMPLE_S = 0.05
"""Line sampling period while keyed."""
DAEMON_STATUS_WAIT_S = 1.5
"""Longest wait for the retained status after subscribing (it comes at once if any)."""


@dataclass(frozen=True, slots=True)
class CheckResult:
    check: str
    target: str
    """Channel, module or other id the result is about ("-" when global)."""
    status: Status
    detail: str
    """One line a technician can act on."""
    data: dict[str, Any] = field(default_factory=dict)
    """Measured values for the JSON report."""


@dataclass
class Inventory:
    serial_ports: list[dict[str, Any]] = field(default_factory=list)
    usb_interfaces: list[dict[str, Any]] = field(default_factory=list)
    audio_devices: list[dict[str, Any]] = field(default_factory=list)
    modbus_modules: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """What could not be listed, and why."""


@dataclass
class DiagContext:
    """What a check gets: the config, the options, what earlier checks found."""

    config: Config | None
    key_seconds: float
    only: frozenset[str] | None
    inventory: Inventory
    keying_confirmed: bool
    progress: Callable[[str], None]
    broker: str | None = None
    """A broker URL to ask instead of the config's mqtt.url (as `consolegw run --broker`)."""
    force: bool = False
    """Touch the hardware even when the `daemon` check refuses it."""
    daemon_online: bool | None = None
    """Set by the `daemon` check: True when the daemon runs (lock held, or online on the
    broker), False when it surely does not, None when that cannot be told."""
    refusal: str | None = None
    """Set by the `daemon` check: why the hardware checks must not run (None: they may)."""
    lock: StateDirLock | None = None
    """The daemon's state_dir lock, held by diag while the checks run (when it could)."""

    def wanted(self, target: str) -> bool:
        return self.only is None or target in self.only


CheckRun = Callable[[DiagContext], Awaitable[list[CheckResult]]]


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    description: str
    run: CheckRun
    touches_hardware: bool
    """Skipped while the daemon is online, and without a config."""
    keys_transmitters: bool
    """Needs the technician's go-ahead (prompt, or --yes)."""


CHECKS: dict[str, Check] = {}
"""Every check, in the order they run."""


def register_check(
    name: str,
    description: str,
    run: CheckRun,
    *,
    touches_hardware: bool = True,
    keys_transmitters: bool = False,
) -> None:
    """Add a guided check. `run` returns one CheckResult per target and must leave the
    hardware safe (transmitters unkeyed, devices closed) on every path, cancellation included.
    """
    if not name.isidentifier():
        raise ValueError(f"check name must be an identifier: {name!r}")
    if name in CHECKS:
        raise ValueError(f"check {name!r} already registered")
    CHECKS[name] = Check(name, description, run, touches_hardware, keys_transmitters)


@dataclass
class DiagReport:
    inventory: Inventory
    results: list[CheckResult]
    config_path: str | None
    gateway: str | None
    ts: str = field(default_factory=utc_timestamp)

    def count(self, status: Status) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def failed(self) -> bool:
        return self.count("FAIL") > 0

    def as_json(self) -> dict[str, Any]:
        from gateway.app import package_version

        return {
            "tool": "consolegw diag",
            "version": package_version(),
            "host": socket.gethostname(),
            "ts": self.ts,
            "config": self.config_path,
            "gateway": self.gateway,
            "inventory": asdict(self.inventory),
            "checks": [asdict(r) for r in self.results],
            "summary": {s: self.count(s) for s in ("PASS", "FAIL", "SKIP")},
            "result": "FAIL" if self.failed else "PASS",
        }


# -- inventory ------------------------------------------------------------------------------


def _symlinks(folder: str) -> dict[str, list[str]]:
    """realpath -> the stable names udev made for it (/dev/serial/by-id/...)."""
    names: dict[str, list[str]] = {}
    with contextlib.suppress(OSError):
        for entry in sorted(Path(folder).iterdir()):
            names.setdefault(os.path.realpath(entry), []).append(str(entry))
    return names


def list_serial_ports(config: Config | None) -> list[dict[str, Any]]:
    """Local serial ports with their stable names, and the configured ports that are missing."""
    from serial.tools import list_ports

    by_id = _symlinks("/dev/serial/by-id")
    by_path = _symlinks("/dev/serial/by-path")
    used: dict[str, list[str]] = {}
    configured: dict[str, list[str]] = {}
    for channel_id, section in (config.channels if config else {}).items():
        if isinstance(section.radio, SerialRadioSection):
            url = section.radio.url
            configured.setdefault(url, []).append(channel_id)
            if "://" not in url:
                used.setdefault(os.path.realpath(url), []).append(channel_id)
    ports: list[dict[str, Any]] = []
    seen: set[str] = set()
    for port in sorted(list_ports.comports(), key=lambda p: p.device):
        real = os.path.realpath(port.device)
        seen.add(real)
        ports.append(
            {
                "device": port.device,
                "by_id": by_id.get(real, []),
                "by_path": by_path.get(real, []),
                "description": port.description if port.description != "n/a" else "",
                "usb": f"{port.vid:04x}:{port.pid:04x}" if port.vid is not None else None,
                "usb_location": port.location,
                "serial_number": port.serial_number,
                "channels": used.get(real, []),
                "present": True,
            }
        )
    for url, channels in sorted(configured.items()):
        remote = "://" in url
        if not remote and os.path.realpath(url) in seen:
            continue
        ports.append(
            {
                "device": url,
                "by_id": [],
                "by_path": [],
                "description": "remote port (RFC 2217)" if remote else "NOT FOUND on this machine",
                "usb": None,
                "usb_location": None,
                "serial_number": None,
                "channels": channels,
                "present": remote,
            }
        )
    return ports


def _usb_string(dev: Any, attribute: str) -> str | None:
    try:
        value = getattr(dev, attribute)
    except Exception:  # unreadable without permission; not worth failing the listing
        return None
    return str(value) if value else None


def _has_hid_interface(dev: Any) -> bool:
    from drivers.cm108 import HID_INTERFACE

    try:
        for configuration in dev:
            for interface in configuration:
                if interface.bInterfaceNumber == HID_INTERFACE and interface.bInterfaceClass == 3:
                    return True
    except Exception:
        return False
    return False


def _cm108_sections(config: Config | None) -> dict[str, Cm108RadioSection]:
    return {
        channel_id: section.radio
        for channel_id, section in (config.channels if config else {}).items()
        if isinstance(section.radio, Cm108RadioSection)
    }


def list_usb_interfaces(config: Config | None, notes: list[str]) -> list[dict[str, Any]]:
    """CM108-family USB devices (C-Media and any vendor/product the config names), from
    libusb and from every simulator backend the config uses."""
    import usb.core
    import usb.util

    from drivers.cm108 import C_MEDIA_VENDOR_ID, KNOWN_PRODUCT_IDS

    sections = _cm108_sections(config)
    backends: list[tuple[str, Any]] = [("libusb", None)]
    for url in sorted({s.usb_backend for s in sections.values() if s.usb_backend}):
        from drivers.usb_loopback import RemoteBackend

        backends.append((url, RemoteBackend.from_url(url)))
    vendors = {C_MEDIA_VENDOR_ID} | {s.vendor_id for s in sections.values()}
    found: list[dict[str, Any]] = []
    for name, backend in backends:
        try:
            devices = list(usb.core.find(find_all=True, backend=backend))
        except usb.core.NoBackendError:
            notes.append("USB: libusb not found, real USB devices not listed (libusb-1.0-0)")
            continue
        except (usb.core.USBError, OSError, ValueError) as exc:
            notes.append(f"USB ({name}): cannot list devices: {exc}")
            devices = []
        for dev in devices:
            if dev.idVendor not in vendors:
                continue
            ports = getattr(dev, "port_numbers", None)
            path = f"{dev.bus}-{'.'.join(str(p) for p in ports)}" if ports else None
            serial = _usb_string(dev, "serial_number")
            entry = {
                "backend": name,
                "usb": f"{dev.idVendor:04x}:{dev.idProduct:04x}",
                "model": KNOWN_PRODUCT_IDS.get(dev.idProduct, "unknown C-Media device")
                if dev.idVendor == C_MEDIA_VENDOR_ID
                else "configured id",
                "port_path": path,
                "serial_number": serial,
                "product": _usb_string(dev, "product"),
                "hid_interface": _has_hid_interface(dev),
                "channels": [
                    channel_id
                    for channel_id, s in sections.items()
                    if _usb_matches(s, dev.idVendor, dev.idProduct, serial, path, name)
                ],
            }
            with contextlib.suppress(Exception):
                usb.util.dispose_resources(dev)
            found.append(entry)
        if backend is not None:
            with contextlib.suppress(Exception):
                backend.close()
    for channel_id in sections:
        if not any(channel_id in entry["channels"] for entry in found):
            notes.append(f"USB: channel {channel_id}: no matching CM108 interface found")
    return found


def _usb_matches(  # noqa: PLR0917 - one USB device's identity against one config section
    section: Cm108RadioSection,
    vendor: int,
    product: int,
    serial: str | None,
    path: str | None,
    backend: str,
) -> bool:
    from drivers.cm108 import KNOWN_PRODUCT_IDS

    if (section.usb_backend or "libusb") != backend or vendor != section.vendor_id:
        return False
    if section.product_id is not None and product != section.product_id:
        return False
    if section.product_id is None and product not in KNOWN_PRODUCT_IDS:
        return False
    if section.serial is not None and serial != section.serial:
        return False
    return section.port_path is None or path == section.port_path


def list_audio_devices(notes: list[str]) -> list[dict[str, Any]]:
    try:
        from drivers import audio

        devices = audio.list_devices()
    except (OSError, ImportError, DeviceError) as exc:
        notes.append(f"audio: PortAudio not available: {exc}")
        return []
    return [asdict(d) for d in devices]


def list_modbus_modules(config: Config | None) -> list[dict[str, Any]]:
    if config is None:
        return []
    from drivers.modbus_presets import preset

    rows = []
    for module_id, module in config.modbus.modules.items():
        link = config.modbus.links[module.link]
        where = (
            f"tcp {link.host}:{link.port}"
            if link.host is not None
            else f"rtu {link.serial_port} {link.baudrate}"
        )
        rows.append(
            {
                "module": module_id,
                "link": module.link,
                "where": where,
                "device_id": module.device_id,
                "model": preset(module.preset).model,
                "alarms": sorted(a for a, s in config.alarms.items() if s.module == module_id),
            }
        )
    return rows


async def take_inventory(config: Config | None) -> Inventory:
    inventory = Inventory()
    inventory.serial_ports = await asyncio.to_thread(list_serial_ports, config)
    inventory.usb_interfaces = await asyncio.to_thread(list_usb_interfaces, config, inventory.notes)
    inventory.audio_devices = await asyncio.to_thread(list_audio_devices, inventory.notes)
    inventory.modbus_modules = list_modbus_modules(config)
    return inventory


# -- checks ---------------------------------------------------------------------------------


async def _retained_status(client: aiomqtt.Client, topic: str) -> dict[str, Any] | None:
    """The retained message on `topic`, or None when there is none.

    A retained message is delivered right after the subscription; to know that none is
    coming without waiting blindly, a probe published after subscribing marks the end (the
    broker delivers one client's messages in order). A broker whose ACL drops the probe
    costs DAEMON_STATUS_WAIT_S instead.
    """
    from gateway.tools.mqtt_view import json_object

    probe = f"consolegw-diag/probe/{uuid.uuid4().hex}"
    await client.subscribe(topic, qos=1)
    with contextlib.suppress(aiomqtt.MqttError):
        await client.subscribe(probe, qos=1)
        await client.publish(probe, b"probe", qos=1)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DAEMON_STATUS_WAIT_S):
            async for message in client.messages:
                if message.topic.value != topic:
                    return None  # the probe: everything retained came before it
                payload = message.payload
                return json_object(payload) if isinstance(payload, bytes | bytearray) else None
    return None


async def _broker_status(ctx: DiagContext) -> tuple[str, dict[str, Any] | None, str]:
    """(broker url, its retained status or None, why it could not be asked or "")."""
    from gateway.tools.mqtt_view import BrokerTarget

    assert ctx.config is not None
    target = BrokerTarget.from_config(ctx.config, broker=ctx.broker)
    try:
        async with asyncio.timeout(5.0):
            client = target.client(identifier=f"consolegw-diag-{os.getpid()}", timeout=3.0)
            async with client:
                status = await _retained_status(client, f"{target.prefix}/status")
    except (aiomqtt.MqttError, TimeoutError, OSError) as exc:
        return target.mqtt.url, None, str(exc) or "timeout"
    return target.mqtt.url, status, ""


def _lock_note(found: LockProbe, state_dir: Path) -> str:
    if found.state == "free":
        held = "; diag holds it until it is done" if found.lock is not None else ""
        return f"no daemon holds the lock in state_dir {state_dir}{held}"
    return f"the lock {found.path} cannot be inspected ({found.reason})"


async def check_daemon(ctx: DiagContext) -> list[CheckResult]:
    """Does the daemon run on this console? Then nothing here may touch the hardware.

    The state_dir lock answers first and best; the broker's retained status is asked too (a
    daemon with another state_dir, or stopped while the lock could not be read)."""
    from gateway.lock import probe

    if ctx.config is None:
        return [CheckResult("daemon", "-", "SKIP", "no config: nothing to ask")]
    state_dir = ctx.config.gateway.state_dir
    found = await asyncio.to_thread(probe, state_dir)
    ctx.lock = found.lock
    data: dict[str, Any] = {"lock": str(found.path), "lock_state": found.state}
    verdict = "--force: the hardware is checked anyway" if ctx.force else "hardware checks refused"
    if found.state == "held":
        assert found.holder is not None
        holder = found.holder.describe()
        data["lock_holder"] = {"pid": found.holder.pid, "command": found.holder.command}
        ctx.daemon_online = True
        ctx.refusal = (
            f"the daemon runs ({holder} holds its state_dir lock): stop it first "
            "(systemctl stop consolegw), or pass --force"
        )
        detail = (
            f"the daemon runs on this console: {holder} holds {found.path}; stop it first "
            f"(systemctl stop consolegw); {verdict}"
        )
        return [CheckResult("daemon", "-", "FAIL", detail, data)]
    url, status, error = await _broker_status(ctx)
    data.update(broker=url, status=status)
    lock_note = _lock_note(found, state_dir)
    if isinstance(status, dict) and status.get("state") == "online":
        ctx.daemon_online = True
        ctx.refusal = "the daemon is online: stop it first, or pass --force"
        elsewhere = (
            " (yet it holds no lock in this config's state_dir: it runs with another "
            "config or on another machine?)"
            if found.state == "free"
            else ""
        )
        detail = (
            f"the daemon is online on {url} (session {status.get('session')}, since "
            f"{status.get('ts')}){elsewhere}: stop it first (systemctl stop consolegw); "
            f"{verdict}"
        )
        return [CheckResult("daemon", "-", "FAIL", detail, data)]
    if error:
        data["broker_error"] = error
        if found.state == "free":
            ctx.daemon_online = False
            detail = f"{lock_note}: the hardware is ours (broker {url} unreachable: {error})"
            return [CheckResult("daemon", "-", "PASS", detail, data)]
        ctx.daemon_online = None
        ctx.refusal = (
            "cannot tell whether the daemon runs (lock and broker both unavailable): "
            "pass --force once it is surely stopped"
        )
        detail = (
            f"cannot tell whether the daemon runs: {lock_note} and broker {url} is "
            f"unreachable ({error}); {verdict}. Run diag as a user who can read state_dir "
            "(sudo), give --broker URL, or pass --force once the daemon is surely stopped "
            "(systemctl stop consolegw)"
        )
        return [CheckResult("daemon", "-", "SKIP" if ctx.force else "FAIL", detail, data)]
    ctx.daemon_online = False
    said = "offline" if status else "never connected"
    detail = f"{lock_note}; daemon {said} on {url}: the hardware is ours"
    return [CheckResult("daemon", "-", "PASS", detail, data)]


async def _read(radio: Any) -> Any:
    async with asyncio.timeout(2.0):
        return await radio.read_lines()


async def _key_one(channel_id: str, section: Any, seconds: float) -> CheckResult:
    """Key one radio for `seconds`, watching read-back and carrier. Always unkeys."""
    from gateway.radios import make_radio

    radio = make_radio(section.radio)
    where = radio.description
    data: dict[str, Any] = {"interface": where}
    try:
        async with asyncio.timeout(10.0):
            await radio.open()
    except (DeviceError, TimeoutError) as exc:
        await radio.close()
        return CheckResult("ptt", channel_id, "FAIL", f"cannot open {where}: {exc}", data)
    try:
        data["readback"] = radio.can_read_back_ptt  # known once open (RFC 2217 probes it)
        before = await _read(radio)
        data["cos_before"] = before.cos
        if before.ptt:
            return CheckResult(
                "ptt",
                channel_id,
                "FAIL",
                f"{where} reads back KEYED before keying: PTT line stuck or wired inverted",
                data,
            )
        if before.cos:
            return CheckResult(
                "ptt",
                channel_id,
                "SKIP",
                "carrier present (someone may be talking): not keyed; run again when quiet",
                data,
            )
        return await _keyed_period(radio, channel_id, seconds, data)
    except (DeviceError, TimeoutError) as exc:
        return CheckResult("ptt", channel_id, "FAIL", f"{where} lost during the test: {exc}", data)
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await radio.set_ptt(False)
        await radio.close()


async def _keyed_period(
    radio: Any, channel_id: str, seconds: float, data: dict[str, Any]
) -> CheckResult:
    readback = radio.can_read_back_ptt
    start = time.monotonic()
    await radio.set_ptt(True)
    keyed_at: float | None = None
    dropped = False
    cos_seen = False
    while True:
        now = time.monotonic()
        if now - start >= seconds:
            break
        lines = await _read(radio)
        cos_seen = cos_seen or lines.cos
        if readback:
            if lines.ptt and keyed_at is None:
                keyed_at = time.monotonic()
            elif not lines.ptt and keyed_at is not None:
                dropped = True
        await asyncio.sleep(SAMPLE_S)
    await radio.set_ptt(False)
    released_at = time.monotonic()
    data["keyed_s"] = round(released_at - start, 2)
    data["cos_during"] = cos_seen
    release_s: float | None = None
    while readback:
        lines = await _read(radio)
        if not lines.ptt:
            release_s = time.monotonic() - released_at
            break
        if time.monotonic() - released_at > READBACK_GRACE_S:
            break
        await asyncio.sleep(SAMPLE_S / 2)
    carrier = "carrier seen while keyed" if cos_seen else "no carrier while keyed"
    if not readback:
        return CheckResult(
            "ptt",
            channel_id,
            "PASS",
            f"keyed {data['keyed_s']:g} s; no PTT read-back on this interface: confirm the "
            f"radio's TX indicator; {carrier}",
            data,
        )
    data["keyup_ms"] = None if keyed_at is None else round((keyed_at - start) * 1000, 1)
    data["release_ms"] = None if release_s is None else round(release_s * 1000, 1)
    if keyed_at is None or keyed_at - start > READBACK_GRACE_S:
        return CheckResult(
            "ptt",
            channel_id,
            "FAIL",
            "PTT commanded but the interface never read back keyed: check the PTT wiring, "
            f"polarity (ptt_invert) and the radio's PTT input; {carrier}",
            data,
        )
    if release_s is None:
        return CheckResult(
            "ptt",
            channel_id,
            "FAIL",
            "still reads back KEYED after release: PTT line stuck; unplug the interface",
            data,
        )
    if dropped:
        return CheckResult(
            "ptt",
            channel_id,
            "FAIL",
            f"read-back dropped while keyed: intermittent PTT line or power; {carrier}",
            data,
        )
    return CheckResult(
        "ptt",
        channel_id,
        "PASS",
        f"keyed {data['keyed_s']:g} s, read back keyed in {data['keyup_ms']:g} ms and "
        f"unkeyed in {data['release_ms']:g} ms; {carrier}",
        data,
    )


async def check_ptt(ctx: DiagContext) -> list[CheckResult]:
    assert ctx.config is not None
    results = []
    for channel_id, section in ctx.config.channels.items():
        if not ctx.wanted(channel_id):
            continue
        if section.radio is None:
            results.append(CheckResult("ptt", channel_id, "SKIP", "no radio interface configured"))
            continue
        ctx.progress(f"ptt: keying {channel_id} for {ctx.key_seconds:g} s")
        results.append(await _key_one(channel_id, section, ctx.key_seconds))
    return results


async def check_modbus(ctx: DiagContext) -> list[CheckResult]:
    assert ctx.config is not None
    from drivers.modbus_io import ModbusLink, ModbusModule, Snapshot
    from drivers.modbus_presets import preset
    from gateway.alarms import modbus_link

    links: dict[str, ModbusLink] = {}
    results = []
    try:
        for module_id, section in ctx.config.modbus.modules.items():
            if not ctx.wanted(module_id):
                continue
            link = links.get(section.link)
            if link is None:
                link = links[section.link] = modbus_link(ctx.config.modbus.links[section.link])
            model = preset(section.preset)
            if model.digital_inputs:
                input_map = model.input_map()
            elif model.analog_inputs:
                input_map = model.input_map(
                    analogs={f"ai{n}": n for n in range(len(model.analog_inputs))}
                )
            else:
                results.append(CheckResult("modbus", module_id, "SKIP", "preset has no inputs"))
                continue
            ctx.progress(f"modbus: polling {module_id}")
            module = ModbusModule(link=link, device_id=section.device_id)
            result = await module.poll(input_map)
            data: dict[str, Any] = {
                "where": module.description,
                "model": model.model,
                "duration_ms": round(result.duration_s * 1000, 1),
            }
            if isinstance(result, Snapshot):
                data["values"] = dict(result.values)
                closed = [k for k, v in result.values.items() if v is True]
                detail = (
                    f"{model.model} answered in {data['duration_ms']:g} ms: "
                    f"{len(result.values)} inputs, closed: {', '.join(closed) or 'none'}"
                )
                results.append(CheckResult("modbus", module_id, "PASS", detail, data))
            else:
                results.append(
                    CheckResult(
                        "modbus",
                        module_id,
                        "FAIL",
                        f"no valid answer from {module.description}: {result.error}",
                        data,
                    )
                )
    finally:
        for link in links.values():
            await link.close()
    if not results and not ctx.config.modbus.modules:
        results.append(CheckResult("modbus", "-", "SKIP", "no Modbus modules configured"))
    return results


# -- audio loop-back checks -----------------------------------------------------------------
#
# A loop-back (a cable from the channel's audio output to its input, or the radio in a repeat
# mode) sends what the console plays straight back to its capture. These checks play a
# known signal on the output the daemon would use and measure what returns on the input.

TONE_HZ = 1000.0
TONE_DBFS = -20.0
"""RMS level of the test tone: well clear of clipping, well above any sane noise floor."""
TONE_S = 1.5
TONE_RAMP_S = 0.01
"""Raised-cosine on and off: no clicks spreading energy across the band."""
LEAD_S = 0.3
"""Input heard before playing: its noise floor, and proof that no 1 kHz tone is there yet."""
TAIL_S = 1.5
"""Longest wait, once the signal has played out, for its end to come back: the loop's round
trip (a TTY message ends in 0.3 s of mark, which covers the decoder's own delay)."""
BAND_HZ = 20.0
"""Half width of the narrow band the tone's level is measured in."""
EDGE_S = 0.1
"""Left out at each end of the returned tone: its ramps and the envelope's smear."""
MIN_TONE_S = 0.5
"""Shortest returned tone that can be measured."""
MIN_SNR_DB = 20.0
MAX_GAIN_DB = 12.0
"""Loss or gain beyond this round the loop is a mis-set level (mixer, cable, pad)."""
CLIP = 0.999
TTY_MESSAGE = "DIAG TTY 1234"
"""Letters, figures and spaces (both shifts), 3.1 s at 45.45 baud."""
TTY_BAUD = 45.45
AUDIO_OPEN_TIMEOUT_S = 15.0
"""Opening may scan for the device in a child process first."""
NO_LOOPBACK = "no loopback: check the loopback cable / output device"


class _AudioFailure(Exception):
    """A reason to FAIL the audio check at hand (device not opened, lost, stalled)."""


@dataclass(frozen=True, slots=True)
class AudioPath:
    """Where a channel's audio check plays and listens: the output the daemon plays TTY
    replies on (the capture device and column unless [channels.X.tty] names another), and
    the channel's capture column."""

    capture_id: str
    capture: AudioDeviceSection
    column: int
    output_id: str
    output: AudioDeviceSection
    output_column: int

    @property
    def description(self) -> str:
        return (
            f"out {self.output_id} col {self.output_column} -> in {self.capture_id} "
            f"col {self.column}"
        )


def audio_path(config: Config, channel: ChannelSection) -> AudioPath | None:
    """The channel's loop-back path, or None when it has no audio."""
    audio = channel.audio
    if audio is None:
        return None
    from gateway.tty import reply_output

    out_id, out_column = reply_output(channel.tty, audio.device, audio.column)
    return AudioPath(
        capture_id=audio.device,
        capture=config.audio.devices[audio.device],
        column=audio.column,
        output_id=out_id,
        output=config.audio.devices[out_id],
        output_column=out_column,
    )


def _dbfs(mean_square: float) -> float:
    return 10.0 * math.log10(max(mean_square, 1e-12))


def band_power(samples: NDArray[np.float32], rate: int, hz: float) -> tuple[float, float]:
    """Mean-square power within `hz` +- BAND_HZ and outside it (noise and distortion): a
    Hann-windowed spectrum, so neither leaks into the other by more than ~-90 dB."""
    x = samples.astype(np.float64)
    x -= x.mean()  # a DC offset is no noise of the loop
    window = np.hanning(len(x))
    weight = float(np.sum(window**2))
    if len(x) < 16 or weight == 0.0:
        return 0.0, 0.0
    spectrum = np.abs(np.fft.rfft(x * window)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1.0 / rate)
    band = (np.abs(freqs - hz) <= BAND_HZ) & (freqs > 0) & (freqs < rate / 2)
    tone = 2.0 * float(spectrum[band].sum()) / (len(x) * weight)
    total = float(np.sum((x * window) ** 2)) / weight
    return tone, max(total - tone, 0.0)


def tone_envelope(samples: NDArray[np.float32], rate: int, hz: float) -> NDArray[np.float64]:
    """RMS of the `hz` component, sample by sample over a sliding 5 ms (quadrature mixing)."""
    n = np.arange(len(samples))
    mixed = samples.astype(np.float64) * np.exp(-2j * math.pi * hz * n / rate)
    width = max(1, round(rate * 0.005))
    smooth = np.convolve(mixed, np.ones(width) / width, mode="same")
    envelope: NDArray[np.float64] = math.sqrt(2.0) * np.abs(smooth)
    return envelope


@dataclass(frozen=True, slots=True)
class ToneMeasurement:
    found: bool
    onset: int | None
    """Sample index where the returned tone reached half its amplitude."""
    length_s: float
    level_dbfs: float
    """Tone RMS in the narrow band, over the returned tone's steady part (or everything after
    playing when none came back)."""
    rest_dbfs: float
    """Everything else over the same span: noise, hum, distortion."""
    snr_db: float
    before_dbfs: float
    """1 kHz level before playing."""
    before_snr_db: float
    floor_dbfs: float
    """Total RMS before playing."""
    peak: float
    """Largest sample magnitude over the steady part."""


def measure_tone(
    samples: NDArray[np.float32], rate: int, *, start: int, hz: float = TONE_HZ
) -> ToneMeasurement:
    """Find and measure a tone at `hz` that started (on the output) at sample `start`."""
    before = samples[:start]
    before_tone, before_rest = band_power(before, rate, hz)
    floor = _dbfs(float(np.mean(np.square(before, dtype=np.float64)))) if len(before) else -120.0
    envelope = tone_envelope(samples, rate, hz)
    after = envelope[start:]
    quiet = float(np.median(envelope[:start])) if start > 0 else 0.0
    peak_env = float(after.max()) if len(after) else 0.0
    found = peak_env >= max(10.0 * quiet, 10.0 ** (-75.0 / 20.0))
    onset: int | None = None
    length_s = 0.0
    span = samples[start:]
    if found:
        above = np.flatnonzero(after >= peak_env / 2.0)
        onset = start + int(above[0])
        end = start + int(above[-1])
        length_s = (end - onset) / rate
        edge = int(EDGE_S * rate)
        span = samples[onset + edge : max(onset + edge, end - edge)]
    tone, rest = band_power(span, rate, hz)
    return ToneMeasurement(
        found=found,
        onset=onset,
        length_s=round(length_s, 3),
        level_dbfs=_dbfs(tone),
        rest_dbfs=_dbfs(rest),
        snr_db=_dbfs(tone) - _dbfs(rest),
        before_dbfs=_dbfs(before_tone),
        before_snr_db=_dbfs(before_tone) - _dbfs(before_rest),
        floor_dbfs=floor,
        peak=float(np.abs(span).max()) if len(span) else 0.0,
    )


def _tone_signal(rate: int) -> NDArray[np.float32]:
    n = int(TONE_S * rate)
    t = np.arange(n) / rate
    amplitude = math.sqrt(2.0) * 10.0 ** (TONE_DBFS / 20.0)
    signal = amplitude * np.sin(2.0 * math.pi * TONE_HZ * t)
    ramp = int(TONE_RAMP_S * rate)
    if ramp > 0:
        shape = 0.5 - 0.5 * np.cos(math.pi * (np.arange(ramp) + 0.5) / ramp)
        signal[:ramp] *= shape
        signal[-ramp:] *= shape[::-1]
    out: NDArray[np.float32] = signal.astype(np.float32)
    return out


@dataclass
class _Take:
    """What the input heard around one play."""

    rate: int
    samples: NDArray[np.float32]
    play_index: int
    """Captured samples when play() was called: the signal cannot return before this."""
    play_at: float
    """time.monotonic() when play() was called."""
    blocks: list[tuple[int, float]]
    """(first sample index, capture timestamp) of each block, for timing."""
    gaps: int
    """Discontinuities (audio lost) after the first block."""

    def time_of(self, index: int) -> float:
        """Estimated capture time (time.monotonic()) of sample `index`."""
        first, stamp = self.blocks[0]
        for block_first, block_stamp in self.blocks:
            if block_first > index:
                break
            first, stamp = block_first, block_stamp
        return stamp + (index - first) / self.rate


@contextlib.asynccontextmanager
async def _open_path(path: AudioPath) -> AsyncIterator[tuple[AudioCapture, AudioPlayback]]:
    """Capture and playback streams on the path; both closed on every way out."""
    from gateway.audio import capture_for, playback_for

    capture = capture_for(path.capture, queue_seconds=10.0)
    playback = playback_for(path.output)
    try:
        for label, stream in (("input", capture), ("output", playback)):
            device_id = path.capture_id if stream is capture else path.output_id
            try:
                async with asyncio.timeout(AUDIO_OPEN_TIMEOUT_S):
                    await stream.open()
            except (DeviceError, TimeoutError) as exc:
                raise _AudioFailure(
                    f"cannot open audio {label} {device_id} ({stream.description}): "
                    f"{exc or 'timed out'}"
                ) from None
        yield capture, playback
    finally:
        # Each close hands its stream to a worker thread before its first await, so a
        # cancellation arriving during one close still lets the other start.
        try:
            await playback.close()
        finally:
            await capture.close()


async def _loop_through(
    capture: AudioCapture,
    playback: AudioPlayback,
    path: AudioPath,
    signal: NDArray[np.float32],
    *,
    listen: Callable[[NDArray[np.float32]], bool] | None,
    lead_s: float,
    tail_s: float,
) -> _Take:
    """Hear `lead_s` of input, play `signal` on the output, and keep hearing until `listen`
    (given each new input block) says done, or `tail_s` after the signal has played out."""
    rate = path.capture.samplerate
    chunks: list[NDArray[np.float32]] = []
    blocks: list[tuple[int, float]] = []
    frames = 0
    gaps = 0

    async def hear() -> NDArray[np.float32]:
        nonlocal frames, gaps
        block = await capture.read()
        column: NDArray[np.float32] = block.frames[:, path.column].copy()
        if block.discontinuity and blocks:
            gaps += 1
        blocks.append((frames, block.timestamp))
        chunks.append(column)
        frames += len(column)
        return column

    budget = lead_s + len(signal) / path.output.samplerate + tail_s + 10.0
    async with asyncio.timeout(budget):
        while frames < lead_s * rate:
            await hear()
        play_index, play_at = frames, time.monotonic()
        play = asyncio.create_task(playback.play(signal, column=path.output_column))
        try:
            played_at: float | None = None
            while True:
                column = await hear()
                done = listen(column) if listen is not None else False
                if play.done():
                    play.result()  # raises what play raised (device lost...)
                    if played_at is None:
                        played_at = time.monotonic()
                    if done or time.monotonic() - played_at >= tail_s:
                        break
        finally:
            if not play.done():
                play.cancel()
                await asyncio.wait([play], timeout=1.0)
    return _Take(
        rate=rate,
        samples=np.concatenate(chunks),
        play_index=play_index,
        play_at=play_at,
        blocks=blocks,
        gaps=gaps,
    )


async def _through_path(
    check: str,
    channel_id: str,
    path: AudioPath,
    signal: NDArray[np.float32],
    *,
    listen: Callable[[NDArray[np.float32]], bool] | None,
    lead_s: float,
    tail_s: float,
    data: dict[str, Any],
) -> _Take | CheckResult:
    """Run one play-and-listen on the path; a FAIL result when the path cannot be used."""
    try:
        async with _open_path(path) as (capture, playback):
            return await _loop_through(
                capture, playback, path, signal, listen=listen, lead_s=lead_s, tail_s=tail_s
            )
    except _AudioFailure as exc:
        return CheckResult(check, channel_id, "FAIL", str(exc), data)
    except DeviceError as exc:
        return CheckResult(check, channel_id, "FAIL", f"audio lost during the test: {exc}", data)
    except TimeoutError:
        return CheckResult(
            check, channel_id, "FAIL", "audio stalled during the test (no blocks)", data
        )
    except ValueError as exc:  # e.g. a column the output device does not have
        return CheckResult(check, channel_id, "FAIL", f"cannot play: {exc}", data)


class _ToneWatch:
    """Tells the loop when the tone has come back and gone again (so it can stop early)."""

    def __init__(self, rate: int) -> None:
        self._rate = rate
        self._peak = 0.0
        self._quiet = 0

    def __call__(self, block: NDArray[np.float32]) -> bool:
        # The tone's amplitude in this block: one DFT term at exactly TONE_HZ (Hann window),
        # whatever the block size and rate.
        n = len(block)
        if n < 16:
            return False
        window = np.hanning(n)
        phase = np.exp(-2j * math.pi * TONE_HZ * np.arange(n) / self._rate)
        level = 2.0 * abs(complex(np.sum(block * window * phase))) / float(window.sum())
        self._peak = max(self._peak, level)
        if self._peak < math.sqrt(2.0) * 10.0 ** ((TONE_DBFS - MAX_GAIN_DB - 6.0) / 20.0):
            return False  # nothing like the tone yet
        self._quiet = self._quiet + len(block) if level < self._peak / 4.0 else 0
        return self._quiet >= 0.2 * self._rate


def _audio_targets(ctx: DiagContext) -> list[tuple[str, AudioPath | None]]:
    """The wanted channels in config order, with their audio path (None: no audio)."""
    assert ctx.config is not None
    config = ctx.config
    return [(c, audio_path(config, s)) for c, s in config.channels.items() if ctx.wanted(c)]


def _no_audio(check: str, targets: list[tuple[str, AudioPath | None]]) -> list[CheckResult]:
    """One SKIP per channel without audio; a single one when no channel has any."""
    if not any(path for _, path in targets):
        return [CheckResult(check, "-", "SKIP", "no channel with audio configured")]
    return []


def _judge_tone(channel_id: str, m: ToneMeasurement, data: dict[str, Any]) -> CheckResult:
    def fail(detail: str) -> CheckResult:
        return CheckResult("tone", channel_id, "FAIL", detail, data)

    if m.before_dbfs > -70.0 and m.before_snr_db >= 10.0:
        return fail(
            f"a 1 kHz tone was already on the input before playing ({m.before_dbfs:.1f} dBFS): "
            "something else feeds it; run again when it is quiet"
        )
    if not m.found:
        return fail(
            f"{NO_LOOPBACK} (nothing came back at 1 kHz: {m.level_dbfs:.1f} dBFS, "
            f"input floor {m.floor_dbfs:.1f} dBFS)"
        )
    if m.length_s < MIN_TONE_S:
        return fail(
            f"the tone came back for only {m.length_s:g} s of {TONE_S:g} s: intermittent "
            "path (loose cable, VOX or squelch in the loop)"
        )
    gain = round(m.level_dbfs - TONE_DBFS, 1) + 0.0  # + 0.0: no "-0.0"
    if m.peak >= CLIP:
        return fail(
            f"the tone came back clipped ({gain:+.1f} dB): lower the input gain (alsamixer) "
            "or pad the loopback"
        )
    if m.snr_db < MIN_SNR_DB:
        return fail(
            f"the tone came back at {m.level_dbfs:.1f} dBFS with a SNR of only "
            f"{m.snr_db:.1f} dB (need {MIN_SNR_DB:g}): noise, hum or distortion on the path"
        )
    if abs(gain) > MAX_GAIN_DB:
        way = "loss" if gain < 0 else "gain"
        return fail(
            f"the tone came back at {m.level_dbfs:.1f} dBFS: {way} of {abs(gain):.1f} dB round "
            f"the loop (more than {MAX_GAIN_DB:g}): check the output and input levels "
            "(alsamixer) and the cable"
        )
    delay = data.get("round_trip_ms")
    timing = f", round trip {delay:g} ms" if delay is not None else ""
    return CheckResult(
        "tone",
        channel_id,
        "PASS",
        f"1 kHz at {TONE_DBFS:g} dBFS came back at {m.level_dbfs:.1f} dBFS "
        f"({gain:+.1f} dB), SNR {m.snr_db:.1f} dB{timing}",
        data,
    )


async def _tone_one(ctx: DiagContext, channel_id: str, path: AudioPath) -> CheckResult:
    data: dict[str, Any] = {"path": path.description, "played_dbfs": TONE_DBFS, "hz": TONE_HZ}
    ctx.progress(f"tone: {channel_id}: 1 kHz at {TONE_DBFS:g} dBFS, {path.description}")
    take = await _through_path(
        "tone",
        channel_id,
        path,
        _tone_signal(path.output.samplerate),
        listen=_ToneWatch(path.capture.samplerate),
        lead_s=LEAD_S,
        tail_s=TAIL_S,
        data=data,
    )
    if isinstance(take, CheckResult):
        return take
    m = measure_tone(take.samples, take.rate, start=take.play_index)
    data.update(
        level_dbfs=round(m.level_dbfs, 2),
        gain_db=round(m.level_dbfs - TONE_DBFS, 2) + 0.0,
        snr_db=round(m.snr_db, 1),
        rest_dbfs=round(m.rest_dbfs, 1),
        floor_dbfs=round(m.floor_dbfs, 1),
        tone_s=m.length_s,
        round_trip_ms=None
        if m.onset is None
        else round((take.time_of(m.onset) - take.play_at) * 1000.0),
        discontinuities=take.gaps,
    )
    return _judge_tone(channel_id, m, data)


async def check_tone(ctx: DiagContext) -> list[CheckResult]:
    targets = _audio_targets(ctx)
    results = _no_audio("tone", targets)
    for channel_id, path in targets if not results else []:
        if path is None:
            results.append(CheckResult("tone", channel_id, "SKIP", "no audio configured"))
        else:
            results.append(await _tone_one(ctx, channel_id, path))
    return results


class _TtyWatch:
    """Decodes the input as it comes; done once the whole message has been read."""

    def __init__(self, rate: int, *, unshift_on_space: bool) -> None:
        from gateway.dsp import TtyDecoder

        self.decoder = TtyDecoder(sample_rate=rate, unshift_on_space=unshift_on_space)
        self.chars: list[str] = []
        self.baud: float | None = None

    def take(self, events: Iterable[Any]) -> None:
        from gateway.dsp import TtyChar, TtyDetected

        for event in events:
            if isinstance(event, TtyChar):
                self.chars.append(event.char)
            elif isinstance(event, TtyDetected):
                self.baud = event.baud

    @property
    def text(self) -> str:
        return "".join(self.chars)

    def __call__(self, block: NDArray[np.float32]) -> bool:
        self.take(self.decoder.feed(block))
        return TTY_MESSAGE in self.text


async def _tty_one(
    ctx: DiagContext, channel_id: str, path: AudioPath, tty: ChannelTtySection
) -> CheckResult:
    from gateway.dsp import TtyEncoder
    from gateway.tty import reply_amplitude

    data: dict[str, Any] = {"path": path.description, "sent": TTY_MESSAGE, "baud": TTY_BAUD}
    level = tty.reply_level_dbfs
    data["played_dbfs"] = level
    # As the daemon plays replies: clipped to full scale (the encoder refuses more).
    encoder = TtyEncoder(
        sample_rate=path.output.samplerate, baud=TTY_BAUD, amplitude=reply_amplitude(level)
    )
    ctx.progress(f"tty: {channel_id}: {TTY_MESSAGE!r} at {TTY_BAUD:g} baud, {path.description}")
    watch = _TtyWatch(path.capture.samplerate, unshift_on_space=tty.unshift_on_space)
    take = await _through_path(
        "tty",
        channel_id,
        path,
        encoder.encode(TTY_MESSAGE),
        listen=watch,
        lead_s=LEAD_S,
        tail_s=TAIL_S,
        data=data,
    )
    if isinstance(take, CheckResult):
        return take
    if TTY_MESSAGE not in watch.text:
        watch.take(watch.decoder.flush())
    decoded = watch.text.strip()
    before, after = take.samples[: take.play_index], take.samples[take.play_index :]
    floor = _dbfs(float(np.mean(np.square(before, dtype=np.float64))))
    heard = _dbfs(float(np.mean(np.square(after, dtype=np.float64))))
    data.update(
        decoded=decoded,
        detected_baud=None if watch.baud is None else round(watch.baud, 2),
        floor_dbfs=round(floor, 1),
        level_dbfs=round(heard, 1),
        discontinuities=take.gaps,
    )
    if decoded == TTY_MESSAGE:
        return CheckResult(
            "tty",
            channel_id,
            "PASS",
            f"sent {TTY_MESSAGE!r} and decoded it back, at {heard:.1f} dBFS over a "
            f"{floor:.1f} dBFS floor",
            data,
        )
    if not decoded:
        if heard - floor < 6.0:
            reason = f"{NO_LOOPBACK} (input stayed at {heard:.1f} dBFS)"
        else:
            reason = (
                f"audio came back ({heard:.1f} dBFS over a {floor:.1f} dBFS floor) but no TTY "
                "was decoded: distortion, level or filtering on the path (run the tone check)"
            )
        return CheckResult("tty", channel_id, "FAIL", reason, data)
    return CheckResult(
        "tty",
        channel_id,
        "FAIL",
        f"decoded {decoded!r}, sent {TTY_MESSAGE!r}: errors on the path (level, noise, "
        "dropouts; run the tone check)",
        data,
    )


async def check_tty(ctx: DiagContext) -> list[CheckResult]:
    assert ctx.config is not None
    targets = _audio_targets(ctx)
    results = _no_audio("tty", targets)
    for channel_id, path in targets if not results else []:
        tty = ctx.config.channels[channel_id].tty
        if path is None:
            results.append(CheckResult("tty", channel_id, "SKIP", "no audio configured"))
        elif tty is None:
            results.append(CheckResult("tty", channel_id, "SKIP", "no TTY on this channel"))
        else:
            results.append(await _tty_one(ctx, channel_id, path, tty))
    return results


register_check(
    "daemon",
    "the daemon is not running on this hardware (its state_dir lock, then the broker)",
    check_daemon,
    touches_hardware=False,
)
register_check(
    "ptt",
    "each radio keyed for --key-seconds: PTT read-back and carrier",
    check_ptt,
    keys_transmitters=True,
)
register_check("modbus", "each configured Modbus IO module answers one poll", check_modbus)
register_check(
    "tone",
    "1 kHz tone played on each audio channel's output, measured on its input (needs a loopback)",
    check_tone,
)
register_check(
    "tty",
    "a TTY message played on each TTY channel's output, decoded on its input (needs a loopback)",
    check_tty,
)


# -- running --------------------------------------------------------------------------------


def _keying_targets(config: Config | None, only: frozenset[str] | None) -> list[str]:
    if config is None:
        return []
    return [
        c
        for c, section in config.channels.items()
        if section.radio is not None and (only is None or c in only)
    ]


async def run_diag(
    *,
    config: Config | None,
    config_path: str | None = None,
    checks: Iterable[str] | None = None,
    key_seconds: float = 2.0,
    only: Iterable[str] | None = None,
    confirm: Callable[[str], bool] | None = None,
    progress: Callable[[str], None] | None = None,
    broker: str | None = None,
    force: bool = False,
) -> DiagReport:
    """Inventory, then the selected checks (all by default). `confirm(question)` is asked
    once before anything keys a transmitter; without it, such checks are skipped. `broker`
    replaces the config's mqtt.url; `force` runs the hardware checks even when the `daemon`
    check refuses them (the technician's word that the daemon is stopped)."""
    if not 0 < key_seconds <= 30:
        raise ValueError(f"key_seconds must be in (0, 30], not {key_seconds!r}")
    names = list(CHECKS) if checks is None else list(checks)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise ValueError(f"unknown check(s) {', '.join(unknown)}; known: {', '.join(CHECKS)}")
    selected = [CHECKS[n] for n in CHECKS if n in names]  # registration order
    if any(c.touches_hardware for c in selected) and "daemon" not in names:
        selected.insert(0, CHECKS["daemon"])  # the guard always runs before the hardware
    say = progress or (lambda _: None)
    only_set = frozenset(only) if only is not None else None
    inventory = await take_inventory(config)
    ctx = DiagContext(
        config=config,
        key_seconds=key_seconds,
        only=only_set,
        inventory=inventory,
        keying_confirmed=False,
        progress=say,
        broker=broker,
        force=force,
    )
    try:
        results = await _run_checks(ctx, selected, confirm)
    finally:
        if ctx.lock is not None:
            ctx.lock.release()
    return DiagReport(
        inventory=inventory,
        results=results,
        config_path=config_path,
        gateway=config.gateway.id if config else None,
    )


async def _run_checks(
    ctx: DiagContext, selected: list[Check], confirm: Callable[[str], bool] | None
) -> list[CheckResult]:
    config = ctx.config
    results: list[CheckResult] = []
    asked = False
    for check in selected:
        if check.touches_hardware:
            reason = None
            if config is None:
                reason = "no config (-c): nothing to check against"
            elif ctx.refusal is not None and not ctx.force:
                reason = ctx.refusal
            elif check.keys_transmitters and not asked:
                asked = True
                targets = _keying_targets(config, ctx.only)
                question = (
                    f"Key {len(targets)} transmitter(s) ({', '.join(targets)}) for "
                    f"{ctx.key_seconds:g} s each?"
                )
                ctx.keying_confirmed = bool(targets) and confirm is not None and confirm(question)
            if reason is None and check.keys_transmitters and not ctx.keying_confirmed:
                reason = "keying not confirmed (answer y, or pass --yes)"
            if reason is not None:
                results.append(CheckResult(check.name, "-", "SKIP", reason))
                continue
        results.extend(await check.run(ctx))
    return results


# -- output ---------------------------------------------------------------------------------


def _table(title: str, columns: Iterable[str]) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _print_table(console: Any, table: Any) -> None:
    if table.row_count == 0:
        table.add_row("(none found)", *[""] * (len(table.columns) - 1), style="dim")
    console.print(table)


def render(report: DiagReport, console: Any) -> None:
    """The report as rich tables (inventory first, then the checks and the verdict)."""

    inv = report.inventory
    table = _table("Serial ports", ("device", "stable names", "description", "USB", "channels"))
    for port in inv.serial_ports:
        names = "\n".join(port["by_id"] + port["by_path"]) or "-"
        style = "" if port["present"] else "bold red"
        table.add_row(
            port["device"],
            names,
            port["description"] or "-",
            port["usb"] or "-",
            ", ".join(port["channels"]) or "-",
            style=style,
        )
    _print_table(console, table)

    table = _table(
        "USB radio interfaces (CM108 family)",
        ("USB id", "model", "port path", "serial", "HID", "channels", "via"),
    )
    for dev in inv.usb_interfaces:
        table.add_row(
            dev["usb"],
            dev["model"],
            dev["port_path"] or "?",
            dev["serial_number"] or "?",
            "yes" if dev["hid_interface"] else "NO",
            ", ".join(dev["channels"]) or "-",
            dev["backend"],
        )
    _print_table(console, table)

    table = _table("Audio devices (PortAudio)", ("name", "host API", "in", "out", "rate"))
    for audio in inv.audio_devices:
        table.add_row(
            audio["name"],
            audio["hostapi"],
            str(audio["max_input_channels"]),
            str(audio["max_output_channels"]),
            f"{audio['default_samplerate']:g}",
        )
    _print_table(console, table)

    if inv.modbus_modules:
        table = _table(
            "Modbus IO modules (configured)", ("module", "link", "device id", "model", "alarms")
        )
        for module in inv.modbus_modules:
            table.add_row(
                module["module"],
                f"{module['link']} ({module['where']})",
                str(module["device_id"]),
                module["model"],
                ", ".join(module["alarms"]) or "-",
            )
        _print_table(console, table)
    for note in inv.notes:
        console.print(f"[yellow]note:[/] {note}")

    table = _table("Checks", ("check", "target", "result", "detail"))
    styles = {"PASS": "bold green", "FAIL": "bold white on red", "SKIP": "yellow"}
    for result in report.results:
        table.add_row(
            result.check,
            result.target,
            f"[{styles[result.status]}]{result.status}[/]",
            result.detail,
        )
    _print_table(console, table)
    if report.count("PASS") + report.count("FAIL") == 0:
        console.print("RESULT: nothing checked (inventory only; give -c CONFIG for the checks)")
        return
    verdict = "[bold white on red] FAIL [/]" if report.failed else "[bold green]PASS[/]"
    console.print(
        f"RESULT {verdict}: {report.count('PASS')} passed, {report.count('FAIL')} failed, "
        f"{report.count('SKIP')} skipped"
    )


async def _stoppable(work: Awaitable[DiagReport]) -> DiagReport:
    """SIGTERM and SIGHUP (an SSH session dropped) cancel the checks like Ctrl-C does, so
    their cleanup unkeys: a CM108 GPIO would otherwise stay keyed after the process dies."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    signals = (signal.SIGTERM, signal.SIGHUP)
    for sig in signals:
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await work
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def _split(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [item.strip() for item in value.split(",") if item.strip()]


def _ask(question: str) -> bool:
    if not sys.stdin.isatty():
        return False
    print(f"{question} This TRANSMITS on the air. [y/N] ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    if args.list_checks:
        for check in CHECKS.values():
            flags = " (keys transmitters)" if check.keys_transmitters else ""
            print(f"{check.name:<10} {check.description}{flags}")
        return 0
    checks = _split(args.checks)
    if checks is not None:
        unknown = [n for n in checks if n not in CHECKS]
        if unknown or not checks:
            args.parser.error(
                f"--checks: unknown check(s) {', '.join(unknown) or '(none given)'}; "
                f"known: {', '.join(CHECKS)}"
            )
    config = None
    if args.config is not None:
        from gateway.config import load_config
        from gateway.tools.mqtt_view import BrokerTarget

        config = load_config(args.config)
        BrokerTarget.from_config(config, broker=args.broker)  # a bad --broker: exit 2 now
    elif args.broker is not None:
        args.parser.error("--broker needs -c CONFIG (the checks run against a config)")
    errors = Console(file=sys.stderr)
    if config is not None and not args.json:
        errors.print(
            "[bold yellow]diag drives the hardware directly: the daemon must not be running "
            "on it (systemctl stop consolegw).[/]"
        )
    diag = run_diag(
        config=config,
        config_path=args.config,
        checks=checks,
        key_seconds=args.key_seconds,
        only=_split(args.only),
        confirm=(lambda _: True) if args.yes else _ask,
        progress=lambda text: errors.print(f"[dim]{text} ...[/]"),
        broker=args.broker,
        force=args.force,
    )
    try:
        report = asyncio.run(_stoppable(diag))
    except asyncio.CancelledError:
        raise ToolError("stopped by a signal; every radio was unkeyed and closed") from None
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        render(report, Console(file=sys.stdout))
    return 1 if report.failed else 0
