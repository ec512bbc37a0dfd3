"""What a simulated USB device offers the simulated bus (`hw_sim.usb_backend`).

A device model (the CM108 chip of `hw_sim.cm108`, or a second USB simulator) implements
`SimUsbDevice`; the pyusb backend and the loopback server speak only this interface, never
a model's internals. Every call after enumeration carries the plug-in `generation` the
caller saw: a device unplugged or replugged since answers ENODEV, as a stale libusb handle
does. `handle` is the backend's id of an open handle (interface claims belong to it).

The error constructors mirror pyusb's libusb1 backend (USBError with the same errno
values), so the driver sees what it would see on real hardware.
"""

from __future__ import annotations

import errno
from types import SimpleNamespace
from typing import Any, Protocol

import usb.core

__all__ = ["ControlSetup", "SimUsbDevice", "busy", "no_device", "not_found", "stall", "timeout"]

ControlSetup = tuple[int, int, int, int]
"""bmRequestType, bRequest, wValue, wIndex of a control transfer."""

_LIBUSB_ERROR_NO_DEVICE = -4
_LIBUSB_ERROR_NOT_FOUND = -5
_LIBUSB_ERROR_BUSY = -6
_LIBUSB_ERROR_TIMEOUT = -7
_LIBUSB_ERROR_PIPE = -9


def no_device() -> usb.core.USBError:
    return usb.core.USBError(
        "No such device (it may have been disconnected)", _LIBUSB_ERROR_NO_DEVICE, errno.ENODEV
    )


def busy() -> usb.core.USBError:
    return usb.core.USBError("Resource busy", _LIBUSB_ERROR_BUSY, errno.EBUSY)


def stall() -> usb.core.USBError:
    return usb.core.USBError("Pipe error", _LIBUSB_ERROR_PIPE, errno.EPIPE)


def not_found() -> usb.core.USBError:
    return usb.core.USBError("Entity not found", _LIBUSB_ERROR_NOT_FOUND, errno.ENOENT)


def timeout() -> usb.core.USBTimeoutError:
    return usb.core.USBTimeoutError("Operation timed out", _LIBUSB_ERROR_TIMEOUT, errno.ETIMEDOUT)


class SimUsbDevice(Protocol):
    """One simulated USB device as the bus sees it. Implementations are thread-safe: the
    server calls them from one thread per client connection."""

    def attached(self) -> int | None:
        """The current plug-in generation, None while unplugged (enumeration skips it)."""
        ...

    def device_descriptor(self) -> SimpleNamespace:
        """The device descriptor's fields plus `address`, `bus`, `port_number(s)`, `speed`."""
        ...

    def configuration_tree(self) -> dict[str, Any]:
        """Configuration descriptors as plain data (`drivers.usb_loopback` reads it)."""
        ...

    def open(self, generation: int) -> None:
        """A handle is being opened on `generation`; ENODEV if that is gone."""
        ...

    def close_handle(self, handle: int) -> None:
        """A handle closed: release its claims. Never raises (also after an unplug)."""
        ...

    def set_configuration(self, generation: int, handle: int, value: int) -> None: ...

    def get_configuration(self, generation: int) -> int: ...

    def set_interface_altsetting(
        self, generation: int, handle: int, interface: int, altsetting: int
    ) -> None: ...

    def claim_interface(self, generation: int, handle: int, interface: int) -> None: ...

    def release_interface(self, generation: int, handle: int, interface: int) -> None: ...

    def control_transfer(
        self, generation: int, handle: int, setup: ControlSetup, data: bytes, length: int
    ) -> bytes | int:
        """Answer one control transfer: the bytes read (IN, at most `length`) or the count
        written (OUT, `data`)."""
        ...

    def interrupt_read(
        self, generation: int, handle: int, endpoint: int, size: int, timeout_ms: int
    ) -> bytes:
        """One report from an interrupt IN endpoint; USBTimeoutError when none comes in
        `timeout_ms` (0: wait for ever, as libusb)."""
        ...

    def clear_halt(self, generation: int, handle: int, endpoint: int) -> None: ...

    def kernel_driver_active(self, generation: int, interface: int) -> bool: ...

    def detach_kernel_driver(self, generation: int, interface: int) -> None: ...

    def attach_kernel_driver(self, generation: int, interface: int) -> None: ...

    def close(self) -> None:
        """The simulator stops: end background threads (fault injection)."""
        ...
