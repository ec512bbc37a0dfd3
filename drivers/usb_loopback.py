"""USB over loopback: a pyusb backend whose transfers go over TCP to a USB device server.

A transport, like `rfc2217://` for serial ports: the CM108 driver runs unchanged on a device
that another process serves (hw_sim's simulated CM108s, selected by a radio's
`usb_backend = "sim://127.0.0.1:PORT"`). The wire protocol is defined here, the server side
lives with the simulator.

Frames: 4-byte big-endian length, then a JSON object. Requests {"op": ..., "a": [...]};
answers {"r": result} or {"e": {"type": ..., "msg": ..., "code": ..., "errno": ...}}, the
error as pyusb's libusb1 backend would raise it.
"""

from __future__ import annotations

import array
import contextlib
import errno
import json
import re
import socket
import struct
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import usb.backend
import usb.core

_LIBUSB_ERROR_NO_DEVICE = -4  # what libusb says for a device that is gone

__all__ = [
    "IO_TIMEOUT",
    "MAX_FRAME",
    "RemoteBackend",
    "config_lookup",
    "decode_error",
    "descriptor_namespace",
    "encode_error",
    "recv_frame",
    "send_frame",
]


def descriptor_namespace(fields: dict[str, Any]) -> SimpleNamespace:
    ns = SimpleNamespace(
        **{k: v for k, v in fields.items() if k not in ("interfaces", "endpoints")}
    )
    ns.extra_descriptors = array.array("B", fields.get("extra_descriptors", []))
    return ns


def config_lookup(
    tree: dict[str, Any], config: int, intf: int | None = None, alt: int | None = None
) -> dict[str, Any]:
    """Walk a configuration tree by logical indexes, raising IndexError like libusb1."""
    if config != 0:
        raise IndexError(f"Invalid configuration index {config}")
    if intf is None:
        return tree
    interfaces: list[list[dict[str, Any]]] = tree["interfaces"]
    if not 0 <= intf < len(interfaces):
        raise IndexError(f"Invalid interface index {intf}")
    alts = interfaces[intf]
    if alt is None or not 0 <= alt < len(alts):
        raise IndexError(f"Invalid alternate setting index {alt}")
    return alts[alt]


MAX_FRAME = 1 << 20
IO_TIMEOUT = 10.0  # seconds a request may take beyond its own USB timeout


def send_frame(sock: socket.socket, obj: object) -> None:
    body = json.dumps(obj, separators=(",", ":")).encode()
    sock.sendall(struct.pack(">I", len(body)) + body)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed")
        chunks += chunk
    return bytes(chunks)


def recv_frame(sock: socket.socket) -> Any:
    (size,) = struct.unpack(">I", _recv_exact(sock, 4))
    if size > MAX_FRAME:
        raise ConnectionError(f"frame of {size} bytes refused")
    return json.loads(_recv_exact(sock, size))


def encode_error(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, usb.core.USBTimeoutError):
        kind = "timeout"
    elif isinstance(exc, usb.core.USBError):
        kind = "usb"
    elif isinstance(exc, IndexError):
        kind = "index"
    elif isinstance(exc, NotImplementedError):
        kind = "notimpl"
    else:
        kind = "value"
    return {
        "type": kind,
        "msg": str(exc.strerror if isinstance(exc, usb.core.USBError) else exc),
        "code": getattr(exc, "backend_error_code", None),
        "errno": getattr(exc, "errno", None),
    }


def decode_error(err: dict[str, Any]) -> Exception:
    kind, msg = err.get("type"), str(err.get("msg"))
    if kind == "timeout":
        timeout: Exception = usb.core.USBTimeoutError(msg, err.get("code"), err.get("errno"))
        return timeout
    if kind == "usb":
        error: Exception = usb.core.USBError(msg, err.get("code"), err.get("errno"))
        return error
    if kind == "index":
        return IndexError(msg)
    if kind == "notimpl":
        return NotImplementedError(msg)
    return ValueError(msg)


@dataclass(frozen=True, slots=True)
class _RemoteRef:
    key: str


@dataclass(frozen=True, slots=True)
class _RemoteHandle:
    id: int


class RemoteBackend(usb.backend.IBackend):  # type: ignore[misc]
    """Daemon-side pyusb backend that forwards every call to the simulator's USB server.

    One TCP connection per calling thread, so a blocking interrupt read in one thread never
    delays a control transfer from another. A lost connection surfaces as USBError ENODEV,
    like an unplugged device; the next call reconnects.
    """

    def __init__(self, host: str, port: int, *, connect_timeout: float = 2.0) -> None:
        super().__init__()
        if not 0 < port <= 65535:
            raise ValueError(f"port must be 1..65535, not {port!r}")
        self.host = host
        self.port = port
        self._connect_timeout = connect_timeout
        self._session = uuid.uuid4().hex
        self._local = threading.local()
        self._lock = threading.Lock()
        # Each connection with the thread it serves: a driver that reopens gets a new I/O
        # thread each time, and the connections of threads that ended are closed.
        self._sockets: dict[socket.socket, threading.Thread] = {}
        self._closed = False
        self._trees: dict[str, dict[str, Any]] = {}

    @classmethod
    def from_url(cls, url: str) -> RemoteBackend:
        """Build from `sim://host:port`, the gateway's `usb_backend` option."""
        match = re.fullmatch(r"sim://([^:/]+):(\d+)/?", url)
        if match is None:
            raise ValueError(f"usb_backend must look like sim://127.0.0.1:PORT, not {url!r}")
        return cls(match.group(1), int(match.group(2)))

    def close(self) -> None:
        """Close every connection (the server then releases this session's handles).

        Final, like the death of the process that used it: later calls fail as ENODEV
        instead of reconnecting under the same session and keeping its claims alive.
        """
        with self._lock:
            self._closed = True
            sockets, self._sockets = list(self._sockets), {}
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _finalize_object(self) -> None:
        self.close()

    # --------------------------------------------------------------- transport
    def _socket(self) -> socket.socket:
        sock: socket.socket | None = getattr(self._local, "sock", None)
        if sock is not None:
            return sock
        if self._closed:
            raise usb.core.USBError(
                "simulator backend closed", _LIBUSB_ERROR_NO_DEVICE, errno.ENODEV
            )
        try:
            sock = socket.create_connection((self.host, self.port), self._connect_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(IO_TIMEOUT)
            send_frame(sock, {"op": "hello", "a": [self._session]})
            recv_frame(sock)
        except (OSError, ValueError) as exc:
            raise usb.core.USBError(
                f"simulator {self.host}:{self.port} unreachable: {exc}",
                _LIBUSB_ERROR_NO_DEVICE,
                errno.ENODEV,
            ) from exc
        with self._lock:
            if self._closed:
                # close() ran while this thread connected; a connection left open now
                # would keep the session, and its claims, alive.
                sock.close()
                raise usb.core.USBError(
                    "simulator backend closed", _LIBUSB_ERROR_NO_DEVICE, errno.ENODEV
                )
            self._sockets[sock] = threading.current_thread()
            ended = [s for s, thread in self._sockets.items() if not thread.is_alive()]
            for old in ended:
                del self._sockets[old]
        for old in ended:  # after the new one is in: the session never drops to zero
            with contextlib.suppress(OSError):
                old.close()
        self._local.sock = sock
        return sock

    def _call(self, op: str, *args: Any, wait_ms: int | None = None) -> Any:
        """One request/response; `wait_ms`: the USB timeout the server may block for."""
        sock = self._socket()
        try:
            if wait_ms == 0:  # libusb: 0 = no timeout
                sock.settimeout(None)
            else:
                sock.settimeout(IO_TIMEOUT + (wait_ms or 0) / 1000)
            send_frame(sock, {"op": op, "a": list(args)})
            reply = recv_frame(sock)
        except (OSError, ValueError) as exc:
            self._local.sock = None
            with self._lock:
                self._sockets.pop(sock, None)
            sock.close()
            raise usb.core.USBError(
                f"simulator connection lost: {exc}", _LIBUSB_ERROR_NO_DEVICE, errno.ENODEV
            ) from exc
        if "e" in reply:
            raise decode_error(reply["e"])
        return reply["r"]

    def _tree(self, dev: _RemoteRef) -> dict[str, Any]:
        # Descriptors never change for one enumeration key: fetch the whole tree once.
        tree = self._trees.get(dev.key)
        if tree is None:
            tree = self._call("describe", dev.key)
            self._trees[dev.key] = tree
        return tree

    # ---------------------------------------------------------------- IBackend
    def enumerate_devices(self) -> Iterator[_RemoteRef]:
        return iter([_RemoteRef(str(key)) for key in self._call("enumerate")])

    def get_parent(self, dev: _RemoteRef) -> None:
        return None

    def get_device_descriptor(self, dev: _RemoteRef) -> SimpleNamespace:
        fields = dict(self._tree(dev)["device"])
        fields["port_numbers"] = tuple(fields["port_numbers"])
        return SimpleNamespace(**fields)

    def get_configuration_descriptor(self, dev: _RemoteRef, config: int) -> SimpleNamespace:
        return descriptor_namespace(config_lookup(self._tree(dev)["config"], config))

    def get_interface_descriptor(
        self, dev: _RemoteRef, intf: int, alt: int, config: int
    ) -> SimpleNamespace:
        return descriptor_namespace(config_lookup(self._tree(dev)["config"], config, intf, alt))

    def get_endpoint_descriptor(
        self, dev: _RemoteRef, ep: int, intf: int, alt: int, config: int
    ) -> SimpleNamespace:
        endpoints = config_lookup(self._tree(dev)["config"], config, intf, alt)["endpoints"]
        if not 0 <= ep < len(endpoints):
            raise IndexError(f"Invalid endpoint index {ep}")
        return descriptor_namespace(endpoints[ep])

    def open_device(self, dev: _RemoteRef) -> _RemoteHandle:
        return _RemoteHandle(int(self._call("open", dev.key)))

    def close_device(self, dev_handle: _RemoteHandle) -> None:
        with contextlib.suppress(usb.core.USBError):  # the server dropped it already
            self._call("close", dev_handle.id)

    def set_configuration(self, dev_handle: _RemoteHandle, config_value: int) -> None:
        self._call("set_configuration", dev_handle.id, config_value)

    def get_configuration(self, dev_handle: _RemoteHandle) -> int:
        return int(self._call("get_configuration", dev_handle.id))

    def set_interface_altsetting(
        self, dev_handle: _RemoteHandle, intf: int, altsetting: int
    ) -> None:
        self._call("set_interface_altsetting", dev_handle.id, intf, altsetting)

    def claim_interface(self, dev_handle: _RemoteHandle, intf: int) -> None:
        self._call("claim_interface", dev_handle.id, intf)

    def release_interface(self, dev_handle: _RemoteHandle, intf: int) -> None:
        self._call("release_interface", dev_handle.id, intf)

    def ctrl_transfer(  # noqa: PLR0917 - pyusb's IBackend signature
        self,
        dev_handle: _RemoteHandle,
        bmRequestType: int,  # noqa: N803 - pyusb's parameter names
        bRequest: int,  # noqa: N803
        wValue: int,  # noqa: N803
        wIndex: int,  # noqa: N803
        data: array.array[int],
        timeout: int,
    ) -> int:
        setup = (bmRequestType, bRequest, wValue, wIndex)
        if bmRequestType & 0x80:
            reply = self._call(
                "ctrl", dev_handle.id, *setup, "", len(data), timeout, wait_ms=timeout
            )
            answer = bytes.fromhex(reply)
            data[: len(answer)] = array.array("B", answer)
            return len(answer)
        payload = data.tobytes().hex()
        return int(self._call("ctrl", dev_handle.id, *setup, payload, 0, timeout, wait_ms=timeout))

    def intr_read(
        self, dev_handle: _RemoteHandle, ep: int, intf: int, buff: array.array[int], timeout: int
    ) -> int:
        report = bytes.fromhex(
            self._call("intr_read", dev_handle.id, ep, intf, len(buff), timeout, wait_ms=timeout)
        )
        buff[: len(report)] = array.array("B", report)
        return len(report)

    def clear_halt(self, dev_handle: _RemoteHandle, ep: int) -> None:
        self._call("clear_halt", dev_handle.id, ep)

    def is_kernel_driver_active(self, dev_handle: _RemoteHandle, intf: int) -> bool:
        return bool(self._call("is_kernel_driver_active", dev_handle.id, intf))

    def detach_kernel_driver(self, dev_handle: _RemoteHandle, intf: int) -> None:
        self._call("detach_kernel_driver", dev_handle.id, intf)

    def attach_kernel_driver(self, dev_handle: _RemoteHandle, intf: int) -> None:
        self._call("attach_kernel_driver", dev_handle.id, intf)
