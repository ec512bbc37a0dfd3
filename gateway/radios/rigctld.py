"""`kind = "rigctld"`: any CAT-controlled radio Hamlib supports, keyed through its rigctld.

PTT and its read-back are rigctld's `set_ptt`/`get_ptt`; carrier is its `get_dcd` where the
rig reports it. rigctld runs beside the gateway (`rigctld -m MODEL -r /dev/ttyUSB0 -t 4532`,
see docs/radios-rigctld.md).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from drivers.radio import RadioInterface
from gateway.config_base import HostName
from gateway.radios.base import RadioKind, RadioSectionBase


class RigctldRadioSection(RadioSectionBase):
    kind: Literal["rigctld"]
    host: HostName = "127.0.0.1"
    """Where rigctld listens (its -T)."""
    port: int = Field(default=4532, ge=1, le=65535)
    """rigctld's -t."""
    dcd: bool = True
    """Ask the rig for carrier (get_dcd); false where Hamlib cannot read its squelch."""
    io_timeout_s: float = Field(default=1.0, gt=0, le=10)
    """A rigctld that has not answered a request by then counts as lost."""

    @field_validator("ptt_invert")
    @classmethod
    def _no_line_to_invert(cls, value: bool) -> bool:
        if value:
            raise ValueError("rigctld keys the radio by command: there is no line to invert")
        return value


def _radio(section: RigctldRadioSection) -> RadioInterface:
    from drivers.rigctld import RigctldRadio

    return RigctldRadio(
        host=section.host,
        port=section.port,
        io_timeout_s=section.io_timeout_s,
        dcd=section.dcd,
    )


KIND = RadioKind(
    name="rigctld",
    section=RigctldRadioSection,
    factory=_radio,
    has_cos=lambda section: section.dcd,
    claims=lambda section: ("port", f"rigctld at {section.host.lower()}:{section.port}"),
)
