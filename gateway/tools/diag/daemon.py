"""The `daemon` check: does the daemon run on this console? Its state_dir lock answers
first and best, the broker's retained status second; while it runs (or while neither can
tell) no check touches the hardware, unless the technician passes --force."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiomqtt

from gateway.tools.diag.core import CheckResult, DiagContext, register_check

if TYPE_CHECKING:
    from gateway.lock import LockProbe

DAEMON_STATUS_WAIT_S = 1.5
"""Longest wait for the retained status after subscribing (it comes at once if any)."""


async def _retained_status(client: aiomqtt.Client, topic: str) -> dict[str, Any] | None:
    """The retained message on `topic`, or None when there is none.

    A retained message is delivered right after the subscription; to know that none is
    coming without waiting blindly, a probe published after subscribing marks the end (the
    broker delivers one client's messages in order). A broker whose ACL drops the probe
    costs DAEMON_STATUS_WAIT_S instead.
    """
    from gateway.tools.mqtt_view import json_object

    probe = f"consolegw-diag/probe/{uuid.uuid4().hex}"
    await client.subscribe(topic, qos=1)
    with contextlib.suppress(aiomqtt.MqttError):
        await client.subscribe(probe, qos=1)
        await client.publish(probe, b"probe", qos=1)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DAEMON_STATUS_WAIT_S):
            async for message in client.messages:
                if message.topic.value != topic:
                    return None  # the probe: everything retained came before it
                payload = message.payload
                return json_object(payload) if isinstance(payload, bytes | bytearray) else None
    return None


async def _broker_status(ctx: DiagContext) -> tuple[str, dict[str, Any] | None, str]:
    """(broker url, its retained status or None, why it could not be asked or "")."""
    from gateway.tools.mqtt_view import BrokerTarget

    assert ctx.config is not None
    target = BrokerTarget.from_config(ctx.config, broker=ctx.broker)
    try:
        async with asyncio.timeout(5.0):
            client = target.client(identifier=f"consolegw-diag-{os.getpid()}", timeout=3.0)
            async with client:
                status = await _retained_status(client, f"{target.prefix}/status")
    except (aiomqtt.MqttError, TimeoutError, OSError) as exc:
        return target.mqtt.url, None, str(exc) or "timeout"
    return target.mqtt.url, status, ""


def _lock_note(found: LockProbe, state_dir: Path) -> str:
    if found.state == "free":
        held = "; diag holds it until it is done" if found.lock is not None else ""
        return f"no daemon holds the lock in state_dir {state_dir}{held}"
    return f"the lock {found.path} cannot be inspected ({found.reason})"


async def check_daemon(ctx: DiagContext) -> list[CheckResult]:
    """Does the daemon run on this console? Then nothing here may touch the hardware.

    The state_dir lock answers first and best; the broker's retained status is asked too (a
    daemon with another state_dir, or stopped while the lock could not be read)."""
    from gateway.lock import probe

    if ctx.config is None:
        return [CheckResult("daemon", "-", "SKIP", "no config: nothing to ask")]
    state_dir = ctx.config.gateway.state_dir
    found = await asyncio.to_thread(probe, state_dir)
    ctx.lock = found.lock
    data: dict[str, Any] = {"lock": str(found.path), "lock_state": found.state}
    verdict = "--force: the hardware is checked anyway" if ctx.force else "hardware checks refused"
    if found.state == "held":
        assert found.holder is not None
        holder = found.holder.describe()
        data["lock_holder"] = {"pid": found.holder.pid, "command": found.holder.command}
        ctx.daemon_online = True
        ctx.refusal = (
            f"the daemon runs ({holder} holds its state_dir lock): stop it first "
            "(systemctl stop consolegw), or pass --force"
        )
        detail = (
            f"the daemon runs on this console: {holder} holds {found.path}; stop it first "
            f"(systemctl stop consolegw); {verdict}"
        )
        return [CheckResult("daemon", "-", "FAIL", detail, data)]
    url, status, error = await _broker_status(ctx)
    data.update(broker=url, status=status)
    lock_note = _lock_note(found, state_dir)
    if isinstance(status, dict) and status.get("state") == "online":
        ctx.daemon_online = True
        ctx.refusal = "the daemon is online: stop it first, or pass --force"
        elsewhere = (
            " (yet it holds no lock in this config's state_dir: it runs with another "
            "config or on another machine?)"
            if found.state == "free"
            else ""
        )
        detail = (
            f"the daemon is online on {url} (session {status.get('session')}, since "
            f"{status.get('ts')}){elsewhere}: stop it first (systemctl stop consolegw); "
            f"{verdict}"
        )
        return [CheckResult("daemon", "-", "FAIL", detail, data)]
    if error:
        data["broker_error"] = error
        if found.state == "free":
            ctx.daemon_online = False
            detail = f"{lock_note}: the hardware is ours (broker {url} unreachable: {error})"
            return [CheckResult("daemon", "-", "PASS", detail, data)]
        ctx.daemon_online = None
        ctx.refusal = (
            "cannot tell whether the daemon runs (lock and broker both unavailable): "
            "pass --force once it is surely stopped"
        )
        detail = (
            f"cannot tell whether the daemon runs: {lock_note} and broker {url} is "
            f"unreachable ({error}); {verdict}. Run diag as a user who can read state_dir "
            "(sudo), give --broker URL, or pass --force once the daemon is surely stopped "
            "(systemctl stop consolegw)"
        )
        return [CheckResult("daemon", "-", "SKIP" if ctx.force else "FAIL", detail, data)]
    ctx.daemon_online = False
    said = "offline" if status else "never connected"
    detail = f"{lock_note}; daemon {said} on {url}: the hardware is ours"
    return [CheckResult("daemon", "-", "PASS", detail, data)]


register_check(
    "daemon",
    "the daemon is not running on this hardware (its state_dir lock, then the broker)",
    check_daemon,
    touches_hardware=False,
)
