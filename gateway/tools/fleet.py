"""`consolegw fleet`: every gateway under a root prefix, from their retained topics only.

A center runs dozens of consoles on one broker, each under `<root>/<gateway id>/` (root
`consolegw` unless `mqtt.prefix` says otherwise). Their retained `status`, `state` and
channel, alarm and module states say enough for a row each: online or not, session,
version, uptime, faults, outbox. Nothing is sent to the gateways (no `request/status`), so a
fleet of any size costs one subscription, and a console that is down still shows, as its
Will left it.

Everything under the root is read as hostile: anyone with publish rights there can leave a
retained payload that is not JSON, not an object, or has fields of the wrong type. Such a
payload gives "?" (null in JSON) for what it should have said and is counted in the row's
`malformed`; it never stops the view.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.tools.mqtt_view import (
    BrokerTarget,
    BrokerUnreachable,
    Change,
    ConsoleView,
    MqttSession,
    json_object,
)

DEFAULT_ROOT = "consolegw"
MAX_TEXT = 64
"""A string field longer than this is not what a gateway sends (ids, versions, stamps)."""

EXIT_OK = 0
EXIT_PROBLEM = 1
"""A gateway is offline or unknown, has a fault, or none was found."""
EXIT_UNREACHABLE = 2
"""As a usage error: the check could not be made at all (broker, credentials, arguments)."""

COLUMNS = (
    ("gateway", "GATEWAY"),
    ("status", "STATUS"),
    ("session", "SESSION"),
    ("version", "VERSION"),
    ("up", "UP"),
    ("channels", "CH"),
    ("faults", "FAULTS"),
    ("outbox", "OUTBOX"),
    ("standby", "STANDBY"),
    ("alarms", "ALARMS"),
    ("modules", "IO-OFF"),
    ("malformed", "BAD"),
)
"""The table: (key of `cells()`, heading). `top --fleet` shows the same columns."""


# -- reading hostile payloads -------------------------------------------------------------


class _Bad:
    """A field that is present but not what a gateway sends."""


BAD = _Bad()


def _text(body: dict[str, Any], key: str) -> str | _Bad | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT or not value.isprintable():
        return BAD
    return value


def _count(body: dict[str, Any], key: str) -> int | _Bad | None:
    value = body.get(key)
    if value is None:
        return None
    # bool is an int to Python, not to a gateway; a negative depth or session is nonsense.
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return BAD
    return value


def _flag(body: dict[str, Any], key: str) -> bool | _Bad | None:
    value = body.get(key)
    if value is None:
        return None
    return value if isinstance(value, bool) else BAD


def _names(body: dict[str, Any], key: str) -> list[str] | _Bad | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return BAD
    return value


def _moment(text: str | _Bad | None) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def printable(text: str, limit: int = 40) -> str:
    """A topic level or field as one safe table cell: no control characters, bounded."""
    cleaned = "".join(c if unicodedata.category(c)[0] != "C" else "?" for c in text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


# -- the model ----------------------------------------------------------------------------


@dataclass(slots=True)
class GatewayRow:
    """One gateway as its retained topics describe it; None where they do not (or cannot)."""

    gateway: str
    """The topic level under the root: what the gateway's topics are found by."""
    prefix: str
    status: str | None = None
    session: int | None = None
    version: str | None = None
    since: str | None = None
    """Online: when this session connected (status `ts`). Offline: the latest time any of
    its retained payloads carries, a lower bound of when it went (a Will is stamped when it
    was set, at connection, not when it fired)."""
    started: str | None = None
    uptime_s: float | None = None
    """Online, from `started` in its state (gateways that publish it)."""
    channels: int | None = None
    faults: int | None = None
    faulted: list[str] = field(default_factory=list)
    """`<channel>:<fault>` for every active fault."""
    outbox_depth: int | None = None
    outbox_full: bool | None = None
    standby: bool | None = None
    alarms_active: int | None = None
    """Alarm inputs in state `active` (acknowledged or not)."""
    modules_offline: int | None = None
    """IO modules in state `offline`."""
    malformed: int = 0
    """Retained payloads under this gateway that could not be read (foreign or broken)."""

    @property
    def ok(self) -> bool:
        """Online, and known to have no fault: what exit status 0 needs of every row."""
        return self.status == "online" and self.faults == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "gateway": self.gateway,
            "prefix": self.prefix,
            "status": self.status,
            "session": self.session,
            "version": self.version,
            "since": self.since,
            "started": self.started,
            "uptime_s": None if self.uptime_s is None else round(self.uptime_s, 1),
            "channels": self.channels,
            "faults": self.faults,
            "faulted": self.faulted,
            "outbox_depth": self.outbox_depth,
            "outbox_full": self.outbox_full,
            "standby": self.standby,
            "alarms_active": self.alarms_active,
            "modules_offline": self.modules_offline,
            "malformed": self.malformed,
        }

    def cells(self, now: datetime | None = None) -> dict[str, str]:
        """The row as table text, "?" for what is unknown."""

        def shown(value: object) -> str:
            return "?" if value is None else printable(str(value))

        if self.uptime_s is not None:
            up = duration(self.uptime_s)
        elif (since := _moment(self.since)) is not None:
            # No uptime said: how long ago the session began, or the gateway was last heard.
            ago = duration(((now or datetime.now(UTC)) - since).total_seconds())
            up = f"conn {ago}" if self.status == "online" else f"seen {ago} ago"
        else:
            up = "?"
        outbox = shown(self.outbox_depth)
        if self.outbox_full:
            outbox += " FULL"
        elif self.outbox_full is None and self.outbox_depth is not None:
            outbox += " ?"
        standby = "?" if self.standby is None else ("yes" if self.standby else "no")
        return {
            "gateway": printable(self.gateway),
            "status": shown(self.status),
            "session": shown(self.session),
            "version": shown(self.version),
            "up": up,
            "channels": shown(self.channels),
            "faults": shown(self.faults),
            "outbox": outbox,
            "standby": standby,
            "alarms": shown(self.alarms_active),
            "modules": shown(self.modules_offline),
            "malformed": str(self.malformed) if self.malformed else "-",
        }


def duration(seconds: float) -> str:
    """3d4h, 2h05m, 7m12s, 40s: what a technician reads at a glance."""
    total = max(int(seconds), 0)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class FleetView:
    """Every gateway under `root`, fed one message at a time (as MqttSession feeds it).

    Each gateway's topics go to its own ConsoleView, which keeps the latest retained
    payload of each; rows are derived from them when asked, so a payload that arrives in
    pieces or is replaced by a good one later is judged as it is now.
    """

    def __init__(self, *, root: str = DEFAULT_ROOT) -> None:
        if not root or root.endswith("/") or any(c in root for c in "+#"):
            raise ValueError(
                f"root must be a topic prefix, no '+' or '#' and no '/' at its end: {root!r}"
            )
        self.root = root
        self.consoles: dict[str, ConsoleView] = {}
        self._unreadable: dict[str, set[str]] = {}
        """Gateway -> topics whose latest payload was not a JSON object."""
        self.messages = 0

    def topics(self) -> list[str]:
        """The subscriptions: the retained topics only, never events or responses."""
        return [
            f"{self.root}/+/status",
            f"{self.root}/+/state",
            f"{self.root}/+/channels/+/state",
            f"{self.root}/+/alarms/+/state",
            f"{self.root}/+/modules/+/state",
        ]

    def apply(self, topic: str, payload: bytes) -> Change | None:
        if not topic.startswith(self.root + "/"):
            return None
        gateway, _, rest = topic[len(self.root) + 1 :].partition("/")
        if not gateway or not rest:
            return None
        self.messages += 1
        console = self.consoles.get(gateway)
        if console is None:
            if not payload:
                return None  # a cleared topic of a gateway never seen: nothing to show
            console = self.consoles[gateway] = ConsoleView(prefix=f"{self.root}/{gateway}")
        unreadable = self._unreadable.setdefault(gateway, set())
        # An empty payload clears a retained topic; anything else must be a JSON object.
        if payload and json_object(payload) is None:
            unreadable.add(rest)
        else:
            unreadable.discard(rest)
        console.apply(topic, payload)
        return Change("gateway", gateway)

    def rows(self, now: datetime | None = None) -> list[GatewayRow]:
        """One row per gateway, sorted by id."""
        moment = now or datetime.now(UTC)
        return [self.row(gateway, moment) for gateway in sorted(self.consoles) if self.has(gateway)]

    def has(self, gateway: str) -> bool:
        """Whether anything of the gateway is retained (every topic cleared: it is gone)."""
        console = self.consoles.get(gateway)
        if console is None:
            return False
        return bool(
            console.status
            or console.gateway
            or console.channels
            or console.alarms
            or console.modules
            or self._unreadable.get(gateway)
        )

    def row(self, gateway: str, now: datetime | None = None) -> GatewayRow:
        console = self.consoles[gateway]
        row = GatewayRow(gateway=gateway, prefix=console.prefix)
        bad = set(self._unreadable.get(gateway, ()))
        stamps: list[datetime] = []
        if console.status:
            _read_status(row, console.status, bad)
        configured = None
        if console.gateway:
            configured = _read_state(row, console.gateway, bad, stamps)
        row.faults, row.faulted = self._faults(console, configured, bad, stamps)
        if row.channels is None and console.channels:
            row.channels = len(console.channels)
        alarms = self._count_states(console.alarms, "alarms", "active", bad)
        modules = self._count_states(console.modules, "modules", "offline", bad)
        if configured is None and not console.channels and row.faults == 0:
            # Neither its state nor any channel says: no fault seen is not "no fault".
            row.faults = None
        if configured is not None:
            # A readable state: no alarm or module topic means it has none.
            row.alarms_active, row.modules_offline = alarms or 0, modules or 0
        else:
            row.alarms_active, row.modules_offline = alarms, modules
        if row.status == "online":
            started_at = _moment(row.started)
            if started_at is not None:
                row.uptime_s = max(((now or datetime.now(UTC)) - started_at).total_seconds(), 0.0)
        elif row.status == "offline":
            stamps.extend(m for m in (_moment(row.since),) if m is not None)
            if stamps:
                row.since = max(stamps).isoformat().replace("+00:00", "Z")
        row.malformed = len(bad)
        return row

    @staticmethod
    def _faults(
        console: ConsoleView,
        configured: list[str] | None,
        bad: set[str],
        stamps: list[datetime],
    ) -> tuple[int | None, list[str]]:
        """Active faults over the channels the gateway says it runs (when it says: a retained
        state left by a channel since removed from its config is not its fault), None when a
        channel's state cannot be read."""
        total: int | None = 0
        faulted: list[str] = []
        wanted = set(configured) if configured is not None else None
        for channel, body in sorted(console.channels.items()):
            faults = _names(body, "faults")
            if not isinstance(faults, list):
                bad.add(f"channels/{channel}/state")
            if wanted is not None and channel not in wanted:
                continue
            if not isinstance(faults, list):
                total = None
                continue
            stamp = _moment(_text(body, "ts"))
            if stamp is not None:
                stamps.append(stamp)
            faulted.extend(f"{channel}:{f}" for f in faults)
            if total is not None:
                total += len(faults)
        # A channel whose state is not a JSON object is gone from ConsoleView, not silent.
        for topic in _unreadable_channels(bad):
            channel = topic.split("/")[1]
            if wanted is None or channel in wanted:
                total = None
        return total, faulted

    @staticmethod
    def _count_states(
        table: dict[str, dict[str, Any]], scope: str, wanted: str, bad: set[str]
    ) -> int | None:
        count = 0
        for key, body in table.items():
            state = _text(body, "state")
            if not isinstance(state, str):
                bad.add(f"{scope}/{key}/state")
                continue
            count += state == wanted
        return count if table else None


def _unreadable_channels(topics: Iterable[str]) -> list[str]:
    return [t for t in topics if t.startswith("channels/") and t.endswith("/state")]


# -- output -------------------------------------------------------------------------------


def table(rows: list[GatewayRow], now: datetime | None = None) -> str:
    """The rows as a plain text table (no colours: it is read in a terminal and in mail)."""
    cells = [row.cells(now) for row in rows]
    widths = {key: max([len(heading)] + [len(c[key]) for c in cells]) for key, heading in COLUMNS}
    lines = ["  ".join(heading.ljust(widths[key]) for key, heading in COLUMNS).rstrip()]
    for c in cells:
        lines.append("  ".join(c[key].ljust(widths[key]) for key, _ in COLUMNS).rstrip())
    return "\n".join(lines)


def summary(rows: list[GatewayRow]) -> str:
    online = sum(r.status == "online" for r in rows)
    offline = sum(r.status == "offline" for r in rows)
    unknown = len(rows) - online - offline
    faulted = sum(bool(r.faults) for r in rows)
    malformed = sum(r.malformed for r in rows)
    parts = [f"{len(rows)} gateways", f"{online} online", f"{offline} offline"]
    if unknown:
        parts.append(f"{unknown} status unknown")
    parts.append(f"{faulted} with faults")
    if malformed:
        parts.append(f"{malformed} malformed payloads")
    return ", ".join(parts)


def exit_status(rows: list[GatewayRow]) -> int:
    return EXIT_OK if rows and all(row.ok for row in rows) else EXIT_PROBLEM


# -- command line -------------------------------------------------------------------------


def root_from_args(args: argparse.Namespace) -> BrokerTarget:
    """The broker (from -c or --broker) with the fleet's root as the target's prefix.

    The root is --prefix, else the config's prefix without its last level (the gateway's
    own id: `consolegw/pos-04` -> `consolegw`), else `consolegw`."""
    if args.config is not None:
        from gateway.config import load_config

        config = load_config(args.config)
        target = BrokerTarget.from_config(config, broker=args.broker)
        root = args.prefix or (config.prefix.rpartition("/")[0] or DEFAULT_ROOT)
        return BrokerTarget(mqtt=target.mqtt, prefix=root, password=target.password, tls=target.tls)
    if args.broker is None:
        args.parser.error("give -c CONFIG or --broker URL")
    return BrokerTarget.from_url(args.broker, prefix=args.prefix or DEFAULT_ROOT)


def check_root(args: argparse.Namespace, root: str) -> None:
    try:
        FleetView(root=root)
    except ValueError as exc:
        args.parser.error(f"--prefix: {exc}")


async def collect(
    target: BrokerTarget, *, connect_s: float = 10.0, settle_s: float = 3.0
) -> FleetView:
    """Connect, take the retained topics under the root until they have all come, return.

    "All come" is told by a probe: the broker delivers the retained messages of a
    subscription before a message we publish after it (`MqttSession.settle`); a broker
    that drops the probe costs `settle_s`. Raises BrokerUnreachable."""
    view = FleetView(root=target.prefix)
    session = MqttSession(
        target=target, view=view, topics=view.topics(), client_name="consolegw-fleet"
    )
    await session.take_retained(connect_s=connect_s, settle_s=settle_s)
    return view


def report(view: FleetView, *, as_json: bool) -> int:
    """Print the fleet (table or JSON) and return the exit status."""
    now = datetime.now(UTC)
    rows = view.rows(now)
    if as_json:
        print(json.dumps([row.to_json() for row in rows], indent=2))
    elif rows:
        print(table(rows, now))
        print(summary(rows))
    if not rows:
        print(
            f"consolegw: no gateway found under {view.root}/ (no retained status or state "
            "there): wrong --prefix or broker, or no gateway ever connected to it",
            file=sys.stderr,
        )
    return exit_status(rows)


def run(args: argparse.Namespace) -> int:
    target = root_from_args(args)
    check_root(args, target.prefix)
    try:
        view = asyncio.run(collect(target, settle_s=args.settle))
    except BrokerUnreachable as exc:
        # Not ToolError's status 1: that says "a gateway is down", this that nobody looked.
        print(f"consolegw: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    return report(view, as_json=args.json)


def _read_status(row: GatewayRow, status: dict[str, Any], bad: set[str]) -> None:
    """`<prefix>/status` into the row; a field of the wrong kind marks the payload bad."""
    state = _text(status, "state")
    row.status = state if isinstance(state, str) and state in ("online", "offline") else None
    session = _count(status, "session")
    row.session = session if isinstance(session, int) else None
    version = _text(status, "version")
    row.version = version if isinstance(version, str) else None
    since = _text(status, "ts")
    row.since = since if isinstance(since, str) and _moment(since) is not None else None
    if (
        row.status is None
        or isinstance(session, _Bad)
        or isinstance(version, _Bad)
        or row.since is None
    ):
        bad.add("status")


def _read_state(
    row: GatewayRow, state: dict[str, Any], bad: set[str], stamps: list[datetime]
) -> list[str] | None:
    """`<prefix>/state` into the row (status says session and version first); returns the
    configured channel ids, None when it does not say them."""
    session = _count(state, "session")
    version = _text(state, "version")
    depth = _count(state, "outbox_depth")
    full = _flag(state, "outbox_full")
    standby = _flag(state, "standby")
    started = _text(state, "started")
    channels = _names(state, "channels")
    fields: tuple[object, ...] = (session, version, depth, full, standby, started, channels)
    if any(isinstance(v, _Bad) for v in fields) or (
        started is not None and _moment(started) is None
    ):
        bad.add("state")
    if row.session is None and isinstance(session, int):
        row.session = session
    if row.version is None and isinstance(version, str):
        row.version = version
    row.outbox_depth = depth if isinstance(depth, int) else None
    row.outbox_full = full if isinstance(full, bool) else None
    row.standby = standby if isinstance(standby, bool) else None
    row.started = started if isinstance(started, str) and _moment(started) else None
    if (stamp := _moment(_text(state, "ts"))) is not None:
        stamps.append(stamp)
    if isinstance(channels, list):
        row.channels = len(channels)
        return channels
    return None
