"""What every config section is built from: the strict model base, ids, host names.

Here rather than in gateway.config so that a radio kind's section (gateway/radios/) can be
defined with its kind, and gateway.config assemble them, without an import cycle.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

Identifier = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
"""Ids end up in MQTT topics: no '/', '+', '#' or spaces."""


class ConfigModel(BaseModel):
    # Unknown keys are typos until proven otherwise: refuse them. No setting here means
    # anything when infinite or NaN (TOML has inf and nan): refuse those too.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def host_problem(host: str) -> str | None:
    """Why a host name cannot be looked up, or None. The resolver raises UnicodeError (not
    OSError) for an empty or over-long label ("broker..lan"): caught here, not at run time."""
    if any(ord(c) < 0x20 or c == "\x7f" for c in host):
        return "host name contains a control character"
    try:
        host.encode("idna")
    except UnicodeError:
        return "host name has an empty or over-long part"
    return None


def _valid_host(value: str) -> str:
    problem = host_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


HostName = Annotated[str, AfterValidator(_valid_host)]
