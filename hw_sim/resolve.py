"""Where the simulator serves each device, and the config the daemon then reads.

A config names loopback ports for the devices it simulates (RFC 2217 serial radios, the USB
simulator, Modbus TCP links). Served as written, a second simulator on the same config (a
second `make demo`) cannot bind them. With free ports, the simulator binds port 0 for each,
and `config_text` writes the config again with the ports it got, for the daemon to read.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from gateway.config import Config

PortKey = tuple[str, ...]
"""Where a port is in the config, e.g. ("channels", "fire-north", "radio", "url")."""


@dataclass(frozen=True, slots=True)
class PortUse:
    """A loopback port the simulator serves a device on."""

    key: PortKey
    what: str
    """The device, for people: "RFC 2217 serial radio fire-north"."""
    port: int
    """As the config names it; 0 when the simulator picks a free one."""

    @property
    def where(self) -> str:
        return ".".join(self.key)


class SimPortError(Exception):
    """A port the simulator must serve on cannot be bound; the message is one line."""

    def __init__(self, use: PortUse, exc: OSError) -> None:
        self.use = use
        if exc.errno == errno.EADDRINUSE:
            problem = (
                "address in use (another simulator or demo still running?); stop it, or "
                "let the simulator pick free ports (--free-ports)"
            )
        else:
            problem = exc.strerror or str(exc)
        super().__init__(
            f"cannot serve {use.what} on 127.0.0.1:{use.port} ({use.where}): {problem}"
        )


def with_port(url: str, port: int) -> str:
    """`url` (scheme://host:port) with another port."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.hostname}:{port}"))


def config_text(
    config: Config,
    *,
    ports: Mapping[PortKey, int] | None = None,
    state_dir: Path | None = None,
    note: str = "",
) -> str:
    """The config as TOML again (every path absolute, as loading made it), with `ports`
    replacing the ports at their keys and, if given, another state_dir."""
    data: dict[str, Any] = config.model_dump(mode="json", exclude_unset=True)
    for key, port in (ports or {}).items():
        node = data
        for part in key[:-1]:
            node = node.setdefault(part, {})
        old = node.get(key[-1])
        node[key[-1]] = with_port(old, port) if isinstance(old, str) else port
    if state_dir is not None:
        data.setdefault("gateway", {})["state_dir"] = str(state_dir)
    header = f"# Written by hw_sim from {config.source}{note}.\n"
    return header + dump_toml(data)


def write_atomically(path: Path, text: str) -> None:
    """Readers see the whole file or none (the demo waits for it to appear)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- a small TOML writer: the values a parsed config holds (tables, strings, numbers, lists)


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _string(key)


def _string(text: str) -> str:
    out = ['"']
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {type(value).__name__}: {value!r}")


def dump_toml(data: Mapping[str, Any]) -> str:
    lines: list[str] = []

    def table(path: tuple[str, ...], node: Mapping[str, Any]) -> None:
        # None: TOML has no null; left out, the key takes its default again.
        scalars = {k: v for k, v in node.items() if v is not None and not isinstance(v, dict)}
        tables = {k: v for k, v in node.items() if isinstance(v, dict)}
        if path and (scalars or not tables):
            lines.append(f"\n[{'.'.join(_key(p) for p in path)}]")
        lines.extend(f"{_key(k)} = {_value(v)}" for k, v in scalars.items())
        for k, v in tables.items():
            table((*path, k), v)

    table((), data)
    return "\n".join(lines).lstrip("\n") + "\n"
