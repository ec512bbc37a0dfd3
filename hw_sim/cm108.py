"""A CM108/CM119 USB radio interface simulated at the USB control-transfer level.

`SimCM108` is the chip plus the radio wired to it: descriptors (audio interfaces 0-2, HID
interface 3 with interrupt IN endpoint 0x83), the HID output report that drives the GPIOs,
the HID input report that carries the buttons and GPIO inputs. The radio's PTT input is one
GPIO; its carrier output (COS) pulls a button pin (VOLDN by default) or a GPIO input.

`CM108SimBackend` is a pyusb backend (`usb.backend.IBackend`) over a set of simulated chips,
so the shipped driver runs unchanged through `usb.core.find(backend=...)`. The daemon runs in
another process than the simulator: `CM108SimServer` serves a backend over loopback TCP and
`RemoteBackend` (daemon side, selected by `usb_backend = "sim://127.0.0.1:PORT"`) forwards
every backend call to it.

Errors mirror pyusb's libusb1 backend (USBError with the same errno values): ENODEV once
unplugged, EBUSY when a kernel driver holds the interface, EPIPE (stall) for requests the
chip does not support, USBTimeoutError when no interrupt report arrives in time.
"""

from __future__ import annotations

import array
import contextlib
import errno
import itertools
import logging
import re
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import usb.backend
import usb.core

from drivers.usb_loopback import (
    config_lookup,
    descriptor_namespace,
    encode_error,
    recv_frame,
    send_frame,
)

__all__ = [
    "CM108SimBackend",
    "CM108SimServer",
    "HidRequest",
    "PttChange",
    "SimCM108",
]

_log = logging.getLogger(__name__)

HID_INTERFACE = 3
HID_EP_IN = 0x83
_HID_BINTERVAL_MS = 32  # CM108 HID endpoint polling interval (lsusb of real parts)

# Setup packets the chip answers (C-Media datasheets: HID Set_Output/Get_Input_Report).
_SET_REPORT = (0x21, 0x09)
_GET_REPORT = (0xA1, 0x01)
_SET_IDLE = (0x21, 0x0A)
_GET_DESCRIPTOR = (0x80, 0x06)
_GET_CONFIGURATION = (0x80, 0x08)

_LIBUSB_ERROR_NO_DEVICE = -4
_LIBUSB_ERROR_NOT_FOUND = -5
_LIBUSB_ERROR_BUSY = -6
_LIBUSB_ERROR_TIMEOUT = -7
_LIBUSB_ERROR_PIPE = -9

_PORT_PATH = re.compile(r"^(\d+)-(\d+(?:\.\d+)*)$")
_VALID_COS_BITS = frozenset({0, 1, 4, *range(8, 16)})
_addresses = itertools.count(2)


def _no_device() -> usb.core.USBError:
    return usb.core.USBError(
        "No such device (it may have been disconnected)", _LIBUSB_ERROR_NO_DEVICE, errno.ENODEV
    )


def _busy() -> usb.core.USBError:
    return usb.core.USBError("Resource busy", _LIBUSB_ERROR_BUSY, errno.EBUSY)


def _stall() -> usb.core.USBError:
    return usb.core.USBError("Pipe error", _LIBUSB_ERROR_PIPE, errno.EPIPE)


def _not_found() -> usb.core.USBError:
    return usb.core.USBError("Entity not found", _LIBUSB_ERROR_NOT_FOUND, errno.ENOENT)


def _timeout() -> usb.core.USBTimeoutError:
    return usb.core.USBTimeoutError("Operation timed out", _LIBUSB_ERROR_TIMEOUT, errno.ETIMEDOUT)


@dataclass(frozen=True, slots=True)
class PttChange:
    """The PTT line (the GPIO as it reaches the radio) changed."""

    t: float
    """time.monotonic() of the change (CLOCK_MONOTONIC: comparable across processes)."""
    keyed: bool


@dataclass(frozen=True, slots=True)
class HidRequest:
    """A HID class request the chip answered, in arrival order."""

    t: float
    kind: str
    """"set_report", "get_report" or "set_idle"."""
    data: bytes


def _string_descriptor(text: str) -> bytes:
    body = text.encode("utf-16-le")
    return bytes((2 + len(body), 3)) + body


class SimCM108:
    """One simulated CM108-family chip and the radio wired to it. Thread-safe.

    The wiring arguments say how the simulated radio is connected, in the driver's terms:
    `ptt_gpio`/`ptt_invert` (which GPIO keys the radio, active high unless inverted),
    `cos_bit`/`cos_invert` (input-report bit the carrier drives: 0 VOLUP, 1 VOLDN, 4 HOOK,
    8+n-1 GPIOn; bit set = carrier unless inverted), `ptt_sense_gpio`/`ptt_sense_invert`
    (optional GPIO input that follows the radio's transmit state). `kernel_driver`: usbhid
    is bound to interface 3 at plug-in (it then consumes every interrupt report, so a driver
    must detach it and read the current state with GET_REPORT).

    Faults: unplug()/replug(), stick_cos(), flap_cos(hz), set_ptt_no_follow(),
    refuse_get_report() (GET_REPORT stalls: the current inputs are not readable). Observation:
    ptt_log() (PTT line changes with CLOCK_MONOTONIC stamps), wait_ptt(), hid_requests().
    """

    def __init__(
        self,
        *,
        product_id: int = 0x013C,
        vendor_id: int = 0x0D8C,
        serial_number: str | None = None,
        port_path: str = "1-1",
        manufacturer: str = "C-Media Electronics Inc.",
        product: str = "USB PnP Sound Device",
        ptt_gpio: int = 3,
        ptt_invert: bool = False,
        cos_bit: int = 1,
        cos_invert: bool = False,
        ptt_sense_gpio: int | None = None,
        ptt_sense_invert: bool = False,
        kernel_driver: bool = True,
    ) -> None:
        for name, value in (("product_id", product_id), ("vendor_id", vendor_id)):
            if not 0 <= value <= 0xFFFF:
                raise ValueError(f"{name} must be a 16-bit id, not {value!r}")
        match = _PORT_PATH.match(port_path)
        if match is None:
            raise ValueError(f"port_path must look like 1-1.4, not {port_path!r}")
        if not 1 <= ptt_gpio <= 8:
            raise ValueError(f"ptt_gpio must be 1..8, not {ptt_gpio!r}")
        if cos_bit not in _VALID_COS_BITS:
            raise ValueError(f"cos_bit must be one of {sorted(_VALID_COS_BITS)}, not {cos_bit!r}")
        if ptt_sense_gpio is not None and not 1 <= ptt_sense_gpio <= 8:
            raise ValueError(f"ptt_sense_gpio must be 1..8, not {ptt_sense_gpio!r}")
        if serial_number == "":
            raise ValueError("serial_number must be None or non-empty")
        self.vendor_id = vendor_id
        self.product_id = product_id
        self.serial_number = serial_number
        self.port_path = port_path
        self.bus = int(match.group(1))
        self.port_numbers = tuple(int(p) for p in match.group(2).split("."))
        self.manufacturer = manufacturer
        self.product = product
        self.ptt_gpio = ptt_gpio
        self.ptt_invert = ptt_invert
        self.cos_bit = cos_bit
        self.cos_invert = cos_invert
        self.ptt_sense_gpio = ptt_sense_gpio
        self.ptt_sense_invert = ptt_sense_invert
        self._kernel_driver_default = kernel_driver

        self._cond = threading.Condition(threading.RLock())
        self._plugged = True
        self._generation = 0
        self.address = next(_addresses) % 127 + 1
        # Chip state (reset at power-up).
        self._gpio_out = 0
        self._gpio_dir = 0
        self._claims: dict[int, int] = {}  # interface -> handle id
        self._kernel_bound: set[int] = {0, 1, 2, 3} if kernel_driver else {0, 1, 2}
        self._pending: bytes | None = None
        # Radio and faults.
        self._cos = False
        self._cos_stuck: bool | None = None
        self._radio_keyed = False
        self._no_follow = False
        self._refuse_get_report = False
        self._line_keyed = False
        self._flap_stop: threading.Event | None = None
        self._flap_thread: threading.Thread | None = None
        # Logs.
        self._ptt_log: list[PttChange] = []
        self._hid_log: list[HidRequest] = []
        self.detach_count = 0
        self.attach_count = 0
        self._last_report = self._input_report()

    # ----------------------------------------------------------------- radio side
    def set_cos(self, present: bool) -> None:
        """The radio's carrier detect output."""
        with self._cond:
            self._cos = bool(present)
            self._update_inputs()

    @property
    def cos(self) -> bool:
        """Carrier as the radio presents it on the wire (after stuck faults)."""
        with self._cond:
            return self._cos if self._cos_stuck is None else self._cos_stuck

    def stick_cos(self, value: bool | None) -> None:
        """Fault: COS stuck at `value` whatever the radio does; None clears the fault."""
        with self._cond:
            self._cos_stuck = value
            self._update_inputs()

    def flap_cos(self, hz: float | None) -> None:
        """Fault: the carrier toggles `hz` full on/off cycles a second; None stops it."""
        if hz is not None and not 0 < hz <= 500:
            raise ValueError(f"hz must be in (0, 500], not {hz!r}")
        with self._cond:
            stop, thread = self._flap_stop, self._flap_thread
            self._flap_stop = self._flap_thread = None
        if stop is not None and thread is not None:
            stop.set()
            thread.join()
        if hz is None:
            return
        stop = threading.Event()
        half = 1.0 / (2.0 * hz)

        def flap() -> None:
            deadline = time.monotonic()
            while True:
                deadline += half
                if stop.wait(max(0.0, deadline - time.monotonic())):
                    return
                with self._cond:
                    self._cos = not self._cos
                    self._update_inputs()

        thread = threading.Thread(target=flap, name="sim-cm108-flap", daemon=True)
        with self._cond:
            self._flap_stop, self._flap_thread = stop, thread
        thread.start()

    def refuse_get_report(self, refused: bool) -> None:
        """Fault: GET_REPORT stalls (as on chips or firmware that do not support it), so only
        an input change, sent on the interrupt endpoint, tells the host the inputs."""
        with self._cond:
            self._refuse_get_report = bool(refused)

    def set_ptt_no_follow(self, enabled: bool) -> None:
        """Fault: the radio ignores its PTT line (keeps transmitting or stays silent)."""
        with self._cond:
            self._no_follow = bool(enabled)
            self._update_radio()

    @property
    def ptt_keyed(self) -> bool:
        """The PTT line as it reaches the radio: GPIO driven to its active level."""
        with self._cond:
            return self._line_keyed

    @property
    def radio_keyed(self) -> bool:
        """Whether the radio transmits (differs from ptt_keyed under ptt_no_follow)."""
        with self._cond:
            return self._radio_keyed

    @property
    def gpio_output(self) -> int:
        """HID_OR1 latch: GPIO output levels, bit n-1 = GPIOn."""
        with self._cond:
            return self._gpio_out

    @property
    def gpio_direction(self) -> int:
        """HID_OR2 latch: 1 = output, bit n-1 = GPIOn."""
        with self._cond:
            return self._gpio_dir

    def ptt_log(self) -> list[PttChange]:
        with self._cond:
            return list(self._ptt_log)

    def clear_ptt_log(self) -> None:
        with self._cond:
            self._ptt_log.clear()

    def wait_ptt(self, keyed: bool, timeout: float) -> bool:
        """Wait until the PTT line is `keyed`; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._line_keyed == keyed, timeout)

    def wait_ptt_changes(self, count: int, timeout: float) -> list[PttChange]:
        """Wait until the PTT log holds `count` changes; returns the log (maybe shorter)."""
        with self._cond:
            self._cond.wait_for(lambda: len(self._ptt_log) >= count, timeout)
            return list(self._ptt_log)

    def hid_requests(self) -> list[HidRequest]:
        with self._cond:
            return list(self._hid_log)

    def kernel_driver_attached(self, interface: int = HID_INTERFACE) -> bool:
        with self._cond:
            return interface in self._kernel_bound

    def claimed(self, interface: int = HID_INTERFACE) -> bool:
        with self._cond:
            return interface in self._claims

    # ------------------------------------------------------------------ cabling
    @property
    def plugged(self) -> bool:
        with self._cond:
            return self._plugged

    def unplug(self) -> None:
        """Pull the cable: enumeration drops it, open handles fail with ENODEV."""
        with self._cond:
            if not self._plugged:
                return
            self._plugged = False
            self._generation += 1
            self._claims.clear()
            self._pending = None
            self._gpio_out = self._gpio_dir = 0  # unpowered: outputs float, PTT drops
            self._update_line()
            self._cond.notify_all()

    def replug(self) -> None:
        """Plug it back: a new device address, chip state at power-up, kernel driver bound."""
        with self._cond:
            if self._plugged:
                return
            self._plugged = True
            self._generation += 1
            self.address = next(_addresses) % 127 + 1
            self._kernel_bound = {0, 1, 2, 3} if self._kernel_driver_default else {0, 1, 2}
            self._pending = None
            self._last_report = self._input_report()
            self._update_line()
            self._cond.notify_all()

    def close(self) -> None:
        """Stop background fault threads."""
        self.flap_cos(None)

    # ------------------------------------------------------------- chip internals
    def _check(self, generation: int) -> None:
        if not self._plugged or generation != self._generation:
            raise _no_device()

    def _input_report(self) -> bytes:
        cos = self._cos if self._cos_stuck is None else self._cos_stuck
        ir0 = 0
        gpi = 0
        cos_level = cos != self.cos_invert
        if cos_level:
            if self.cos_bit < 8:
                ir0 |= 1 << self.cos_bit
            else:
                gpi |= 1 << (self.cos_bit - 8)
        if self.ptt_sense_gpio is not None and self._radio_keyed != self.ptt_sense_invert:
            gpi |= 1 << (self.ptt_sense_gpio - 1)
        # IR1 is specified for pins in input mode only; output pins read 0 here.
        gpi &= ~self._gpio_dir & 0xFF
        return bytes((ir0, gpi, 0, 0))

    def _update_inputs(self) -> None:
        report = self._input_report()
        if report != self._last_report:
            self._last_report = report
            # While usbhid is bound it polls the endpoint: the kernel consumes the report.
            if self._plugged and HID_INTERFACE not in self._kernel_bound:
                self._pending = report
                self._cond.notify_all()

    def _update_line(self) -> None:
        mask = 1 << (self.ptt_gpio - 1)
        driven = bool(self._gpio_dir & mask)
        level = bool(self._gpio_out & mask)
        keyed = driven and level != self.ptt_invert
        if keyed != self._line_keyed:
            self._line_keyed = keyed
            self._ptt_log.append(PttChange(time.monotonic(), keyed))
            self._cond.notify_all()
        self._update_radio()

    def _update_radio(self) -> None:
        if not self._no_follow:
            self._radio_keyed = self._line_keyed
        self._update_inputs()

    def _open(self) -> int:
        with self._cond:
            if not self._plugged:
                raise _no_device()
            return self._generation

    def _claim(self, generation: int, handle_id: int, interface: int) -> None:
        with self._cond:
            self._check(generation)
            if not 0 <= interface <= 3:
                raise _not_found()
            if interface in self._kernel_bound:
                raise _busy()
            owner = self._claims.get(interface)
            if owner is not None and owner != handle_id:
                raise _busy()
            self._claims[interface] = handle_id

    def _release(self, generation: int, handle_id: int, interface: int) -> None:
        with self._cond:
            self._check(generation)
            if self._claims.get(interface) != handle_id:
                raise _not_found()
            del self._claims[interface]

    def _release_all(self, handle_id: int) -> None:
        with self._cond:
            for interface in [i for i, h in self._claims.items() if h == handle_id]:
                del self._claims[interface]

    def _kernel_driver(self, generation: int, interface: int, op: str) -> bool:
        with self._cond:
            self._check(generation)
            if not 0 <= interface <= 3:
                raise _not_found()
            if op == "query":
                return interface in self._kernel_bound
            if op == "detach":
                if interface not in self._kernel_bound:
                    raise _not_found()
                self._kernel_bound.discard(interface)
                self.detach_count += 1
                if interface == HID_INTERFACE:
                    self._pending = None  # usbhid read every report until now
                return False
            if interface in self._kernel_bound or interface in self._claims:
                raise _busy()
            self._kernel_bound.add(interface)
            self.attach_count += 1
            return True

    def _auto_claim(self, handle_id: int, interface: int) -> None:
        # usbfs claims an interface implicitly for a transfer when nobody holds it.
        if self._claims.get(interface) == handle_id:
            return
        if interface in self._kernel_bound or interface in self._claims:
            raise _busy()
        self._claims[interface] = handle_id

    def _ctrl(
        self,
        generation: int,
        handle_id: int,
        setup: tuple[int, int, int, int],
        data: bytes,
        length: int,
    ) -> bytes | int:
        """Answer one control transfer: bytes read (IN) or the count written (OUT)."""
        request_type, request, value, index = setup
        with self._cond:
            self._check(generation)
            now = time.monotonic()
            if (request_type, request) == _SET_REPORT and index == HID_INTERFACE:
                self._auto_claim(handle_id, HID_INTERFACE)
                if value != 0x0200 or len(data) != 4:
                    raise _stall()
                self._hid_log.append(HidRequest(now, "set_report", bytes(data)))
                if data[0] & 0xC0 == 0:  # HID_OR0[7:6] == 00: OR1/OR2 drive the GPIOs
                    self._gpio_out = data[1]
                    self._gpio_dir = data[2]
                    self._update_line()
                return len(data)
            if (request_type, request) == _GET_REPORT and index == HID_INTERFACE:
                self._auto_claim(handle_id, HID_INTERFACE)
                if value != 0x0100 or length < 1 or self._refuse_get_report:
                    raise _stall()
                report = self._input_report()
                self._hid_log.append(HidRequest(now, "get_report", report))
                return report[:length]
            if (request_type, request) == _SET_IDLE and index == HID_INTERFACE:
                self._auto_claim(handle_id, HID_INTERFACE)
                self._hid_log.append(HidRequest(now, "set_idle", b""))
                return 0
            if (request_type, request) == _GET_CONFIGURATION:
                return b"\x01"[:length]
            if (request_type, request) == _GET_DESCRIPTOR:
                return self._descriptor_bytes(value >> 8, value & 0xFF)[:length]
            raise _stall()

    def _descriptor_bytes(self, kind: int, index: int) -> bytes:
        if kind == 1:
            d = self.device_descriptor()
            return struct.pack(
                "<BBHBBBBHHHBBBB",
                18,
                1,
                d.bcdUSB,
                0,
                0,
                0,
                d.bMaxPacketSize0,
                d.idVendor,
                d.idProduct,
                d.bcdDevice,
                d.iManufacturer,
                d.iProduct,
                d.iSerialNumber,
                1,
            )
        if kind == 3:
            if index == 0:
                return bytes((4, 3, 0x09, 0x04))  # LANGID en-US
            strings = {1: self.manufacturer, 2: self.product, 3: self.serial_number}
            text = strings.get(index)
            if text is not None:
                return _string_descriptor(text)
        raise _stall()

    def _intr_read(
        self, generation: int, handle_id: int, endpoint: int, size: int, timeout_ms: int
    ) -> bytes:
        with self._cond:
            self._check(generation)
            if endpoint != HID_EP_IN:
                raise _stall()
            self._auto_claim(handle_id, HID_INTERFACE)
            wait = None if timeout_ms == 0 else timeout_ms / 1000.0  # libusb: 0 = forever
            self._cond.wait_for(
                lambda: (
                    self._pending is not None or not self._plugged or generation != self._generation
                ),
                wait,
            )
            self._check(generation)
            report = self._pending
            if report is None:
                raise _timeout()
            self._pending = None
            return report[:size]

    # ---------------------------------------------------------------- descriptors
    def device_descriptor(self) -> SimpleNamespace:
        with self._cond:
            return SimpleNamespace(
                bLength=18,
                bDescriptorType=1,
                bcdUSB=0x0110,
                bDeviceClass=0,
                bDeviceSubClass=0,
                bDeviceProtocol=0,
                bMaxPacketSize0=8,
                idVendor=self.vendor_id,
                idProduct=self.product_id,
                bcdDevice=0x0100,
                iManufacturer=1,
                iProduct=2,
                iSerialNumber=3 if self.serial_number is not None else 0,
                bNumConfigurations=1,
                address=self.address,
                bus=self.bus,
                port_number=self.port_numbers[-1],
                port_numbers=self.port_numbers,
                speed=2,  # LIBUSB_SPEED_FULL
            )

    @staticmethod
    def configuration_tree() -> dict[str, Any]:
        """Configuration 1 of a CM108AH in headset mode, as plain data."""

        def ep(address: int, attributes: int, size: int, interval: int) -> dict[str, Any]:
            return {
                "bLength": 7,
                "bDescriptorType": 5,
                "bEndpointAddress": address,
                "bmAttributes": attributes,
                "wMaxPacketSize": size,
                "bInterval": interval,
                "bRefresh": 0,
                "bSynchAddress": 0,
                "extra_descriptors": [],
            }

        def alt(  # noqa: PLR0917 - a table row
            number: int,
            setting: int,
            cls: int,
            subclass: int,
            endpoints: list[dict[str, Any]],
            extra: list[int] | None = None,
        ) -> dict[str, Any]:
            return {
                "bLength": 9,
                "bDescriptorType": 4,
                "bInterfaceNumber": number,
                "bAlternateSetting": setting,
                "bNumEndpoints": len(endpoints),
                "bInterfaceClass": cls,
                "bInterfaceSubClass": subclass,
                "bInterfaceProtocol": 0,
                "iInterface": 0,
                "extra_descriptors": extra or [],
                "endpoints": endpoints,
            }

        hid_descriptor = [9, 0x21, 0x00, 0x01, 0x00, 0x01, 0x22, 0x3C, 0x00]
        interfaces = [
            [alt(0, 0, 1, 1, [])],
            [alt(1, 0, 1, 2, []), alt(1, 1, 1, 2, [ep(0x01, 0x09, 200, 1)])],
            [alt(2, 0, 1, 2, []), alt(2, 1, 1, 2, [ep(0x82, 0x05, 100, 1)])],
            [alt(3, 0, 3, 0, [ep(HID_EP_IN, 0x03, 4, _HID_BINTERVAL_MS)], hid_descriptor)],
        ]
        return {
            "bLength": 9,
            "bDescriptorType": 2,
            "wTotalLength": 253,
            "bNumInterfaces": len(interfaces),
            "bConfigurationValue": 1,
            "iConfiguration": 0,
            "bmAttributes": 0x80,
            "bMaxPower": 50,
            "extra_descriptors": [],
            "interfaces": interfaces,
        }


# ------------------------------------------------------------------- pyusb backend
@dataclass(frozen=True, slots=True)
class _DevRef:
    device: SimCM108
    generation: int


class _Handle:
    _ids = itertools.count(1)

    def __init__(self, ref: _DevRef) -> None:
        self.ref = ref
        self.id = next(self._ids)
        self.closed = False


class CM108SimBackend(usb.backend.IBackend):  # type: ignore[misc]
    """A pyusb backend whose bus holds simulated CM108 chips. Thread-safe."""

    def __init__(self, devices: Iterable[SimCM108] = ()) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._devices: list[SimCM108] = list(devices)

    def add(self, device: SimCM108) -> None:
        with self._lock:
            self._devices.append(device)

    @property
    def devices(self) -> list[SimCM108]:
        with self._lock:
            return list(self._devices)

    # IBackend --------------------------------------------------------------
    def enumerate_devices(self) -> Iterator[_DevRef]:
        refs = []
        for device in self.devices:
            with device._cond:
                if device._plugged:
                    refs.append(_DevRef(device, device._generation))
        return iter(refs)

    def get_parent(self, dev: _DevRef) -> None:
        return None

    def get_device_descriptor(self, dev: _DevRef) -> SimpleNamespace:
        return dev.device.device_descriptor()

    def get_configuration_descriptor(self, dev: _DevRef, config: int) -> SimpleNamespace:
        return descriptor_namespace(config_lookup(SimCM108.configuration_tree(), config))

    def get_interface_descriptor(
        self, dev: _DevRef, intf: int, alt: int, config: int
    ) -> SimpleNamespace:
        return descriptor_namespace(config_lookup(SimCM108.configuration_tree(), config, intf, alt))

    def get_endpoint_descriptor(
        self, dev: _DevRef, ep: int, intf: int, alt: int, config: int
    ) -> SimpleNamespace:
        endpoints = config_lookup(SimCM108.configuration_tree(), config, intf, alt)["endpoints"]
        if not 0 <= ep < len(endpoints):
            raise IndexError(f"Invalid endpoint index {ep}")
        return descriptor_namespace(endpoints[ep])

    def open_device(self, dev: _DevRef) -> _Handle:
        with dev.device._cond:
            if dev.device._open() != dev.generation:
                raise _no_device()
        return _Handle(dev)

    def close_device(self, dev_handle: _Handle) -> None:
        if not dev_handle.closed:
            dev_handle.closed = True
            dev_handle.ref.device._release_all(dev_handle.id)

    def set_configuration(self, dev_handle: _Handle, config_value: int) -> None:
        # A real chip would drop every interface (and the audio with them): refuse loudly.
        ref = self._live(dev_handle)
        with ref.device._cond:
            ref.device._check(ref.generation)
            if ref.device._kernel_bound or ref.device._claims:
                raise _busy()

    def get_configuration(self, dev_handle: _Handle) -> int:
        ref = self._live(dev_handle)
        with ref.device._cond:
            ref.device._check(ref.generation)
        return 1

    def set_interface_altsetting(self, dev_handle: _Handle, intf: int, altsetting: int) -> None:
        ref = self._live(dev_handle)
        with ref.device._cond:
            ref.device._check(ref.generation)
            if ref.device._claims.get(intf) != dev_handle.id:
                raise _not_found()

    def claim_interface(self, dev_handle: _Handle, intf: int) -> None:
        ref = self._live(dev_handle)
        ref.device._claim(ref.generation, dev_handle.id, intf)

    def release_interface(self, dev_handle: _Handle, intf: int) -> None:
        ref = self._live(dev_handle)
        ref.device._release(ref.generation, dev_handle.id, intf)

    def ctrl_transfer(  # noqa: PLR0917 - pyusb's IBackend signature
        self,
        dev_handle: _Handle,
        bmRequestType: int,  # noqa: N803 - pyusb's parameter names
        bRequest: int,  # noqa: N803
        wValue: int,  # noqa: N803
        wIndex: int,  # noqa: N803
        data: array.array[int],
        timeout: int,
    ) -> int:
        ref = self._live(dev_handle)
        setup = (bmRequestType, bRequest, wValue, wIndex)
        if bmRequestType & 0x80:
            answer = ref.device._ctrl(ref.generation, dev_handle.id, setup, b"", len(data))
            assert isinstance(answer, bytes)
            data[: len(answer)] = array.array("B", answer)
            return len(answer)
        written = ref.device._ctrl(ref.generation, dev_handle.id, setup, data.tobytes(), 0)
        assert isinstance(written, int)
        return written

    def intr_read(
        self, dev_handle: _Handle, ep: int, intf: int, buff: array.array[int], timeout: int
    ) -> int:
        ref = self._live(dev_handle)
        report = ref.device._intr_read(ref.generation, dev_handle.id, ep, len(buff), timeout)
        buff[: len(report)] = array.array("B", report)
        return len(report)

    def clear_halt(self, dev_handle: _Handle, ep: int) -> None:
        ref = self._live(dev_handle)
        with ref.device._cond:
            ref.device._check(ref.generation)

    def is_kernel_driver_active(self, dev_handle: _Handle, intf: int) -> bool:
        ref = self._live(dev_handle)
        return ref.device._kernel_driver(ref.generation, intf, "query")

    def detach_kernel_driver(self, dev_handle: _Handle, intf: int) -> None:
        ref = self._live(dev_handle)
        ref.device._kernel_driver(ref.generation, intf, "detach")

    def attach_kernel_driver(self, dev_handle: _Handle, intf: int) -> None:
        ref = self._live(dev_handle)
        ref.device._kernel_driver(ref.generation, intf, "attach")

    @staticmethod
    def _live(dev_handle: _Handle) -> _DevRef:
        if dev_handle.closed:
            raise _no_device()
        return dev_handle.ref


class _Session:
    def __init__(self) -> None:
        self.connections = 0
        self.handles: set[int] = set()


class CM108SimServer:
    """Serves simulated CM108 chips to `RemoteBackend` clients over loopback TCP.

    Handles belong to the client's session: when every connection of a session closes (the
    daemon exited or crashed), its handles close and its claims are released, as the kernel
    does for a process.
    """

    def __init__(
        self,
        *,
        devices: Sequence[SimCM108] = (),
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be 0..65535, not {port!r}")
        self.backend = CM108SimBackend(devices)
        self._lock = threading.Lock()
        self._handles: dict[int, _Handle] = {}
        self._devices: dict[str, _DevRef] = {}
        self._sessions: dict[str, _Session] = {}
        self._connections: set[socket.socket] = set()
        server = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                server._serve(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server((host, port), Handler)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"sim://{host}:{port}"

    def add(self, device: SimCM108) -> None:
        self.backend.add(device)

    def start(self) -> CM108SimServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.02},
                name="sim-cm108-server",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop every connection, as if the simulator process died."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
        with self._lock:
            connections, self._connections = self._connections, set()
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for device in self.backend.devices:
            device.close()

    def __enter__(self) -> CM108SimServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- serving
    def _serve(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        session_id: str | None = None
        with self._lock:
            self._connections.add(sock)
        try:
            while True:
                try:
                    request = recv_frame(sock)
                except (ConnectionError, OSError, ValueError):
                    return
                op, args = request.get("op"), request.get("a", [])
                if op == "hello":
                    session_id = str(args[0])
                    with self._lock:
                        self._sessions.setdefault(session_id, _Session()).connections += 1
                    send_frame(sock, {"r": None})
                    continue
                try:
                    result = self._dispatch(session_id, str(op), list(args))
                    reply: dict[str, Any] = {"r": result}
                except Exception as exc:  # every failure goes back to the client
                    reply = {"e": encode_error(exc)}
                try:
                    send_frame(sock, reply)
                except OSError:
                    return
        finally:
            with self._lock:
                self._connections.discard(sock)
            if session_id is not None:
                self._leave(session_id)

    def _leave(self, session_id: str) -> None:
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return
            session.connections -= 1
            if session.connections > 0:
                return
            del self._sessions[session_id]
            handles = [self._handles.pop(h) for h in session.handles if h in self._handles]
        for handle in handles:
            self.backend.close_device(handle)

    def _ref(self, key: str) -> _DevRef:
        with self._lock:
            ref = self._devices.get(key)
        if ref is None:
            raise _no_device()
        return ref

    def _handle(self, handle_id: int) -> _Handle:
        with self._lock:
            handle = self._handles.get(handle_id)
        if handle is None:
            raise _no_device()
        return handle

    def _dispatch(self, session_id: str | None, op: str, a: list[Any]) -> Any:
        backend = self.backend
        if op == "enumerate":
            keys = []
            for ref in backend.enumerate_devices():
                key = f"{id(ref.device):x}.{ref.generation}"
                with self._lock:
                    self._devices[key] = ref
                keys.append(key)
            return keys
        if op == "describe":
            ref = self._ref(str(a[0]))
            descriptor = vars(backend.get_device_descriptor(ref)).copy()
            descriptor["port_numbers"] = list(descriptor["port_numbers"])
            return {"device": descriptor, "config": SimCM108.configuration_tree()}
        if op == "open":
            handle = backend.open_device(self._ref(str(a[0])))
            with self._lock:
                self._handles[handle.id] = handle
                if session_id is not None and session_id in self._sessions:
                    self._sessions[session_id].handles.add(handle.id)
            return handle.id
        if op == "close":
            with self._lock:
                closing = self._handles.pop(int(a[0]), None)
                for session in self._sessions.values():
                    session.handles.discard(int(a[0]))
            if closing is not None:
                backend.close_device(closing)
            return None
        handle = self._handle(int(a[0]))
        if op == "ctrl":
            request_type, request, value, index, payload, length, timeout = a[1:8]
            data = (
                array.array("B", bytes(length))
                if request_type & 0x80
                else array.array("B", bytes.fromhex(payload))
            )
            count = backend.ctrl_transfer(
                handle, request_type, request, value, index, data, timeout
            )
            return data[:count].tobytes().hex() if request_type & 0x80 else count
        if op == "intr_read":
            ep, intf, size, timeout = a[1:5]
            buff = array.array("B", bytes(size))
            count = backend.intr_read(handle, ep, intf, buff, timeout)
            return buff[:count].tobytes().hex()
        simple: dict[str, Callable[..., Any]] = {
            "set_configuration": backend.set_configuration,
            "get_configuration": backend.get_configuration,
            "set_interface_altsetting": backend.set_interface_altsetting,
            "claim_interface": backend.claim_interface,
            "release_interface": backend.release_interface,
            "clear_halt": backend.clear_halt,
            "is_kernel_driver_active": backend.is_kernel_driver_active,
            "detach_kernel_driver": backend.detach_kernel_driver,
            "attach_kernel_driver": backend.attach_kernel_driver,
        }
        function = simple.get(op)
        if function is None:
            raise NotImplementedError(op)
        return function(handle, *a[1:])
