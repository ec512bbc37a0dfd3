"""CM108/CM119 USB radio interface: PTT on a HID GPIO, COS on a HID input bit, via pyusb.

Facts from the C-Media datasheets (CM108AH rev 2.1, CM108B rev 1.11, CM119 family):

- HID is interface 3. Its interrupt IN endpoint sends the 4-byte input report whenever a
  button or GPIO input changes; Get_Input_Report (0xA1/0x01, wValue 0x0100) reads it on demand.
- Set_Output_Report (0x21/0x09, wValue 0x0200, wIndex 3) takes 4 bytes: OR0 = 0 (bits 7:6 = 00
  selects GPIO), OR1 = output levels, OR2 = direction (1 = output), OR3 = 0 (S/PDIF category);
  bit n-1 is GPIOn. CM108, CM108B and CM108AH have GPIO1-4, the CM119 family GPIO1-8.
- Input report: IR0 bit 0 VOLUP, bit 1 VOLDN (1 = pressed, i.e. pin pulled low), bits 2-3 the
  mute buttons (latched "pressed then released": no level), bits 7:6 = 00 when IR1 carries the
  GPIO inputs; IR1 bit n-1 is the level of GPIOn, specified for pins in input mode only.

So the PTT output itself cannot be read back. Read-back is available only when the interface
wires a second GPIO, as an input, to the keyed line (`ptt_sense_gpio`).

Threads: control transfers (PTT, Get_Input_Report) run in a per-device single-thread executor;
one reader thread keeps an interrupt IN transfer pending and caches the last input report.
A pending transfer is what lets the host controller poll the endpoint at its interval (32 ms
on CM108 parts): short reads fired from a 20 ms poll loop would mostly expire before their
first poll slot. read_lines() therefore does no USB I/O and costs microseconds.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import re
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import usb.core
import usb.util

from drivers.errors import DeviceLost, DeviceUnavailable
from drivers.radio import RadioLines

__all__ = [
    "COS_HOOK",
    "COS_VOLDN",
    "COS_VOLUP",
    "C_MEDIA_VENDOR_ID",
    "KNOWN_PRODUCT_IDS",
    "CM108Radio",
    "cos_bit_for_gpio",
]

_log = logging.getLogger(__name__)

C_MEDIA_VENDOR_ID = 0x0D8C
KNOWN_PRODUCT_IDS: Mapping[int, str] = {
    0x000C: "CM108",
    0x000D: "CM108",
    0x000E: "CM108/CM119",
    0x000F: "CM108",
    0x0012: "CM108B",
    0x013C: "CM108AH",
    0x0008: "CM119",
    0x013A: "CM119A",
    0x0013: "CM119B",
}
"""C-Media ids of the family (the ids AllStar's usbradio/simpleusb channel drivers accept)."""
_FOUR_GPIO_PRODUCT_IDS = frozenset({0x000C, 0x0012, 0x013C})  # datasheets: GPIO1-4 only

COS_VOLUP = 0
"""Input-report bit of the VOLUP pin."""
COS_VOLDN = 1
"""Input-report bit of the VOLDN pin: where most radio interfaces (URI, AllStar mods) wire COS."""
COS_HOOK = 4
"""CM108AH HOOK input (bit 4 of IR0), used by some boards in place of the CM108's GPIO2."""


def cos_bit_for_gpio(gpio: int) -> int:
    """Input-report bit of GPIOn (1..8), for COS wired to a GPIO input."""
    if not 1 <= gpio <= 8:
        raise ValueError(f"gpio must be 1..8, not {gpio!r}")
    return 7 + gpio


_VALID_COS_BITS = frozenset({COS_VOLUP, COS_VOLDN, COS_HOOK, *range(8, 16)})
_PORT_PATH = re.compile(r"^\d+-\d+(\.\d+)*$")

HID_INTERFACE = 3
_REPORT_SIZE = 4
_SET_REPORT = (0x21, 0x09, 0x0200)  # class, interface, OUT; output report id 0
_GET_REPORT = (0xA1, 0x01, 0x0100)  # class, interface, IN; input report id 0
_CONTROL_TIMEOUT_MS = 500
_READ_TIMEOUT_MS = 100  # bounds how long close() waits for the reader thread


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, not {value!r}")


def _check_int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in {low}..{high}, not {value!r}")
    return value


def _port_path(dev: Any) -> str | None:
    ports = getattr(dev, "port_numbers", None)
    if not ports or dev.bus is None:
        return None
    return f"{dev.bus}-{'.'.join(str(p) for p in ports)}"


def _serial(dev: Any) -> tuple[str | None, str | None]:
    """(serial number or None, why it could not be read or None)."""
    try:
        return dev.serial_number, None
    except (usb.core.USBError, ValueError, NotImplementedError) as exc:
        return None, str(exc)


class CM108Radio:
    """A radio on a CM108/CM119 USB audio interface (implements RadioInterface).

    Identification: every device of `vendor_id` whose product is `product_id` (or any known
    CM108/CM119 id when None) and, when given, whose serial number and USB port path (as in
    /sys/bus/usb/devices, e.g. "1-1.4": the physical socket, stable across replugs, unlike
    the device number) match. Exactly one device must match.

    `cos_bit` is the input-report bit carrying carrier: COS_VOLDN (default), COS_VOLUP,
    COS_HOOK or cos_bit_for_gpio(n). Carrier is "bit set" (pin pulled low for the button
    pins) unless `cos_invert`. `ptt_sense_gpio`, when the interface wires one, is a GPIO input
    following the keyed line, the only way this chip can read PTT back.

    `backend` is a pyusb backend object (the seam for hw_sim.usb_backend); None uses pyusb's default
    (libusb).
    """

    def __init__(
        self,
        *,
        vendor_id: int = C_MEDIA_VENDOR_ID,
        product_id: int | None = None,
        serial_number: str | None = None,
        port_path: str | None = None,
        ptt_gpio: int = 3,
        ptt_invert: bool = False,
        cos_bit: int = COS_VOLDN,
        cos_invert: bool = False,
        ptt_sense_gpio: int | None = None,
        ptt_sense_invert: bool = False,
        backend: Any = None,
    ) -> None:
        self._vendor_id = _check_int("vendor_id", vendor_id, 0, 0xFFFF)
        if product_id is not None:
            _check_int("product_id", product_id, 0, 0xFFFF)
        elif vendor_id != C_MEDIA_VENDOR_ID:
            raise ValueError("product_id is required when vendor_id is not C-Media's")
        self._product_id = product_id
        if serial_number is not None and (not isinstance(serial_number, str) or not serial_number):
            raise ValueError(f"serial_number must be None or a non-empty str: {serial_number!r}")
        self._serial_number = serial_number
        if port_path is not None and (
            not isinstance(port_path, str) or not _PORT_PATH.match(port_path)
        ):
            raise ValueError(f"port_path must look like 1-1.4, not {port_path!r}")
        self._port_path = port_path
        self._ptt_gpio = _check_int("ptt_gpio", ptt_gpio, 1, 8)
        _check_bool("ptt_invert", ptt_invert)
        self._ptt_invert = ptt_invert
        if cos_bit not in _VALID_COS_BITS or isinstance(cos_bit, bool):
            raise ValueError(
                f"cos_bit must be 0 (VOLUP), 1 (VOLDN), 4 (HOOK) or 8..15 (GPIO1..8), "
                f"not {cos_bit!r}"
            )
        if cos_bit >= 8 and cos_bit - 7 == ptt_gpio:
            raise ValueError(f"cos_bit {cos_bit} is GPIO{ptt_gpio}, the PTT output")
        self._cos_bit = cos_bit
        _check_bool("cos_invert", cos_invert)
        self._cos_invert = cos_invert
        if ptt_sense_gpio is not None:
            _check_int("ptt_sense_gpio", ptt_sense_gpio, 1, 8)
            if ptt_sense_gpio == ptt_gpio:
                raise ValueError("ptt_sense_gpio must be another GPIO than ptt_gpio")
            if cos_bit >= 8 and cos_bit - 7 == ptt_sense_gpio:
                raise ValueError("ptt_sense_gpio and cos_bit name the same GPIO")
        self._ptt_sense_gpio = ptt_sense_gpio
        _check_bool("ptt_sense_invert", ptt_sense_invert)
        self._ptt_sense_invert = ptt_sense_invert
        self._backend = backend

        self._lock = threading.Lock()  # guards _inputs and _lost (reader thread vs loop)
        self._executor: ThreadPoolExecutor | None = None
        self._dev: Any = None
        self._detached = False
        self._inputs: bytes | None = None  # the last input report; None before the first
        self._lost: str | None = None
        self._reader: threading.Thread | None = None
        self._stop = threading.Event()  # one per open: a late old reader never sees it clear
        self._where: str | None = None

    # ------------------------------------------------------------------ interface
    @property
    def description(self) -> str:
        if self._where is not None:
            return f"cm108 usb {self._where}"
        product = "cm1xx" if self._product_id is None else f"{self._product_id:04x}"
        wanted = [f"{self._vendor_id:04x}:{product}"]
        if self._port_path is not None:
            wanted.append(f"port {self._port_path}")
        if self._serial_number is not None:
            wanted.append(f"serial {self._serial_number!r}")
        return "cm108 usb " + " ".join(wanted)

    @property
    def can_read_back_ptt(self) -> bool:
        return self._ptt_sense_gpio is not None

    async def open(self) -> None:
        if self._executor is not None:
            return
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cm108")
        self._executor = executor
        future = asyncio.get_running_loop().run_in_executor(executor, self._open_blocking)
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            # The open keeps running in the executor: undo it there once it is done.
            executor.submit(self._close_blocking)
            executor.shutdown(wait=False)
            self._executor = None
            raise
        except BaseException:
            executor.shutdown(wait=False)
            self._executor = None
            raise
        # At debug: the channel logs the open (gateway/startup.py gathers the first ones).
        _log.debug("%s: open (PTT GPIO%d unkeyed)", self.description, self._ptt_gpio)

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        self._stop.set()
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._close_blocking)
        except Exception:  # _close_blocking catches everything; belt and braces
            _log.exception("%s: close failed", self.description)
        finally:
            executor.shutdown(wait=False)
        # After a loss the channel has said it all; a close then is routine.
        _log.log(logging.DEBUG if self._lost else logging.INFO, "%s: closed", self.description)

    async def set_ptt(self, keyed: bool) -> None:
        _check_bool("keyed", keyed)
        dev = self._require_open()
        executor = self._executor
        assert executor is not None
        await asyncio.get_running_loop().run_in_executor(
            executor, self._set_ptt_blocking, dev, keyed
        )

    async def read_lines(self) -> RadioLines:
        self._require_open()
        with self._lock:
            inputs = self._inputs
        if inputs is None:  # GET_REPORT refused at open and no change reported since
            return RadioLines(cos=None, ptt=None)
        cos = _bit(inputs, self._cos_bit) != self._cos_invert
        ptt: bool | None = None
        if self._ptt_sense_gpio is not None:
            ptt = _bit(inputs, 7 + self._ptt_sense_gpio) != self._ptt_sense_invert
        return RadioLines(cos=cos, ptt=ptt)

    # ------------------------------------------------------------------ internals
    def _require_open(self) -> Any:
        with self._lock:
            lost, dev = self._lost, self._dev
        if lost is not None:
            raise DeviceLost(f"{self.description}: {lost}")
        if dev is None or self._executor is None:
            raise DeviceLost(f"{self.description}: not open")
        return dev

    def _mark_lost(self, reason: str) -> None:
        with self._lock:
            if self._lost is not None:
                return
            self._lost = reason
        # Debug only: the channel raises device_lost with this cause, in one line.
        _log.debug("%s: device lost: %s", self.description, reason)

    def _output_report(self, keyed: bool) -> bytes:
        mask = 1 << (self._ptt_gpio - 1)
        level = keyed != self._ptt_invert
        return bytes((0x00, mask if level else 0x00, mask, 0x00))

    def _write_ptt(self, dev: Any, keyed: bool) -> None:
        request_type, request, value = _SET_REPORT
        written = dev.ctrl_transfer(
            request_type,
            request,
            value,
            HID_INTERFACE,
            self._output_report(keyed),
            _CONTROL_TIMEOUT_MS,
        )
        if written != _REPORT_SIZE:
            raise usb.core.USBError(f"short SET_REPORT: {written} of {_REPORT_SIZE} bytes")

    def _set_ptt_blocking(self, dev: Any, keyed: bool) -> None:
        try:
            self._write_ptt(dev, keyed)
        except (usb.core.USBError, OSError, ValueError) as exc:
            reason = _describe_usb_error(exc)
            self._mark_lost(reason)
            raise DeviceLost(f"{self.description}: PTT write failed: {reason}") from exc
        _log.debug("%s: PTT %s", self.description, "keyed" if keyed else "unkeyed")

    def _open_blocking(self) -> None:
        with self._lock:
            self._lost = None
            self._inputs = None
        self._stop = stop = threading.Event()
        self._detached = False
        dev, where = self._find()
        try:
            if dev.idProduct in _FOUR_GPIO_PRODUCT_IDS and self._ptt_gpio > 4:
                model = KNOWN_PRODUCT_IDS[dev.idProduct]
                raise DeviceUnavailable(f"{where}: a {model} has no GPIO{self._ptt_gpio}")
            try:
                active = bool(dev.is_kernel_driver_active(HID_INTERFACE))
            except NotImplementedError:
                active = False  # platforms without kernel drivers to detach
            if active:
                dev.detach_kernel_driver(HID_INTERFACE)
                self._detached = True
            usb.util.claim_interface(dev, HID_INTERFACE)
            # SAFETY: the first transfer to the chip drives PTT to the unkeyed level.
            self._write_ptt(dev, False)
            ep_in = self._interrupt_in(dev)
            self._seed_inputs(dev)
        except DeviceUnavailable:
            self._release(dev)
            raise
        except (usb.core.USBError, OSError, ValueError) as exc:
            self._release(dev)
            raise DeviceUnavailable(f"{where}: {_describe_usb_error(exc)}") from exc
        with self._lock:
            self._dev = dev
        self._where = where
        reader = threading.Thread(
            target=self._reader_main,
            args=(dev, ep_in, stop),
            name=f"cm108-reader {where}",
            daemon=True,
        )
        self._reader = reader
        reader.start()

    def _find(self) -> tuple[Any, str]:
        try:
            devices = list(
                usb.core.find(find_all=True, backend=self._backend, idVendor=self._vendor_id)
            )
        except (usb.core.NoBackendError, usb.core.USBError, OSError, ValueError) as exc:
            raise DeviceUnavailable(f"{self.description}: cannot list USB devices: {exc}") from exc
        if self._product_id is not None:
            candidates = [d for d in devices if d.idProduct == self._product_id]
        else:
            candidates = [d for d in devices if d.idProduct in KNOWN_PRODUCT_IDS]
        seen: list[str] = []
        matches: list[tuple[Any, str]] = []
        for dev in candidates:
            path = _port_path(dev)
            serial, serial_error = _serial(dev)
            model = KNOWN_PRODUCT_IDS.get(dev.idProduct, "device")
            where = f"{path or '?'} ({dev.idVendor:04x}:{dev.idProduct:04x} {model}"
            where += f", serial {serial!r})" if serial else ")"
            seen.append(where + (f" [serial unreadable: {serial_error}]" if serial_error else ""))
            if self._port_path is not None and path != self._port_path:
                continue
            if self._serial_number is not None and serial != self._serial_number:
                continue
            matches.append((dev, where))
        chosen = matches[0][0] if len(matches) == 1 else None
        for dev in devices:
            if dev is not chosen:
                usb.util.dispose_resources(dev)  # close the handles opened to read serials
        found = "; ".join(seen) if seen else "no CM108/CM119 device"
        if not matches:
            raise DeviceUnavailable(f"{self.description}: no matching device; found: {found}")
        if len(matches) > 1:
            raise DeviceUnavailable(
                f"{self.description}: {len(matches)} devices match, set the radio's serial "
                f"or port_path to choose one; found: {found}"
            )
        return matches[0]

    @staticmethod
    def _interrupt_in(dev: Any) -> int:
        interface = dev.get_active_configuration()[(HID_INTERFACE, 0)]
        for endpoint in interface:
            address = endpoint.bEndpointAddress
            if (
                usb.util.endpoint_direction(address) == usb.util.ENDPOINT_IN
                and usb.util.endpoint_type(endpoint.bmAttributes) == usb.util.ENDPOINT_TYPE_INTR
            ):
                return int(address)
        raise DeviceUnavailable("HID interface 3 has no interrupt IN endpoint")

    def _seed_inputs(self, dev: Any) -> None:
        """Read the current input report: the chip only sends one on the next change."""
        request_type, request, value = _GET_REPORT
        try:
            report = bytes(
                dev.ctrl_transfer(
                    request_type, request, value, HID_INTERFACE, _REPORT_SIZE, _CONTROL_TIMEOUT_MS
                )
            )
        except usb.core.USBError as exc:
            if exc.errno != errno.EPIPE:
                raise
            _log.warning(
                "%s: GET_REPORT refused; COS unknown until the chip reports an input change",
                self.description,
            )
            return
        self._apply_report(report)

    def _apply_report(self, report: bytes) -> None:
        if len(report) < 2 or report[0] & 0xC0:
            return  # not a GPIO input report (EEPROM access result)
        report = report[:_REPORT_SIZE].ljust(_REPORT_SIZE, b"\x00")
        with self._lock:
            self._inputs = report

    def _reader_main(self, dev: Any, endpoint: int, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                data = dev.read(endpoint, _REPORT_SIZE, _READ_TIMEOUT_MS)
            except usb.core.USBTimeoutError:
                continue
            except Exception as exc:  # any failure ends the device; the gateway reopens
                if not stop.is_set():
                    self._mark_lost(_describe_usb_error(exc))
                return
            if not stop.is_set():
                self._apply_report(bytes(data))

    def _release(self, dev: Any) -> None:
        """Give the interface back (best effort): release, reattach the kernel driver, close."""
        try:
            usb.util.release_interface(dev, HID_INTERFACE)
        except Exception as exc:
            _log.debug("%s: release: %s", self.description, exc)
        if self._detached:
            try:
                dev.attach_kernel_driver(HID_INTERFACE)
            except Exception as exc:
                _log.debug("%s: reattach kernel driver: %s", self.description, exc)
            self._detached = False
        try:
            usb.util.dispose_resources(dev)
        except Exception as exc:
            _log.debug("%s: dispose: %s", self.description, exc)

    def _close_blocking(self) -> None:
        self._stop.set()
        with self._lock:
            dev, self._dev = self._dev, None
        if dev is None:
            return
        try:
            self._write_ptt(dev, False)  # SAFETY first, before waiting for anything
        except Exception as exc:
            with self._lock:
                known_lost = self._lost is not None
            level = logging.DEBUG if known_lost else logging.WARNING
            _log.log(level, "%s: could not unkey on close: %s", self.description, exc)
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.join(timeout=3 * _READ_TIMEOUT_MS / 1000)
        self._release(dev)


def _bit(report: bytes, bit: int) -> bool:
    return bool(report[bit // 8] >> (bit % 8) & 1)


def _describe_usb_error(exc: BaseException) -> str:
    if getattr(exc, "errno", None) == errno.ENODEV:
        return f"unplugged ({exc})"
    return str(exc) or type(exc).__name__
