"""What every radio kind provides: its config section's base and its registry entry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from drivers.radio import RadioInterface
from gateway.config_base import ConfigModel

if TYPE_CHECKING:
    from gateway.config import Config

Lister = Callable[["Config | None", list[str]], list[dict[str, Any]]]
"""Lists the devices of one kind this machine sees (and the configured ones it does not),
given the config (None: inventory only) and a list to append what could not be listed to."""


class RadioSectionBase(ConfigModel):
    """`[channels.<id>.radio]`: `kind` picks the entry of gateway.radios.KINDS."""

    kind: str
    ptt_invert: bool = False


@dataclass(frozen=True, slots=True)
class RadioKind:
    """One radio kind: a driver module and what the gateway needs to know about it."""

    name: str
    """The config's `kind = "..."`."""
    section: type[RadioSectionBase]
    factory: Callable[[Any], RadioInterface]
    """Builds the driver from a section of this kind; imports the driver lazily, so a
    console without that hardware never needs its libraries (python-can's pattern)."""
    has_cos: Callable[[Any], bool]
    """Whether a radio so configured reports carrier (COS) at all."""
    claims: Callable[[Any], tuple[str, str] | None] = lambda section: None
    """What it takes for itself, as (its config key, what it is): a serial port, a rigctld.
    Two channels may not share it."""
    inventory: Lister | None = None
    """What `consolegw diag` shows of this kind: the attached devices, one dict each (the
    JSON report's rows). Imports its hardware library lazily, as `factory` does."""
    inventory_key: str | None = None
    """The inventory's key in diag's report (default: "<name>_devices")."""

    @property
    def report_key(self) -> str:
        return self.inventory_key or f"{self.name}_devices"
