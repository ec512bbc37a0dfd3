"""The check registry and the run: what a check gets (DiagContext), what it returns
(CheckResult), the report (DiagReport), and `run_diag`, which takes the inventory and runs
the selected checks in registration order behind the `daemon` guard."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from gateway.config import Config
from gateway.events import utc_timestamp
from gateway.tools.diag.inventory import Inventory, take_inventory

if TYPE_CHECKING:
    from gateway.lock import StateDirLock

Status = Literal["PASS", "FAIL", "SKIP"]


@dataclass(frozen=True, slots=True)
class CheckResult:
    check: str
    target: str
    """Channel, module or other id the result is about ("-" when global)."""
    status: Status
    detail: str
    """One line a technician can act on."""
    data: dict[str, Any] = field(default_factory=dict)
    """Measured values for the JSON report."""


@dataclass
class DiagContext:
    """What a check gets: the config, the options, what earlier checks found."""

    config: Config | None
    key_seconds: float
    only: frozenset[str] | None
    inventory: Inventory
    keying_confirmed: bool
    progress: Callable[[str], None]
    broker: str | None = None
    """A broker URL to ask instead of the config's mqtt.url (as `consolegw run --broker`)."""
    force: bool = False
    """Touch the hardware even when the `daemon` check refuses it."""
    daemon_online: bool | None = None
    """Set by the `daemon` check: True when the daemon runs (lock held, or online on the
    broker), False when it surely does not, None when that cannot be told."""
    refusal: str | None = None
    """Set by the `daemon` check: why the hardware checks must not run (None: they may)."""
    lock: StateDirLock | None = None
    """The daemon's state_dir lock, held by diag while the checks run (when it could)."""

    def wanted(self, target: str) -> bool:
        return self.only is None or target in self.only


CheckRun = Callable[[DiagContext], Awaitable[list[CheckResult]]]


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    description: str
    run: CheckRun
    touches_hardware: bool
    """Skipped while the daemon is online, and without a config."""
    keys_transmitters: bool
    """Needs the technician's go-ahead (prompt, or --yes)."""


CHECKS: dict[str, Check] = {}
"""Every check, in the order they run."""


def register_check(
    name: str,
    description: str,
    run: CheckRun,
    *,
    touches_hardware: bool = True,
    keys_transmitters: bool = False,
) -> None:
    """Add a guided check. `run` returns one CheckResult per target and must leave the
    hardware safe (transmitters unkeyed, devices closed) on every path, cancellation included.
    """
    if not name.isidentifier():
        raise ValueError(f"check name must be an identifier: {name!r}")
    if name in CHECKS:
        raise ValueError(f"check {name!r} already registered")
    CHECKS[name] = Check(name, description, run, touches_hardware, keys_transmitters)


@dataclass
class DiagReport:
    inventory: Inventory
    results: list[CheckResult]
    config_path: str | None
    gateway: str | None
    ts: str = field(default_factory=utc_timestamp)

    def count(self, status: Status) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def failed(self) -> bool:
        return self.count("FAIL") > 0

    def as_json(self) -> dict[str, Any]:
        from gateway.app import package_version

        return {
            "tool": "consolegw diag",
            "version": package_version(),
            "host": socket.gethostname(),
            "ts": self.ts,
            "config": self.config_path,
            "gateway": self.gateway,
            "inventory": self.inventory.as_json(),
            "checks": [asdict(r) for r in self.results],
            "summary": {s: self.count(s) for s in ("PASS", "FAIL", "SKIP")},
            "result": "FAIL" if self.failed else "PASS",
        }


def _keying_targets(config: Config | None, only: frozenset[str] | None) -> list[str]:
    if config is None:
        return []
    return [
        c
        for c, section in config.channels.items()
        if section.radio is not None and (only is None or c in only)
    ]


async def run_diag(
    *,
    config: Config | None,
    config_path: str | None = None,
    checks: Iterable[str] | None = None,
    key_seconds: float = 2.0,
    only: Iterable[str] | None = None,
    confirm: Callable[[str], bool] | None = None,
    progress: Callable[[str], None] | None = None,
    broker: str | None = None,
    force: bool = False,
) -> DiagReport:
    """Inventory, then the selected checks (all by default). `confirm(question)` is asked
    once before anything keys a transmitter; without it, such checks are skipped. `broker`
    replaces the config's mqtt.url; `force` runs the hardware checks even when the `daemon`
    check refuses them (the technician's word that the daemon is stopped)."""
    if not 0 < key_seconds <= 30:
        raise ValueError(f"key_seconds must be in (0, 30], not {key_seconds!r}")
    names = list(CHECKS) if checks is None else list(checks)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise ValueError(f"unknown check(s) {', '.join(unknown)}; known: {', '.join(CHECKS)}")
    selected = [CHECKS[n] for n in CHECKS if n in names]  # registration order
    if any(c.touches_hardware for c in selected) and "daemon" not in names:
        selected.insert(0, CHECKS["daemon"])  # the guard always runs before the hardware
    say = progress or (lambda _: None)
    only_set = frozenset(only) if only is not None else None
    inventory = await take_inventory(config)
    ctx = DiagContext(
        config=config,
        key_seconds=key_seconds,
        only=only_set,
        inventory=inventory,
        keying_confirmed=False,
        progress=say,
        broker=broker,
        force=force,
    )
    try:
        results = await _run_checks(ctx, selected, confirm)
    finally:
        if ctx.lock is not None:
            ctx.lock.release()
    return DiagReport(
        inventory=inventory,
        results=results,
        config_path=config_path,
        gateway=config.gateway.id if config else None,
    )


async def _run_checks(
    ctx: DiagContext, selected: list[Check], confirm: Callable[[str], bool] | None
) -> list[CheckResult]:
    config = ctx.config
    results: list[CheckResult] = []
    asked = False
    for check in selected:
        if check.touches_hardware:
            reason = None
            if config is None:
                reason = "no config (-c): nothing to check against"
            elif ctx.refusal is not None and not ctx.force:
                reason = ctx.refusal
            elif check.keys_transmitters and not asked:
                asked = True
                targets = _keying_targets(config, ctx.only)
                question = (
                    f"Key {len(targets)} transmitter(s) ({', '.join(targets)}) for "
                    f"{ctx.key_seconds:g} s each?"
                )
                ctx.keying_confirmed = bool(targets) and confirm is not None and confirm(question)
            if reason is None and check.keys_transmitters and not ctx.keying_confirmed:
                reason = "keying not confirmed (answer y, or pass --yes)"
            if reason is not None:
                results.append(CheckResult(check.name, "-", "SKIP", reason))
                continue
        results.extend(await check.run(ctx))
    return results
