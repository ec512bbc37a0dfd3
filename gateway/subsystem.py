"""One interface for the daemon's subsystems: radios, audio, TTY, alarms.

A subsystem is built from a `SubsystemContext` (the config, the publisher, the state
directory and the subsystems built before it), and then gives the daemon what it runs:
supervised tasks, its commands, its initial retained states, and a close. `gateway.app`
holds the ordered list of builders (`SUBSYSTEMS`) and loops over it, so a new subsystem is
one module and one entry there.

Stop order is a safety matter: every subsystem's `make_safe` runs first (the radios release
PTT there), before any task is stopped or anything closed; then the supervised tasks stop,
then the subsystems close in reverse build order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from gateway.commands import CommandRouter
from gateway.config import Config
from gateway.memory import JsonMemory
from gateway.publisher import Publisher

Task = Callable[[], Awaitable[None]]
"""A supervised loop: restarted by the supervisor if it fails."""


class Subsystem:
    """Base of every subsystem; each method's default does nothing."""

    name: str = "subsystem"

    def tasks(self) -> dict[str, Task]:
        """The loops to supervise, by task name (`channel fire`, `audio card0`, ...)."""
        return {}

    def register(self, router: CommandRouter) -> None:
        """Register this subsystem's commands (and their targets) on the router."""

    def publish_states(self) -> None:
        """Publish the retained states that must exist from the start."""

    def summary(self) -> list[str]:
        """What it runs, for the startup line: `3 channels`, `2 IO modules`, ..."""
        return []

    def startup_devices(self) -> list[str]:
        """The devices it opens at start, as their first-open lines name them
        (`startup_open`): the start's summary line waits for these."""
        return []

    async def make_safe(self) -> None:
        """First thing on every stop path, before tasks stop: put hardware in a safe state
        (the radios unkey here). Never raises."""

    async def close(self) -> None:
        """Release devices and links, once its tasks have stopped. Never raises."""


S = TypeVar("S", bound=Subsystem)


@dataclass
class SubsystemContext:
    """What a subsystem is built from."""

    config: Config
    publisher: Publisher
    state_dir: Path
    ptt_journal: JsonMemory
    """PTT keyed state across restarts (the radios write it, the app reads it at start)."""
    built: list[Subsystem] = field(default_factory=list)
    """The subsystems built so far, in order."""

    def get(self, kind: type[S]) -> S:
        """The subsystem of that class built before this one (audio needs the radios)."""
        for subsystem in self.built:
            if isinstance(subsystem, kind):
                return subsystem
        raise LookupError(f"the {kind.__name__} subsystem must be built before this one")


Builder = Callable[[SubsystemContext], Subsystem]
