"""The radio kinds, as python-can's BACKENDS: each is one module here (its config section
and registry entry) plus one driver module in drivers/, and one line below.

Config validation (the `kind` union), the driver a channel gets, whether it has COS and what
two channels may not share all derive from this table; an unknown kind fails loudly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Union

from pydantic import Field

from drivers.radio import RadioInterface
from gateway.radios import cm108, rigctld, serial
from gateway.radios.base import RadioKind, RadioSectionBase

__all__ = ["KINDS", "RadioKind", "RadioSection", "RadioSectionBase", "kind_of", "make_radio"]

KINDS: dict[str, RadioKind] = {kind.name: kind for kind in (serial.KIND, cm108.KIND, rigctld.KIND)}

if TYPE_CHECKING:
    RadioSection = RadioSectionBase
else:
    # A discriminated union of every kind's section, keyed by `kind`.
    RadioSection = Annotated[
        Union[tuple(kind.section for kind in KINDS.values())],  # noqa: UP007
        Field(discriminator="kind"),
    ]


def kind_of(section: RadioSectionBase) -> RadioKind:
    kind = KINDS.get(section.kind)
    if kind is None or not isinstance(section, kind.section):
        raise ValueError(f"no radio kind {section.kind!r} (known: {', '.join(sorted(KINDS))})")
    return kind


def make_radio(section: RadioSectionBase) -> RadioInterface:
    """The driver for a channel's `[radio]` table."""
    return kind_of(section).factory(section)
