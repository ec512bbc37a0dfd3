"""The daemon wires its subsystems from one list, and stops them in a safe order."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway import app
from gateway.app import Gateway
from gateway.commands import CommandRouter, Request, RequestContext
from gateway.config import parse_config
from gateway.subsystem import Builder, Subsystem, SubsystemContext, Task


class _Ping(Request):
    pass


class _Probe(Subsystem):
    """A subsystem that records what the daemon does with it."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    def tasks(self) -> dict[str, Task]:
        async def loop() -> None:
            await asyncio.Event().wait()

        return {f"{self.name} loop": loop}

    def register(self, router: CommandRouter) -> None:
        async def ping(params: _Ping, ctx: RequestContext) -> dict[str, str]:
            return {"pong": ctx.target}

        router.set_targets(f"{self.name}s", lambda: ("one",))
        router.register(f"{self.name}s", "ping", _Ping, ping)

    async def make_safe(self) -> None:
        self.log.append(f"make_safe {self.name}")

    async def close(self) -> None:
        self.log.append(f"close {self.name}")


def _gateway(tmp_path: Path, log: list[str], monkeypatch: pytest.MonkeyPatch) -> Gateway:
    def probe(name: str) -> Builder:
        return lambda ctx: _Probe(name, log)

    def needs_first(ctx: SubsystemContext) -> Subsystem:
        ctx.get(_Probe)  # built before: a later subsystem can use an earlier one
        return _Probe("second", log)

    monkeypatch.setattr(app, "SUBSYSTEMS", (*app.SUBSYSTEMS, probe("first"), needs_first))
    data = {"gateway": {"id": "gw-sub", "state_dir": str(tmp_path)}, "channels": {"spare": {}}}
    return Gateway(parse_config(data, source=tmp_path / "x.toml"))


def test_a_new_subsystem_is_one_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = _gateway(tmp_path, [], monkeypatch)
    assert [s.name for s in gateway.subsystems][-2:] == ["first", "second"]
    prefix = gateway.config.prefix
    assert f"{prefix}/firsts/+/request/+" in gateway.router.subscriptions
    assert "ping" in gateway.router.commands()["seconds"]
    replies = asyncio.run(
        gateway.router.handle(f"{prefix}/firsts/one/request/ping", b"{}", retained=False)
    )
    assert b'"pong":"one"' in replies[0].payload


def test_stop_makes_everything_safe_before_anything_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log: list[str] = []
    gateway = _gateway(tmp_path, log, monkeypatch)

    async def stop() -> None:
        log.append("supervisor stop")

    monkeypatch.setattr(gateway.supervisor, "stop", stop)

    async def main() -> None:
        done = asyncio.create_task(asyncio.sleep(0))
        await done
        await gateway._shutdown(done)

    asyncio.run(main())
    assert log == [
        "make_safe first",
        "make_safe second",
        "supervisor stop",
        "close second",
        "close first",
    ]
