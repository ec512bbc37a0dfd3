"""Serves a simulated USB bus (`hw_sim.usb_backend.SimUsbBackend`) over loopback TCP.

The daemon runs in another process than the simulator: its `drivers.usb_loopback.
RemoteBackend` (selected by `usb_backend = "sim://127.0.0.1:PORT"`) forwards every pyusb
backend call here, framed as `drivers.usb_loopback` defines. Any `SimUsbDevice` can be served.
"""

from __future__ import annotations

import array
import contextlib
import socket
import socketserver
import threading
from collections.abc import Callable, Sequence
from typing import Any

from drivers.usb_loopback import encode_error, recv_frame, send_frame
from hw_sim import usb_device
from hw_sim.usb_backend import DeviceRef, Handle, SimUsbBackend
from hw_sim.usb_device import SimUsbDevice

__all__ = ["SimUsbServer"]


class _Session:
    def __init__(self) -> None:
        self.connections = 0
        self.handles: set[int] = set()


class SimUsbServer:
    """Serves simulated USB devices to `RemoteBackend` clients over loopback TCP.

    Handles belong to the client's session: when every connection of a session closes (the
    daemon exited or crashed), its handles close and its claims are released, as the kernel
    does for a process.
    """

    def __init__(
        self,
        *,
        devices: Sequence[SimUsbDevice] = (),
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be 0..65535, not {port!r}")
        self.backend = SimUsbBackend(devices)
        self._lock = threading.Lock()
        self._handles: dict[int, Handle] = {}
        self._devices: dict[str, DeviceRef] = {}
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

    def add(self, device: SimUsbDevice) -> None:
        self.backend.add(device)

    def start(self) -> SimUsbServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.02},
                name="sim-usb-server",
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

    def __enter__(self) -> SimUsbServer:
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

    def _ref(self, key: str) -> DeviceRef:
        with self._lock:
            ref = self._devices.get(key)
        if ref is None:
            raise usb_device.no_device()
        return ref

    def _handle(self, handle_id: int) -> Handle:
        with self._lock:
            handle = self._handles.get(handle_id)
        if handle is None:
            raise usb_device.no_device()
        return handle

    def _dispatch(self, session_id: str | None, op: str, a: list[Any]) -> Any:
        device_ops: dict[str, Callable[[list[Any]], Any]] = {
            "enumerate": self._enumerate,
            "describe": self._describe,
            "close": self._close,
        }
        if op in device_ops:
            return device_ops[op](a)
        if op == "open":
            return self._open(session_id, str(a[0]))
        handle = self._handle(int(a[0]))
        backend = self.backend
        handle_ops: dict[str, Callable[..., Any]] = {
            "ctrl": self._ctrl,
            "intr_read": self._intr_read,
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
        function = handle_ops.get(op)
        if function is None:
            raise NotImplementedError(op)
        return function(handle, *a[1:])

    def _enumerate(self, a: list[Any]) -> list[str]:
        keys = []
        for ref in self.backend.enumerate_devices():
            key = f"{id(ref.device):x}.{ref.generation}"
            with self._lock:
                self._devices[key] = ref
            keys.append(key)
        return keys

    def _describe(self, a: list[Any]) -> dict[str, Any]:
        ref = self._ref(str(a[0]))
        descriptor = vars(self.backend.get_device_descriptor(ref)).copy()
        descriptor["port_numbers"] = list(descriptor["port_numbers"])
        return {"device": descriptor, "config": ref.device.configuration_tree()}

    def _open(self, session_id: str | None, key: str) -> int:
        handle = self.backend.open_device(self._ref(key))
        with self._lock:
            self._handles[handle.id] = handle
            if session_id is not None and session_id in self._sessions:
                self._sessions[session_id].handles.add(handle.id)
        return handle.id

    def _close(self, a: list[Any]) -> None:
        with self._lock:
            closing = self._handles.pop(int(a[0]), None)
            for session in self._sessions.values():
                session.handles.discard(int(a[0]))
        if closing is not None:
            self.backend.close_device(closing)

    def _ctrl(  # noqa: PLR0917 - the wire's argument order
        self,
        handle: Handle,
        request_type: int,
        request: int,
        value: int,
        index: int,
        payload: str,
        length: int,
        timeout: int,
    ) -> str | int:
        data = (
            array.array("B", bytes(length))
            if request_type & 0x80
            else array.array("B", bytes.fromhex(payload))
        )
        count = self.backend.ctrl_transfer(
            handle, request_type, request, value, index, data, timeout
        )
        return data[:count].tobytes().hex() if request_type & 0x80 else count

    def _intr_read(self, handle: Handle, ep: int, intf: int, size: int, timeout: int) -> str:
        buff = array.array("B", bytes(size))
        count = self.backend.intr_read(handle, ep, intf, buff, timeout)
        return buff[:count].tobytes().hex()
