"""`consolegw diag`: what this machine's hardware looks like, and guided PASS/FAIL checks.

The checks drive the hardware directly through the shipped drivers, exactly as the daemon
would, so the daemon must not be running on the same hardware: two processes on one serial
port or USB interface fight over PTT, and closing a port drops its lines under the other. The
`daemon` check runs first: the daemon holds an flock in its state_dir (gateway.lock) while it
runs, so a held lock proves it runs, and a lock diag can take proves it does not (diag then
holds it until it is done, so no daemon can start under its checks). The broker's retained
status is asked too. No check touches the hardware while the daemon runs, or while neither
the lock nor the broker can tell, unless the technician passes --force.

Checks are a registry (`register_check`, in core) run in registration order; each returns one
result per target (channel, module...): `daemon`, `ptt`, `modbus`, then the audio loop-back
checks `tone` and `tty`, which play on a channel's output and measure what a loop-back cable
(or a radio in repeat) brings back on its input. A check is one module here, ending in one
call, and one import below (the imports' order is the run order):

    register_check("name", "what it proves", run, keys_transmitters=False)

The package: `core` (the registry, the context, the report, `run_diag`), `inventory` (what
the PC sees; each radio kind lists its own devices, gateway.radios.KINDS), one module per
check (`daemon`, `ptt`, `modbus`, `tone`, `tty`, sharing `loopback`), `render` (the
tables); the tone DSP is gateway.dsp.tone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Awaitable

from gateway.dsp.tone import ToneMeasurement, band_power, measure_tone, tone_envelope
from gateway.tools import ToolError
from gateway.tools.diag.core import (
    CHECKS,
    Check,
    CheckResult,
    CheckRun,
    DiagContext,
    DiagReport,
    Status,
    register_check,
    run_diag,
)
from gateway.tools.diag.inventory import (
    Inventory,
    list_audio_devices,
    list_modbus_modules,
    take_inventory,
)

# isort: off
# The checks register on import, and run in this order.
from gateway.tools.diag.daemon import check_daemon
from gateway.tools.diag.ptt import check_ptt
from gateway.tools.diag.modbus import check_modbus
from gateway.tools.diag.tone import TONE_DBFS, TONE_HZ, check_tone
from gateway.tools.diag.tty import TTY_BAUD, TTY_MESSAGE, check_tty
# isort: on

from gateway.tools.diag.loopback import AudioPath, audio_path
from gateway.tools.diag.render import render

__all__ = [
    "CHECKS",
    "TONE_DBFS",
    "TONE_HZ",
    "TTY_BAUD",
    "TTY_MESSAGE",
    "AudioPath",
    "Check",
    "CheckResult",
    "CheckRun",
    "DiagContext",
    "DiagReport",
    "Inventory",
    "Status",
    "ToneMeasurement",
    "audio_path",
    "band_power",
    "check_daemon",
    "check_modbus",
    "check_ptt",
    "check_tone",
    "check_tty",
    "list_audio_devices",
    "list_modbus_modules",
    "measure_tone",
    "register_check",
    "render",
    "run",
    "run_diag",
    "take_inventory",
    "tone_envelope",
]


async def _stoppable(work: Awaitable[DiagReport]) -> DiagReport:
    """SIGTERM and SIGHUP (an SSH session dropped) cancel the checks like Ctrl-C does, so
    their cleanup unkeys: a CM108 GPIO would otherwise stay keyed after the process dies."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    signals = (signal.SIGTERM, signal.SIGHUP)
    for sig in signals:
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await work
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def _split(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [item.strip() for item in value.split(",") if item.strip()]


def _ask(question: str) -> bool:
    if not sys.stdin.isatty():
        return False
    print(f"{question} This TRANSMITS on the air. [y/N] ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    if args.list_checks:
        for check in CHECKS.values():
            flags = " (keys transmitters)" if check.keys_transmitters else ""
            print(f"{check.name:<10} {check.description}{flags}")
        return 0
    checks = _split(args.checks)
    if checks is not None:
        unknown = [n for n in checks if n not in CHECKS]
        if unknown or not checks:
            args.parser.error(
                f"--checks: unknown check(s) {', '.join(unknown) or '(none given)'}; "
                f"known: {', '.join(CHECKS)}"
            )
    config = None
    if args.config is not None:
        from gateway.config import load_config
        from gateway.tools.mqtt_view import BrokerTarget

        config = load_config(args.config)
        BrokerTarget.from_config(config, broker=args.broker)  # a bad --broker: exit 2 now
    elif args.broker is not None:
        args.parser.error("--broker needs -c CONFIG (the checks run against a config)")
    errors = Console(file=sys.stderr)
    if config is not None and not args.json:
        errors.print(
            "[bold yellow]diag drives the hardware directly: the daemon must not be running "
            "on it (systemctl stop consolegw).[/]"
        )
    diag = run_diag(
        config=config,
        config_path=args.config,
        checks=checks,
        key_seconds=args.key_seconds,
        only=_split(args.only),
        confirm=(lambda _: True) if args.yes else _ask,
        progress=lambda text: errors.print(f"[dim]{text} ...[/]"),
        broker=args.broker,
        force=args.force,
    )
    try:
        report = asyncio.run(_stoppable(diag))
    except asyncio.CancelledError:
        raise ToolError("stopped by a signal; every radio was unkeyed and closed") from None
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        render(report, Console(file=sys.stdout))
    return 1 if report.failed else 0
