"""What every radio kind provides: its config section's base and its registry entry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from drivers.radio import RadioInterface
from gateway.config_base import ConfigModel


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
