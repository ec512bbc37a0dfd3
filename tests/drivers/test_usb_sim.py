"""hw_sim's USB bus (usb_backend, usb_server) serves any `SimUsbDevice`, not only the CM108.

A toy vendor-class device, a few lines long, is found and spoken to through pyusb's real
core, in-process and through `RemoteBackend` over loopback TCP: the interface a second USB
simulator would implement is all the bus needs.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import usb.core
import usb.util

from drivers.usb_loopback import RemoteBackend
from hw_sim import usb_device
from hw_sim.usb_backend import SimUsbBackend
from hw_sim.usb_device import ControlSetup, SimUsbDevice
from hw_sim.usb_server import SimUsbServer

VENDOR, PRODUCT = 0x1209, 0x0001  # pid.codes test ids
_READ_REGISTER = (0xC0, 0x01)  # vendor request, device to host


class ToyDevice:
    """One register, read with a vendor control request; unplugged means ENODEV."""

    def __init__(self, register: bytes) -> None:
        self.register = register
        self.generation: int | None = 1
        self.claims: dict[int, int] = {}

    def attached(self) -> int | None:
        return self.generation

    def device_descriptor(self) -> SimpleNamespace:
        return SimpleNamespace(
            bLength=18,
            bDescriptorType=1,
            bcdUSB=0x0200,
            bDeviceClass=0xFF,
            bDeviceSubClass=0,
            bDeviceProtocol=0,
            bMaxPacketSize0=64,
            idVendor=VENDOR,
            idProduct=PRODUCT,
            bcdDevice=0x0100,
            iManufacturer=0,
            iProduct=0,
            iSerialNumber=0,
            bNumConfigurations=1,
            address=9,
            bus=1,
            port_number=3,
            port_numbers=(3,),
            speed=3,
        )

    def configuration_tree(self) -> dict[str, Any]:
        interface = {
            "bLength": 9,
            "bDescriptorType": 4,
            "bInterfaceNumber": 0,
            "bAlternateSetting": 0,
            "bNumEndpoints": 0,
            "bInterfaceClass": 0xFF,
            "bInterfaceSubClass": 0,
            "bInterfaceProtocol": 0,
            "iInterface": 0,
            "extra_descriptors": [],
            "endpoints": [],
        }
        return {
            "bLength": 9,
            "bDescriptorType": 2,
            "wTotalLength": 18,
            "bNumInterfaces": 1,
            "bConfigurationValue": 1,
            "iConfiguration": 0,
            "bmAttributes": 0x80,
            "bMaxPower": 50,
            "extra_descriptors": [],
            "interfaces": [[interface]],
        }

    def _check(self, generation: int) -> None:
        if generation != self.generation:
            raise usb_device.no_device()

    def open(self, generation: int) -> None:
        self._check(generation)

    def close_handle(self, handle: int) -> None:
        self.claims = {i: h for i, h in self.claims.items() if h != handle}

    def set_configuration(self, generation: int, handle: int, value: int) -> None:
        self._check(generation)

    def get_configuration(self, generation: int) -> int:
        self._check(generation)
        return 1

    def set_interface_altsetting(
        self, generation: int, handle: int, interface: int, altsetting: int
    ) -> None:
        self._check(generation)

    def claim_interface(self, generation: int, handle: int, interface: int) -> None:
        self._check(generation)
        if self.claims.setdefault(interface, handle) != handle:
            raise usb_device.busy()

    def release_interface(self, generation: int, handle: int, interface: int) -> None:
        self._check(generation)
        self.claims.pop(interface, None)

    def control_transfer(
        self, generation: int, handle: int, setup: ControlSetup, data: bytes, length: int
    ) -> bytes | int:
        self._check(generation)
        if setup[:2] != _READ_REGISTER:
            raise usb_device.stall()
        return self.register[:length]

    def interrupt_read(
        self, generation: int, handle: int, endpoint: int, size: int, timeout_ms: int
    ) -> bytes:
        raise usb_device.stall()

    def clear_halt(self, generation: int, handle: int, endpoint: int) -> None:
        self._check(generation)

    def kernel_driver_active(self, generation: int, interface: int) -> bool:
        self._check(generation)
        return False

    def detach_kernel_driver(self, generation: int, interface: int) -> None:
        raise usb_device.not_found()

    def attach_kernel_driver(self, generation: int, interface: int) -> None:
        self._check(generation)

    def close(self) -> None:
        pass


@pytest.fixture(params=["local", "remote"])
def bus(request: pytest.FixtureRequest) -> Iterator[tuple[ToyDevice, Any]]:
    device = ToyDevice(b"\x12\x34")
    served: SimUsbDevice = device  # the toy is a SimUsbDevice (mypy checks it here)
    if request.param == "local":
        yield device, SimUsbBackend([served])
        return
    with SimUsbServer(devices=[served]) as server:
        yield device, RemoteBackend(*server.address)


def test_a_second_device_kind_is_found_and_answers(bus: tuple[ToyDevice, Any]) -> None:
    _, backend = bus
    found = usb.core.find(idVendor=VENDOR, idProduct=PRODUCT, backend=backend)
    assert found is not None
    assert bytes(found.ctrl_transfer(0xC0, 0x01, 0, 0, 2)) == b"\x12\x34"
    with pytest.raises(usb.core.USBError) as stalled:
        found.ctrl_transfer(0xC0, 0x02, 0, 0, 2)
    assert stalled.value.errno == errno.EPIPE
    usb.util.dispose_resources(found)


def test_an_unplugged_device_is_enodev_and_not_enumerated(bus: tuple[ToyDevice, Any]) -> None:
    device, backend = bus
    found = usb.core.find(idVendor=VENDOR, idProduct=PRODUCT, backend=backend)
    assert found is not None
    found.ctrl_transfer(0xC0, 0x01, 0, 0, 2)  # opens the handle
    device.generation = None
    with pytest.raises(usb.core.USBError) as gone:
        found.ctrl_transfer(0xC0, 0x01, 0, 0, 2)
    assert gone.value.errno == errno.ENODEV
    assert usb.core.find(idVendor=VENDOR, backend=backend) is None
    usb.util.dispose_resources(found)
