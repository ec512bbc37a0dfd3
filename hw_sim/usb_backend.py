"""A pyusb backend (`usb.backend.IBackend`) whose bus holds simulated USB devices.

The shipped driver runs unchanged through `usb.core.find(backend=SimUsbBackend(...))`; for
the daemon in another process, `hw_sim.usb_server.SimUsbServer` serves this backend over
loopback TCP. It knows a device only through `hw_sim.usb_device.SimUsbDevice`: handles,
their ids and the plug-in generation they were opened on are kept here, the device's state
(claims, kernel driver, transfers) in the device model.
"""

from __future__ import annotations

import array
import itertools
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import SimpleNamespace

import usb.backend

from drivers.usb_loopback import config_lookup, descriptor_namespace
from hw_sim import usb_device
from hw_sim.usb_device import SimUsbDevice

__all__ = ["DeviceRef", "Handle", "SimUsbBackend"]


@dataclass(frozen=True, slots=True)
class DeviceRef:
    """A device as one enumeration saw it: stale once it is unplugged or replugged."""

    device: SimUsbDevice
    generation: int


class Handle:
    """An open device handle (pyusb's dev_handle)."""

    _ids = itertools.count(1)

    def __init__(self, ref: DeviceRef) -> None:
        self.ref = ref
        self.id = next(self._ids)
        self.closed = False


class SimUsbBackend(usb.backend.IBackend):  # type: ignore[misc]
    """A pyusb backend over a set of simulated devices. Thread-safe."""

    def __init__(self, devices: Iterable[SimUsbDevice] = ()) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._devices: list[SimUsbDevice] = list(devices)

    def add(self, device: SimUsbDevice) -> None:
        with self._lock:
            self._devices.append(device)

    @property
    def devices(self) -> list[SimUsbDevice]:
        with self._lock:
            return list(self._devices)

    # IBackend --------------------------------------------------------------
    def enumerate_devices(self) -> Iterator[DeviceRef]:
        refs = []
        for device in self.devices:
            generation = device.attached()
            if generation is not None:
                refs.append(DeviceRef(device, generation))
        return iter(refs)

    def get_parent(self, dev: DeviceRef) -> None:
        return None

    def get_device_descriptor(self, dev: DeviceRef) -> SimpleNamespace:
        return dev.device.device_descriptor()

    def get_configuration_descriptor(self, dev: DeviceRef, config: int) -> SimpleNamespace:
        return descriptor_namespace(config_lookup(dev.device.configuration_tree(), config))

    def get_interface_descriptor(
        self, dev: DeviceRef, intf: int, alt: int, config: int
    ) -> SimpleNamespace:
        tree = dev.device.configuration_tree()
        return descriptor_namespace(config_lookup(tree, config, intf, alt))

    def get_endpoint_descriptor(
        self, dev: DeviceRef, ep: int, intf: int, alt: int, config: int
    ) -> SimpleNamespace:
        tree = dev.device.configuration_tree()
        endpoints = config_lookup(tree, config, intf, alt)["endpoints"]
        if not 0 <= ep < len(endpoints):
            raise IndexError(f"Invalid endpoint index {ep}")
        return descriptor_namespace(endpoints[ep])

    def open_device(self, dev: DeviceRef) -> Handle:
        dev.device.open(dev.generation)
        return Handle(dev)

    def close_device(self, dev_handle: Handle) -> None:
        if not dev_handle.closed:
            dev_handle.closed = True
            dev_handle.ref.device.close_handle(dev_handle.id)

    def set_configuration(self, dev_handle: Handle, config_value: int) -> None:
        ref = self._live(dev_handle)
        ref.device.set_configuration(ref.generation, dev_handle.id, config_value)

    def get_configuration(self, dev_handle: Handle) -> int:
        ref = self._live(dev_handle)
        return ref.device.get_configuration(ref.generation)

    def set_interface_altsetting(self, dev_handle: Handle, intf: int, altsetting: int) -> None:
        ref = self._live(dev_handle)
        ref.device.set_interface_altsetting(ref.generation, dev_handle.id, intf, altsetting)

    def claim_interface(self, dev_handle: Handle, intf: int) -> None:
        ref = self._live(dev_handle)
        ref.device.claim_interface(ref.generation, dev_handle.id, intf)

    def release_interface(self, dev_handle: Handle, intf: int) -> None:
        ref = self._live(dev_handle)
        ref.device.release_interface(ref.generation, dev_handle.id, intf)

    def ctrl_transfer(  # noqa: PLR0917 - pyusb's IBackend signature
        self,
        dev_handle: Handle,
        bmRequestType: int,  # noqa: N803 - pyusb's parameter names
        bRequest: int,  # noqa: N803
        wValue: int,  # noqa: N803
        wIndex: int,  # noqa: N803
        data: array.array[int],
        timeout: int,
    ) -> int:
        ref = self._live(dev_handle)
        setup = (bmRequestType, bRequest, wValue, wIndex)
        device, generation = ref.device, ref.generation
        if bmRequestType & 0x80:
            answer = device.control_transfer(generation, dev_handle.id, setup, b"", len(data))
            assert isinstance(answer, bytes)
            data[: len(answer)] = array.array("B", answer)
            return len(answer)
        written = device.control_transfer(generation, dev_handle.id, setup, data.tobytes(), 0)
        assert isinstance(written, int)
        return written

    def intr_read(
        self, dev_handle: Handle, ep: int, intf: int, buff: array.array[int], timeout: int
    ) -> int:
        ref = self._live(dev_handle)
        report = ref.device.interrupt_read(ref.generation, dev_handle.id, ep, len(buff), timeout)
        buff[: len(report)] = array.array("B", report)
        return len(report)

    def clear_halt(self, dev_handle: Handle, ep: int) -> None:
        ref = self._live(dev_handle)
        ref.device.clear_halt(ref.generation, dev_handle.id, ep)

    def is_kernel_driver_active(self, dev_handle: Handle, intf: int) -> bool:
        ref = self._live(dev_handle)
        return ref.device.kernel_driver_active(ref.generation, intf)

    def detach_kernel_driver(self, dev_handle: Handle, intf: int) -> None:
        ref = self._live(dev_handle)
        ref.device.detach_kernel_driver(ref.generation, intf)

    def attach_kernel_driver(self, dev_handle: Handle, intf: int) -> None:
        ref = self._live(dev_handle)
        ref.device.attach_kernel_driver(ref.generation, intf)

    @staticmethod
    def _live(dev_handle: Handle) -> DeviceRef:
        if dev_handle.closed:
            raise usb_device.no_device()
        return dev_handle.ref
