"""`consolegw fleet` and `top --fleet` against real daemons on a real broker: two standby
consoles, one with a radio interface that is not there (a fault), one stopped (offline), and
retained payloads no gateway would send, left under the same root by the test."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import DataTable

from gateway.cli import main
from gateway.tools import fleet
from gateway.tools.fleet import FleetView
from gateway.tools.mqtt_view import BrokerTarget
from gateway.tools.top import FleetApp
from tests.mqtt_tools import Broker, Daemon, Received, Subscriber, free_port
from tests.tools.helpers import until

HOSTILE: dict[str, bytes] = {
    "intruder/status": b"\xff\xfe not json",
    "intruder/state": b"[1, 2, 3]",
    "pos-a/channels/ghost/state": b'{"faults": 7}',
    "deep/status": b"[" * 100_000,
    "liar/status": b'{"state": "online", "session": "one", "ts": 5, "version": true}',
    "liar/state": b'{"outbox_depth": -3, "outbox_full": "no", "channels": [1], "started": "x"}',
}
"""Topics under the root (after `<root>/`) and what a stranger left there, retained."""


def _rows(out: str) -> dict[str, dict[str, Any]]:
    return {row["gateway"]: row for row in json.loads(out)}


def _table_row(out: str, gateway: str) -> list[str]:
    for line in out.splitlines():
        if line.split()[:1] == [gateway]:
            return line.split()
    raise AssertionError(f"no row for {gateway} in:\n{out}")


def _topic_with(topic: str, needle: bytes = b"") -> Callable[[list[Received]], Any]:
    def found(messages: list[Received]) -> Any:
        return [m for m in messages if m.topic == topic and m.payload and needle in m.payload]

    return found


@dataclass
class Fleet:
    """Consoles under a root of this test's own (the session's broker keeps other tests'
    retained topics), a subscriber on their own topics, and a stranger's retained payloads."""

    broker: Broker
    root: str
    tmp_path: Path
    make_daemon: Callable[..., Daemon]
    sub: Subscriber
    daemons: dict[str, Daemon] = field(default_factory=dict)

    def start(self, gid: str, channel: str = "") -> None:
        standby = "standby = true\n" if not channel else ""
        text = (
            f'[gateway]\nid = "{gid}"\n{standby}state_dir = "{self.tmp_path / gid}"\n'
            f'[mqtt]\nurl = "{self.broker.url}"\nprefix = "{self.root}/{gid}"\n{channel}'
        )
        self.daemons[gid] = self.make_daemon(text, name=gid)
        self.daemons[gid].start()

    def wait(self, gid: str, leaf: str = "state", needle: bytes = b"") -> None:
        self.sub.wait(_topic_with(f"{self.root}/{gid}/{leaf}", needle), 20, f"{gid} {leaf}")

    def leave_hostile_payloads(self) -> None:
        stranger = Subscriber(self.broker.host, self.broker.port, [])
        for topic, payload in HOSTILE.items():
            info = stranger.client.publish(f"{self.root}/{topic}", payload, qos=1, retain=True)
            info.wait_for_publish(5)
        stranger.close()

    def run(self, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
        code = main(["fleet", "--broker", self.broker.url, "--prefix", self.root, *args])
        out, err = capsys.readouterr()
        return code, out, err


@pytest.fixture
def fleet_env(
    tmp_path: Path,
    broker: Broker,
    daemon_factory: Callable[..., Daemon],
    subscriber_factory: Callable[..., Subscriber],
) -> Iterator[Fleet]:
    root = f"fleet-{uuid.uuid4().hex[:8]}"
    # Only the gateways' own topics: every message this subscriber takes is contract-checked.
    own = [f"{root}/{g}/+" for g in ("pos-a", "pos-b", "pos-c")]
    sub = subscriber_factory([*own, f"{root}/pos-c/channels/+/state"])
    yield Fleet(broker, root, tmp_path, daemon_factory, sub)
    cleaner = Subscriber(broker.host, broker.port, [])
    for topic in HOSTILE:
        cleaner.client.publish(f"{root}/{topic}", b"", qos=1, retain=True).wait_for_publish(5)
    cleaner.close()


def _check_rows(rows: dict[str, dict[str, Any]]) -> None:
    assert sorted(rows) == ["deep", "intruder", "liar", "pos-a", "pos-b", "pos-c"]
    assert rows["pos-a"]["status"] == "online" and rows["pos-a"]["faults"] == 0
    assert rows["pos-a"]["malformed"] == 1  # the ghost channel: not its fault, but counted
    assert rows["pos-b"]["status"] == "offline" and rows["pos-b"]["since"]
    c = rows["pos-c"]
    assert c["status"] == "online" and c["standby"] is False and c["channels"] == 1
    assert c["faults"] >= 1 and "north:device_lost" in c["faulted"]
    for gid, malformed in (("intruder", 2), ("deep", 1), ("liar", 2)):
        row = rows[gid]
        assert row["malformed"] == malformed, row
        assert row["session"] is None and row["version"] is None and row["outbox_depth"] is None
    assert rows["intruder"]["status"] is None and rows["deep"]["status"] is None
    assert rows["liar"]["status"] == "online" and rows["liar"]["outbox_full"] is None


async def _check_live(env: Fleet) -> None:
    app = FleetApp(target=BrokerTarget.from_url(env.broker.url, prefix=env.root))
    async with app.run_test(size=(160, 30)):
        table = app.query_one("#fleet", DataTable)

        def cells(key: str) -> list[str]:
            if key not in table.rows:
                return []
            return [getattr(c, "plain", str(c)) for c in table.get_row(key)]

        await until(lambda: len(table.rows) == 6, what="six rows")
        assert cells("pos-b")[1] == "offline" and cells("pos-c")[1] == "online"
        assert cells("intruder")[1] == "?"
        # A gateway that stops shows as offline while the view runs.
        assert env.daemons["pos-a"].stop() == 0
        await until(lambda: cells("pos-a")[1:2] == ["offline"], what="pos-a offline")


def test_fleet_lists_every_gateway_from_retained_topics(
    fleet_env: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    env = fleet_env
    for gid in ("pos-a", "pos-b"):
        env.start(gid)
    for gid in ("pos-a", "pos-b"):
        env.wait(gid)

    # Two standby consoles, both online: exit 0, one row each.
    code, out, err = env.run(capsys, "--json")
    assert code == 0, err
    rows = _rows(out)
    assert sorted(rows) == ["pos-a", "pos-b"]
    a = rows["pos-a"]
    assert a["status"] == "online" and a["standby"] is True and a["channels"] == 0
    assert a["faults"] == 0 and isinstance(a["outbox_depth"], int) and a["outbox_full"] is False
    assert a["session"] >= 1 and a["version"] and a["since"] and a["malformed"] == 0
    assert a["prefix"] == f"{env.root}/pos-a"
    # A console's own config: its broker, and its prefix without its id as the root.
    assert main(["fleet", "-c", str(env.daemons["pos-a"].config_path), "--json"]) == 0
    assert sorted(_rows(capsys.readouterr().out)) == ["pos-a", "pos-b"]

    # A console with a radio interface that is not there (a fault), one stopped, strangers.
    radio = f'kind = "serial"\nurl = "rfc2217://127.0.0.1:{free_port()}"\n'
    env.start("pos-c", channel=f"[channels.north.radio]\n{radio}")
    assert env.daemons["pos-b"].stop() == 0
    env.leave_hostile_payloads()
    env.wait("pos-b", "status", b'"offline"')
    env.wait("pos-c", "channels/north/state", b"device_lost")

    code, out, err = env.run(capsys, "--json")
    assert code == 1, err
    _check_rows(_rows(out))

    code, out, err = env.run(capsys)
    assert code == 1, err
    assert out.splitlines()[0].split()[:3] == ["GATEWAY", "STATUS", "SESSION"]
    assert _table_row(out, "pos-b")[1] == "offline"
    assert _table_row(out, "pos-c")[1] == "online"
    assert _table_row(out, "intruder")[1:4] == ["?", "?", "?"]
    assert _table_row(out, "intruder")[-1] == "2"
    assert out.splitlines()[-1] == (
        "6 gateways, 3 online, 1 offline, 2 status unknown, 1 with faults, 6 malformed payloads"
    )

    asyncio.run(_check_live(env))


def test_fleet_exit_statuses_without_gateways(
    broker: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    root = f"fleet-{uuid.uuid4().hex[:8]}"
    code = main(["fleet", "--broker", broker.url, "--prefix", root, "--json"])
    out, err = capsys.readouterr()
    assert (code, json.loads(out)) == (1, [])
    assert f"no gateway found under {root}/" in err

    code = main(["fleet", "--broker", f"mqtt://127.0.0.1:{free_port()}", "--json"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert "cannot reach the broker" in err

    with pytest.raises(SystemExit) as exited:
        main(["fleet"])
    assert exited.value.code == 2
    with pytest.raises(SystemExit) as exited:
        main(["fleet", "--broker", broker.url, "--prefix", "a/+"])
    assert exited.value.code == 2


def test_a_hostile_payload_never_stops_the_view() -> None:
    view = FleetView(root="consolegw")
    payloads: list[bytes] = [
        b"",
        b"null",
        b"\x00\x01",
        b'"text"',
        b"1e999",
        b"{" * 50_000,
        b'{"state": {"nested": []}, "session": 1e300, "ts": "2026-13-40T99:00:00Z"}',
        b'{"faults": [null, 1, {}], "state": 3}',
        json.dumps({"state": "online", "version": "v\x1b[31m" + "x" * 10_000}).encode(),
    ]
    leaves = ("status", "state", "channels/x/state", "alarms/y/state", "modules/z/state")
    for payload in payloads:
        for leaf in leaves:
            view.apply(f"consolegw/gw\x07\u202e/{leaf}", payload)
            for row in view.rows():
                json.dumps(row.to_json())
                fleet.table([row])
    (row,) = view.rows()
    # Status and state (the version), the channel (no faults list); alarm and module read.
    assert row.malformed == 3
    assert row.status == "online" and row.version is None  # too long, escapes: not a version
    cells = row.cells()
    assert cells["gateway"] == "gw??" and cells["version"] == "?" and cells["faults"] == "?"
    # Cleared, every topic: the gateway is gone.
    for leaf in leaves:
        view.apply(f"consolegw/gw\x07\u202e/{leaf}", b"")
    assert view.rows() == []


def test_a_gateway_that_says_when_it_started_shows_its_uptime() -> None:
    view = FleetView(root="consolegw")
    view.apply(
        "consolegw/pos-1/status",
        b'{"state": "online", "session": 4, "ts": "2026-01-01T10:00:00Z", "version": "1.2"}',
    )
    view.apply(
        "consolegw/pos-1/state",
        json.dumps(
            {
                "gateway": "pos-1",
                "version": "1.2",
                "session": 4,
                "outbox_depth": 12,
                "outbox_full": True,
                "outbox_dropped": 0,
                "channels": ["north"],
                "standby": False,
                "started": "2026-01-01T08:00:00Z",
                "ts": "2026-01-01T10:00:01Z",
            }
        ).encode(),
    )
    view.apply(
        "consolegw/pos-1/channels/north/state",
        b'{"faults": ["stuck_ptt", "cos_stuck"], "ts": "2026-01-01T10:00:02Z"}',
    )
    view.apply("consolegw/pos-1/channels/removed/state", b'{"faults": ["device_lost"]}')
    now = datetime(2026, 1, 1, 11, 30, tzinfo=UTC)
    (row,) = view.rows(now)
    assert row.uptime_s == 3.5 * 3600 and row.faults == 2 and row.channels == 1
    assert row.faulted == ["north:stuck_ptt", "north:cos_stuck"] and not row.ok
    cells = row.cells(now)
    assert (cells["up"], cells["outbox"], cells["faults"]) == ("3h30m", "12 FULL", "2")

    # Without `started` (a gateway of an older version): how long this session has been up.
    view.apply("consolegw/pos-1/state", b'{"outbox_depth": 0, "channels": ["north"]}')
    (row,) = view.rows(now)
    assert row.uptime_s is None and row.cells(now)["up"] == "conn 1h30m"

    # Offline: when it was last heard from, the latest stamp of its retained payloads.
    view.apply(
        "consolegw/pos-1/status",
        b'{"state": "offline", "session": 4, "ts": "2026-01-01T10:00:00Z"}',
    )
    (row,) = view.rows(now)
    assert row.since == "2026-01-01T10:00:02Z" and row.cells(now)["up"] == "seen 1h29m ago"
