"""A CM108/CM119 USB radio interface simulated at the USB control-transfer level.

`SimCM108` is the chip plus the radio wired to it: descriptors (audio interfaces 0-2, HID
interface 3 with interrupt IN endpoint 0x83), the HID output report that drives the GPIOs,
the HID input report that carries the buttons and GPIO inputs. The radio's PTT input is one
GPIO; its carrier output (COS) pulls a button pin (VOLDN by default) or a GPIO input.

The chip is a `hw_sim.usb_device.SimUsbDevice`: `hw_sim.usb_backend.SimUsbBackend` puts it on
a simulated bus that the shipped driver reaches through `usb.core.find(backend=...)`, and
`hw_sim.usb_server.SimUsbServer` serves that bus to the daemon's `RemoteBackend`
(`usb_backend = "sim://127.0.0.1:PORT"`) over loopback TCP.

Errors mirror pyusb's libusb1 backend (USBError with the same errno values): ENODEV once
unplugged, EBUSY when a kernel driver holds the interface, EPIPE (stall) for requests the
chip does not support, USBTimeoutError when no interrupt report arrives in time.
"""

from __future__ import annotations

import itertools
import re
import struct
import threading
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from hw_sim import usb_device
from hw_sim.usb_device import ControlSetup

__all__ = ["HID_EP_IN", "HID_INTERFACE", "HidRequest", "PttChange", "SimCM108"]

HID_INTERFACE = 3
HID_EP_IN = 0x83
_HID_BINTERVAL_MS = 32  # CM108 HID endpoint polling interval (lsusb of real parts)

# Setup packets the chip answers (C-Media datasheets: HID Set_Output/Get_Input_Report).
_SET_REPORT = (0x21, 0x09)
_GET_REPORT = (0xA1, 0x01)
_SET_IDLE = (0x21, 0x0A)
_GET_DESCRIPTOR = (0x80, 0x06)
_GET_CONFIGURATION = (0x80, 0x08)

_PORT_PATH = re.compile(r"^(\d+)-(\d+(?:\.\d+)*)$")
_VALID_COS_BITS = frozenset({0, 1, 4, *range(8, 16)})
_addresses = itertools.count(2)


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

    Faults (named as on `hw_sim.serial_radio.SimulatedSerialRadio`): unplug()/replug(),
    set_cos_stuck(), set_cos_flap(hz), set_ptt_no_follow(), and the chip's own
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
    def set_carrier(self, present: bool) -> None:
        """The receiver hears (or stops hearing) a carrier: the radio's COS output."""
        with self._cond:
            self._cos = bool(present)
            self._update_inputs()

    @property
    def cos(self) -> bool:
        """Carrier as the radio presents it on the wire (after stuck faults)."""
        with self._cond:
            return self._cos if self._cos_stuck is None else self._cos_stuck

    def set_cos_stuck(self, stuck: bool) -> None:
        """Fault: COS stuck active whatever the receiver hears (squelch open, shorted line)."""
        with self._cond:
            self._cos_stuck = True if stuck else None
            self._update_inputs()

    def set_cos_flap(self, hz: float | None) -> None:
        """Fault: the carrier toggles `hz` full on/off cycles a second; None or 0 stops it."""
        if hz is not None and not 0 <= hz <= 500:
            raise ValueError(f"hz must be in 0..500, not {hz!r}")
        with self._cond:
            stop, thread = self._flap_stop, self._flap_thread
            self._flap_stop = self._flap_thread = None
        if stop is not None and thread is not None:
            stop.set()
            thread.join()
        if not hz:
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
        self.set_cos_flap(None)

    # ------------------------------------------------------------- chip internals
    def _check(self, generation: int) -> None:
        if not self._plugged or generation != self._generation:
            raise usb_device.no_device()

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

    def _auto_claim(self, handle: int, interface: int) -> None:
        # usbfs claims an interface implicitly for a transfer when nobody holds it.
        if self._claims.get(interface) == handle:
            return
        if interface in self._kernel_bound or interface in self._claims:
            raise usb_device.busy()
        self._claims[interface] = handle

    # ------------------------------------------- the bus's interface (SimUsbDevice)
    def attached(self) -> int | None:
        with self._cond:
            return self._generation if self._plugged else None

    def open(self, generation: int) -> None:
        with self._cond:
            self._check(generation)

    def close_handle(self, handle: int) -> None:
        with self._cond:
            for interface in [i for i, h in self._claims.items() if h == handle]:
                del self._claims[interface]

    def set_configuration(self, generation: int, handle: int, value: int) -> None:
        # A real chip would drop every interface (and the audio with them): refuse loudly.
        with self._cond:
            self._check(generation)
            if self._kernel_bound or self._claims:
                raise usb_device.busy()

    def get_configuration(self, generation: int) -> int:
        with self._cond:
            self._check(generation)
        return 1

    def set_interface_altsetting(
        self, generation: int, handle: int, interface: int, altsetting: int
    ) -> None:
        with self._cond:
            self._check(generation)
            if self._claims.get(interface) != handle:
                raise usb_device.not_found()

    def claim_interface(self, generation: int, handle: int, interface: int) -> None:
        with self._cond:
            self._check(generation)
            if not 0 <= interface <= 3:
                raise usb_device.not_found()
            if interface in self._kernel_bound:
                raise usb_device.busy()
            owner = self._claims.get(interface)
            if owner is not None and owner != handle:
                raise usb_device.busy()
            self._claims[interface] = handle

    def release_interface(self, generation: int, handle: int, interface: int) -> None:
        with self._cond:
            self._check(generation)
            if self._claims.get(interface) != handle:
                raise usb_device.not_found()
            del self._claims[interface]

    def clear_halt(self, generation: int, handle: int, endpoint: int) -> None:
        with self._cond:
            self._check(generation)

    def kernel_driver_active(self, generation: int, interface: int) -> bool:
        with self._cond:
            self._check_interface(generation, interface)
            return interface in self._kernel_bound

    def detach_kernel_driver(self, generation: int, interface: int) -> None:
        with self._cond:
            self._check_interface(generation, interface)
            if interface not in self._kernel_bound:
                raise usb_device.not_found()
            self._kernel_bound.discard(interface)
            self.detach_count += 1
            if interface == HID_INTERFACE:
                self._pending = None  # usbhid read every report until now

    def attach_kernel_driver(self, generation: int, interface: int) -> None:
        with self._cond:
            self._check_interface(generation, interface)
            if interface in self._kernel_bound or interface in self._claims:
                raise usb_device.busy()
            self._kernel_bound.add(interface)
            self.attach_count += 1

    def _check_interface(self, generation: int, interface: int) -> None:
        self._check(generation)
        if not 0 <= interface <= 3:
            raise usb_device.not_found()

    def control_transfer(
        self, generation: int, handle: int, setup: ControlSetup, data: bytes, length: int
    ) -> bytes | int:
        request_type, request, value, index = setup
        with self._cond:
            self._check(generation)
            now = time.monotonic()
            if (request_type, request) == _SET_REPORT and index == HID_INTERFACE:
                self._auto_claim(handle, HID_INTERFACE)
                if value != 0x0200 or len(data) != 4:
                    raise usb_device.stall()
                self._hid_log.append(HidRequest(now, "set_report", bytes(data)))
                if data[0] & 0xC0 == 0:  # HID_OR0[7:6] == 00: OR1/OR2 drive the GPIOs
                    self._gpio_out = data[1]
                    self._gpio_dir = data[2]
                    self._update_line()
                return len(data)
            if (request_type, request) == _GET_REPORT and index == HID_INTERFACE:
                self._auto_claim(handle, HID_INTERFACE)
                if value != 0x0100 or length < 1 or self._refuse_get_report:
                    raise usb_device.stall()
                report = self._input_report()
                self._hid_log.append(HidRequest(now, "get_report", report))
                return report[:length]
            if (request_type, request) == _SET_IDLE and index == HID_INTERFACE:
                self._auto_claim(handle, HID_INTERFACE)
                self._hid_log.append(HidRequest(now, "set_idle", b""))
                return 0
            if (request_type, request) == _GET_CONFIGURATION:
                return b"\x01"[:length]
            if (request_type, request) == _GET_DESCRIPTOR:
                return self._descriptor_bytes(value >> 8, value & 0xFF)[:length]
            raise usb_device.stall()

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
        raise usb_device.stall()

    def interrupt_read(
        self, generation: int, handle: int, endpoint: int, size: int, timeout_ms: int
    ) -> bytes:
        with self._cond:
            self._check(generation)
            if endpoint != HID_EP_IN:
                raise usb_device.stall()
            self._auto_claim(handle, HID_INTERFACE)
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
                raise usb_device.timeout()
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

    def configuration_tree(self) -> dict[str, Any]:
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
