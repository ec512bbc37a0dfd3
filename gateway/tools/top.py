"""`consolegw top`: a live view of one console, built only from the daemon's MQTT topics.

Because it reads the retained state and the events (never the hardware), it works over SSH
on the console PC and from a laptop on the network alike, and it cannot disturb the daemon:
the only things it sends are requests the daemon validates like any CAD request (a 5 s test
key with a lease, an alarm acknowledgement, a recall), each after the technician confirms.

Extension points (the audio and TTY work plugs in here, no change to the app needed):
- `CHANNEL_COLUMNS`: the channel table's columns; each renders from the channel's state and
  its other retained topics by leaf name (`<prefix>/channels/<id>/audio` as "audio": the
  Level column; a `.../tty` topic would arrive as "tty" with no change to the model).
- `EVENT_DETAILS`: one formatter per event type for the log line (e.g. `tty.text`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, TextIO

from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Footer, Label, RichLog, Static
from textual.widgets.data_table import CellDoesNotExist, RowDoesNotExist

from gateway.tools import ToolError, fleet
from gateway.tools.mqtt_view import BrokerTarget, Change, ConsoleView, MqttSession

KEY_SECONDS = 5.0
"""The test key's lease: the daemon unkeys after this even if this tool dies."""
RECALL_SECONDS = 30
LEVEL_FLOOR_DBFS = -60.0
"""The level bar's empty end; 0 dBFS is full."""
LEVEL_WIDTH = 12

Extras = dict[str, dict[str, Any]]
"""A channel's retained topics other than its state, by leaf: {"audio": {...}}."""


# -- rendering (pure functions: the tests and the lead's extensions use them) -------------


def level_bar(audio: dict[str, Any] | None, width: int = LEVEL_WIDTH) -> Text:
    """A bar for `rms_dbfs` (LEVEL_FLOOR_DBFS..0), dim when not `active`; blank if unknown."""
    if not audio:
        return Text("")
    if audio.get("device") == "offline":
        return Text("audio offline", style="bold red")
    if not isinstance(audio.get("rms_dbfs"), int | float):
        return Text("")
    dbfs = float(audio["rms_dbfs"])
    fraction = min(max((dbfs - LEVEL_FLOOR_DBFS) / -LEVEL_FLOOR_DBFS, 0.0), 1.0)
    filled = round(fraction * width)
    style = "green" if dbfs < -12 else ("yellow" if dbfs < -3 else "bold red")
    if not audio.get("active", True):
        style = "dim"
    bar = Text("█" * filled, style=style)
    bar.append("·" * (width - filled), style="dim")
    bar.append(f" {dbfs:5.1f}", style="dim" if style == "dim" else "")
    return bar


def _on_off(value: Any, *, on_style: str) -> Text:
    if value is True:
        return Text("ON", style=on_style)
    if value is False:
        return Text("off", style="dim")
    return Text("?")


def _ptt_cell(state: dict[str, Any], extra: Extras) -> Text:
    cell = _on_off(state.get("ptt"), on_style="bold white on red")
    if state.get("ptt") and not state.get("ptt_readback"):
        cell.append("*", style="yellow")  # commanded, not read back: see the table title
    return cell


def _state_cell(state: dict[str, Any], extra: Extras) -> Text:
    value = str(state.get("state", "?"))
    styles = {
        "fault": "bold red",
        "transmitting": "bold red",
        "both": "bold magenta",
        "receiving": "bold green",
        "idle": "",
    }
    return Text(value, style=styles.get(value, "yellow"))


def _device_cell(state: dict[str, Any], extra: Extras) -> Text:
    value = str(state.get("device", "?"))
    return Text(value, style={"online": "green", "offline": "bold red"}.get(value, "dim"))


def _faults_cell(state: dict[str, Any], extra: Extras) -> Text:
    faults = state.get("faults") or []
    return Text(", ".join(str(f) for f in faults), style="bold red") if faults else Text("-")


def _tx_cell(state: dict[str, Any], extra: Extras) -> Text:
    remaining = state.get("tx_remaining_s")
    if not state.get("ptt") or not isinstance(remaining, int | float):
        return Text("")
    return Text(f"{remaining:.0f} s", style="bold yellow" if remaining < 10 else "")


def _unit_cell(state: dict[str, Any], extra: Extras) -> Text:
    last = state.get("last_unit")
    if not isinstance(last, dict) or not isinstance(last.get("unit"), str):
        return Text("")
    if last.get("kind") == "emergency":
        return Text(f"{last['unit']} EMERGENCY", style="bold white on red")
    return Text(str(last["unit"]))


@dataclass(frozen=True, slots=True)
class ChannelColumn:
    key: str
    label: str
    render: Callable[[dict[str, Any], Extras], Text | str]
    """(channel state payload, the channel's other retained topics by leaf) -> cell."""


CHANNEL_COLUMNS: list[ChannelColumn] = [
    ChannelColumn("channel", "Channel", lambda s, x: str(s.get("channel", ""))),
    ChannelColumn("name", "Name", lambda s, x: str(s.get("name", ""))),
    ChannelColumn("state", "State", _state_cell),
    ChannelColumn("ptt", "PTT", _ptt_cell),
    ChannelColumn("cos", "COS", lambda s, x: _on_off(s.get("cos"), on_style="bold green")),
    ChannelColumn("device", "Device", _device_cell),
    ChannelColumn("level", "Level (dBFS)", lambda s, x: level_bar(x.get("audio"))),
    ChannelColumn("faults", "Faults", _faults_cell),
    ChannelColumn("tx", "TX left", _tx_cell),
    ChannelColumn("unit", "Unit", _unit_cell),
]
"""The channel table. Append a ChannelColumn to show more (before the app starts)."""


ALARM_COLUMNS = ("Alarm", "Name", "Priority", "State", "Input", "Ack", "Module")
MODULE_COLUMNS = ("Module", "Model", "State", "Last error")
"""No poll counts: the module state is republished only when it changes, so they would be
stale (the Prometheus endpoint has live ones)."""


def _alarm_cells(alarm: dict[str, Any]) -> list[Text | str]:
    state = str(alarm.get("state", "?"))
    style = {"active": "bold white on red", "trouble": "bold yellow", "unknown": "bold red"}
    ack = alarm.get("acknowledged")
    return [
        str(alarm.get("alarm", "")),
        str(alarm.get("name", "")),
        str(alarm.get("priority", "")),
        Text(state, style=style.get(state, "")),
        str(alarm.get("input", "?")),
        ("yes" if ack else "no") if state == "active" else "-",
        Text("online", style="green")
        if alarm.get("module_online")
        else Text("offline", style="bold red"),
    ]


def _module_cells(module: dict[str, Any]) -> list[Text | str]:
    state = str(module.get("state", "?"))
    return [
        str(module.get("module", "")),
        str(module.get("model", "")),
        Text(state, style={"online": "green", "offline": "bold red"}.get(state, "yellow")),
        str(module.get("last_error") or "-"),
    ]


def _detail_fault(data: dict[str, Any]) -> str:
    return f"{data.get('fault')}: {data.get('message', '')}"


def _detail_ptt(data: dict[str, Any]) -> str:
    who = data.get("requested_by")
    return f"{data.get('reason', '')}" + (f" by {who}" if who else "")


def _detail_alarm(data: dict[str, Any]) -> str:
    return f"{data.get('name')} ({data.get('priority')}), input {data.get('input')}"


EVENT_DETAILS: dict[str, Callable[[dict[str, Any]], str]] = {
    "fault.raised": _detail_fault,
    "fault.cleared": _detail_fault,
    "ptt.on": _detail_ptt,
    "ptt.off": _detail_ptt,
    "alarm.acknowledged": lambda d: f"{d.get('name')} by {d.get('acknowledged_by')}",
    "alarm.raised": _detail_alarm,
    "alarm.restored": _detail_alarm,
    "alarm.cleared": _detail_alarm,
    "trouble.raised": lambda d: f"{d.get('name')}: {d.get('message')}",
    "trouble.cleared": lambda d: f"{d.get('name')}: {d.get('message')}",
    "recall.saved": lambda d: f"{d.get('seconds')} s ({d.get('reason')}): {d.get('path')}",
}
"""Event type -> one-line detail from its `data`. Others fall back to `_default_detail`."""


def _default_detail(data: dict[str, Any]) -> str:
    for key in ("message", "text", "input", "name"):
        if data.get(key) not in (None, ""):
            return str(data[key])
    return ""


def local_time(ts: Any) -> str:
    """An RFC 3339 stamp as local wall-clock time, what a technician compares with."""
    try:
        moment = datetime.fromisoformat(str(ts).replace("Z", "+00:00"))
    except ValueError:
        return str(ts)
    return moment.astimezone().strftime("%H:%M:%S.%f")[:-3]


def format_event(event: dict[str, Any]) -> Text:
    kind = str(event.get("type", "?"))
    data = event.get("data") if isinstance(event.get("data"), dict) else {}
    assert isinstance(data, dict)
    detail = EVENT_DETAILS.get(kind, _default_detail)(data)
    style = ""
    if kind.endswith(".raised") or kind in ("ptt.on", "module.offline", "outbox.full"):
        style = "bold red" if kind != "ptt.on" else "red"
    elif kind.endswith((".cleared", ".online", ".ok")):
        style = "green"
    line = Text(f"{local_time(event.get('ts'))} #{event.get('seq', '?'):<6} ", style="dim")
    line.append(f"{event.get('source_id', '?'):<14} ")
    line.append(f"{kind:<18}", style=style)
    line.append(f" {detail}")
    return line


def format_response(what: str, response: dict[str, Any]) -> str:
    if response.get("status") == "ok":
        data = response.get("data") or {}
        shown = " ".join(f"{k}={v}" for k, v in data.items() if k != "faults" or v)
        return f"{what}: ok {shown}".rstrip()
    return f"{what}: {response.get('status', 'error')}: {response.get('error')}"


# -- screens ------------------------------------------------------------------------------


class ConfirmScreen(ModalScreen[bool]):
    """Yes/no before anything that acts on the console (keys a radio, acks an alarm)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n", "answer(False)", "No"),
        Binding("escape", "answer(False)", "Cancel"),
    ]
    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical {
        width: 70; height: auto; border: thick $error; background: $surface; padding: 1 2;
    }
    ConfirmScreen Horizontal { height: auto; margin-top: 1; }
    ConfirmScreen Button { margin-right: 2; }
    """

    def __init__(self, question: str, yes_label: str) -> None:
        super().__init__()
        self._question = question
        self._yes_label = yes_label

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self._question, id="question")
            with Horizontal():
                yield Button(f"{self._yes_label} (y)", id="yes", variant="error")
                yield Button("Cancel (n)", id="no", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()  # Enter alone must not transmit

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class TopApp(App[None]):
    """The live console view. Keys: k key a channel, a acknowledge an alarm, r recall, q quit."""

    TITLE = "consolegw top"
    CSS = """
    #gateway { height: 1; padding: 0 1; background: $boost; }
    #response { height: 1; padding: 0 1; color: $text-muted; }
    .title { height: 1; padding: 0 1; text-style: bold; }
    #channels { height: auto; max-height: 45%; }
    #lower { height: auto; max-height: 35%; }
    #alarms-box { width: auto; max-width: 60%; height: auto; margin-right: 2; }
    #modules-box { width: 1fr; height: auto; }
    #alarms, #modules { height: auto; }
    #events { height: 1fr; min-height: 4; border-top: solid $primary; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("k", "key_channel", "Key channel (test)"),
        Binding("a", "ack_alarm", "Ack alarm"),
        Binding("r", "recall", "Recall"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self,
        *,
        target: BrokerTarget,
        key_seconds: float = KEY_SECONDS,
        recall_seconds: int = RECALL_SECONDS,
        record: Path | None = None,
    ) -> None:
        super().__init__()
        if not 0 < key_seconds <= 30:
            raise ValueError(f"key_seconds must be in (0, 30], not {key_seconds!r}")
        self.target = target
        self.key_seconds = key_seconds
        self.recall_seconds = recall_seconds
        self.view = ConsoleView(prefix=target.prefix)
        self.session = MqttSession(
            target=target, view=self.view, on_change=self._changed, client_name="consolegw-top"
        )
        self.record = record
        self._record_file: TextIO | None = None
        self.log_lines: list[str] = []
        """Plain text of every log line, oldest first (what the log widget shows)."""
        self.last_response = ""

    # -- layout ---------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static(f"connecting to {self.target.description} ...", id="gateway")
        yield Static(
            "Channels  (PTT* = commanded, no read-back on this interface)", classes="title"
        )
        yield DataTable(id="channels", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="lower"):
            with Vertical(id="alarms-box"):
                yield Static("Alarms", classes="title")
                yield DataTable(id="alarms", cursor_type="row")
            with Vertical(id="modules-box"):
                yield Static("IO modules", classes="title")
                yield DataTable(id="modules", cursor_type="row")
        yield Static("", id="response")
        yield RichLog(id="events", max_lines=2000, wrap=False)
        yield Footer()

    def on_mount(self) -> None:
        channels = self.query_one("#channels", DataTable)
        for column in CHANNEL_COLUMNS:
            channels.add_column(column.label, key=column.key)
        for selector, labels in (("#alarms", ALARM_COLUMNS), ("#modules", MODULE_COLUMNS)):
            table = self.query_one(selector, DataTable)
            for label in labels:
                table.add_column(label, key=label)
        channels.focus()
        if self.record is not None:
            self._record_file = self.record.open("a", encoding="utf-8")
        self.run_worker(self.session.run(), name="mqtt", exit_on_error=False)

    def on_unmount(self) -> None:
        if self._record_file is not None:
            self._record_file.close()
            self._record_file = None

    # -- view updates (called on the app's loop by the session) ---------------------------

    def _changed(self, change: Change) -> None:
        if change.kind == "channel":
            self._update_channel(change.key)
        elif change.kind == "alarm":
            self._update_row("#alarms", change.key, self.view.alarms.get(change.key), _alarm_cells)
        elif change.kind == "module":
            self._update_row(
                "#modules", change.key, self.view.modules.get(change.key), _module_cells
            )
        elif change.kind == "event":
            self._log_line(format_event(change.body))
            if self._record_file is not None:
                # JSON lines, as `consolegw plot --events` reads them.
                self._record_file.write(json.dumps(change.body) + "\n")
                self._record_file.flush()
        elif change.kind in ("status", "gateway", "link"):
            self._update_header()
            if change.kind == "link" and change.key == "disconnected":
                self._log_line(
                    Text(f"broker connection lost: {change.body.get('error')}", "bold red")
                )

    def _update_header(self) -> None:
        status = self.view.status or {}
        gateway = self.view.gateway or {}
        line = Text()
        line.append(f"gateway {gateway.get('gateway') or self.target.prefix}  ", style="bold")
        state = status.get("state")
        if state == "online":
            line.append("ONLINE", style="bold green")
        elif state == "offline":
            line.append("OFFLINE (shown state is stale)", style="bold white on red")
        else:
            line.append("no status yet", style="yellow")
        if status.get("session") is not None:
            line.append(f"  session {status['session']}")
        if gateway:
            depth = gateway.get("outbox_depth")
            full = " FULL" if gateway.get("outbox_full") else ""
            line.append(f"  outbox {depth}{full}", style="bold red" if full else "")
            line.append(f"  v{gateway.get('version', '?')}", style="dim")
        broker = "connected" if self.session.connected else f"DOWN ({self.session.error})"
        line.append(f"  broker {self.target.mqtt.url} {broker}", style="dim")
        self.query_one("#gateway", Static).update(line)

    def _update_channel(self, channel_id: str) -> None:
        state = self.view.channels.get(channel_id)
        table = self.query_one("#channels", DataTable)
        if state is None:
            if self.view.extras.get(channel_id):
                return  # audio before state: the row comes with the state
            self._remove_row(table, channel_id)
            return
        extra = self.view.extras.get(channel_id, {})
        cells = [column.render(state, extra) for column in CHANNEL_COLUMNS]
        self._put_row(table, channel_id, cells, [c.key for c in CHANNEL_COLUMNS])

    def _update_row(
        self,
        selector: str,
        key: str,
        body: dict[str, Any] | None,
        cells: Callable[[dict[str, Any]], list[Text | str]],
    ) -> None:
        table = self.query_one(selector, DataTable)
        if body is None:
            self._remove_row(table, key)
            return
        labels = ALARM_COLUMNS if selector == "#alarms" else MODULE_COLUMNS
        self._put_row(table, key, cells(body), list(labels))

    @staticmethod
    def _put_row(
        table: DataTable[Any], key: str, cells: list[Text | str], columns: list[str]
    ) -> None:
        if key not in table.rows:
            table.add_row(*cells, key=key)
            return
        for column, cell in zip(columns, cells, strict=True):
            table.update_cell(key, column, cell, update_width=True)

    @staticmethod
    def _remove_row(table: DataTable[Any], key: str) -> None:
        with contextlib.suppress(CellDoesNotExist, RowDoesNotExist):
            table.remove_row(key)

    def _log_line(self, line: Text) -> None:
        self.log_lines.append(line.plain)
        self.query_one("#events", RichLog).write(line)

    def _respond(self, text: str) -> None:
        self.last_response = text
        style = "red" if ": error" in text else "green"
        self.query_one("#response", Static).update(Text(text, style=style))
        self._log_line(Text(f"{'':>22}> {text}", style=style))

    # -- actions --------------------------------------------------------------------------

    def selected(self, selector: str) -> str | None:
        """The row key under the cursor of a table, or None when it is empty."""
        table = self.query_one(selector, DataTable)
        if table.row_count == 0:
            return None
        row_key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        return None if row_key.value is None else str(row_key.value)

    def action_key_channel(self) -> None:
        channel = self.selected("#channels")
        if channel is None:
            self._respond("key: no channel selected")
            return
        name = self.view.channels.get(channel, {}).get("name", channel)
        question = (
            f"Key {channel} ({name}) for {self.key_seconds:g} s?\n"
            "This TRANSMITS on the air. The daemon unkeys it after the lease."
        )

        def confirmed(answer: bool | None) -> None:
            if answer:
                self.run_worker(self._send_ptt(channel), name="ptt", group="requests")
            else:
                self._respond(f"key {channel}: cancelled")

        self.push_screen(ConfirmScreen(question, "Key it"), confirmed)

    async def _send_ptt(self, channel: str) -> None:
        self._respond(f"ptt {channel}: sending (lease {self.key_seconds:g} s) ...")
        response = await self.session.request(
            f"channels/{channel}", "ptt", {"state": "on", "duration_s": self.key_seconds}
        )
        self._respond(format_response(f"ptt {channel}", response))

    def action_ack_alarm(self) -> None:
        alarm = self.selected("#alarms")
        if alarm is None:
            self._respond("ack: no alarm selected (Tab to the alarm table)")
            return
        name = self.view.alarms.get(alarm, {}).get("name", alarm)

        def confirmed(answer: bool | None) -> None:
            if answer:
                self.run_worker(self._send_ack(alarm), name="ack", group="requests")
            else:
                self._respond(f"ack {alarm}: cancelled")

        question = f"Acknowledge alarm {alarm} ({name}) for everyone watching it?"
        self.push_screen(ConfirmScreen(question, "Acknowledge"), confirmed)

    async def _send_ack(self, alarm: str) -> None:
        response = await self.session.request(f"alarms/{alarm}", "ack", {})
        self._respond(format_response(f"ack {alarm}", response))

    def action_recall(self) -> None:
        channel = self.selected("#channels")
        if channel is None:
            self._respond("recall: no channel selected")
            return
        self.run_worker(self._send_recall(channel), name="recall", group="requests")

    async def _send_recall(self, channel: str) -> None:
        self._respond(f"recall {channel}: last {self.recall_seconds} s requested ...")
        response = await self.session.request(
            f"channels/{channel}", "recall", {"seconds": self.recall_seconds}
        )
        self._respond(format_response(f"recall {channel}", response))


class FleetApp(App[None]):
    """`top --fleet`: every gateway under the root, one row each, as `consolegw fleet`
    prints them, updated as their retained topics change. Read-only: q quits."""

    TITLE = "consolegw top --fleet"
    CSS = """
    #fleet-header { height: 1; padding: 0 1; background: $boost; }
    #fleet { height: 1fr; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("q", "quit", "Quit")]

    def __init__(self, *, target: BrokerTarget) -> None:
        super().__init__()
        self.target = target
        self.view = fleet.FleetView(root=target.prefix)
        self.session = MqttSession(
            target=target,
            view=self.view,
            topics=self.view.topics(),
            on_change=self._changed,
            client_name="consolegw-top",
        )

    def compose(self) -> ComposeResult:
        yield Static(f"connecting to {self.target.description} ...", id="fleet-header")
        yield DataTable(id="fleet", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#fleet", DataTable)
        for key, heading in fleet.COLUMNS:
            table.add_column(heading, key=key)
        table.focus()
        # Uptimes and "seen ... ago" move with the clock, not only with messages.
        self.set_interval(1.0, self.refresh_all)
        self.run_worker(self.session.run(), name="mqtt", exit_on_error=False)

    def _changed(self, change: Change) -> None:
        if change.kind == "gateway":
            self._update(change.key)
        self._update_header()

    def refresh_all(self) -> None:
        for gateway in list(self.view.consoles):
            self._update(gateway)
        self._update_header()

    def _update(self, gateway: str) -> None:
        table = self.query_one("#fleet", DataTable)
        if not self.view.has(gateway):
            TopApp._remove_row(table, gateway)
            return
        row = self.view.row(gateway)
        cells = fleet_cells(row)
        keys = [key for key, _ in fleet.COLUMNS]
        if gateway not in table.rows:
            table.add_row(*cells, key=gateway)
            table.sort("gateway")
            return
        for key, cell in zip(keys, cells, strict=True):
            table.update_cell(gateway, key, cell, update_width=True)

    def _update_header(self) -> None:
        rows = self.view.rows()
        line = Text()
        line.append(f"fleet {self.target.prefix}/  ", style="bold")
        if rows:
            line.append(fleet.summary(rows), style="" if fleet.exit_status(rows) == 0 else "bold")
        else:
            line.append("no gateway found yet", style="yellow")
        broker = "connected" if self.session.connected else f"DOWN ({self.session.error})"
        line.append(f"  broker {self.target.mqtt.url} {broker}", style="dim")
        self.query_one("#fleet-header", Static).update(line)


def fleet_cells(row: fleet.GatewayRow) -> list[Text]:
    """The fleet table's cells for one row, coloured where a technician should look."""
    text = row.cells()
    styles = {
        "status": {"online": "bold green", "offline": "bold white on red"}.get(
            text["status"], "bold yellow"
        ),
        "faults": "bold red" if row.faults else ("" if row.faults == 0 else "yellow"),
        "outbox": "bold red" if row.outbox_full else "",
        "modules": "bold red" if row.modules_offline else "",
        "alarms": "bold red" if row.alarms_active else "",
        "malformed": "yellow" if row.malformed else "dim",
    }
    return [Text(text[key], style=styles.get(key, "")) for key, _ in fleet.COLUMNS]


# -- command line -------------------------------------------------------------------------


def target_from_args(args: argparse.Namespace) -> BrokerTarget:
    """-c CONFIG (credentials, TLS, prefix from it), or --broker URL with --gateway/--prefix."""
    if args.config is not None:
        from gateway.config import load_config

        target = BrokerTarget.from_config(load_config(args.config), broker=args.broker)
        if args.prefix:
            target = BrokerTarget(
                mqtt=target.mqtt, prefix=args.prefix, password=target.password, tls=target.tls
            )
        return target
    if args.broker is None:
        args.parser.error("give -c CONFIG, or --broker URL with --gateway ID (or --prefix)")
    if not (args.gateway or args.prefix):
        args.parser.error("--broker needs --gateway ID (or --prefix PREFIX)")
    return BrokerTarget.from_url(args.broker, prefix=args.prefix or f"consolegw/{args.gateway}")


async def snapshot(target: BrokerTarget, *, connect_s: float = 10.0) -> dict[str, Any]:
    """Connect, collect the retained state, return it (`top --json`). Raises ToolError."""
    session = MqttSession(
        target=target, view=ConsoleView(prefix=target.prefix), client_name="consolegw-top"
    )
    await session.take_retained(connect_s=connect_s)
    if session.view.status is None and not session.view.channels:
        raise ToolError(
            f"nothing retained under {target.prefix}/: wrong --gateway/--prefix, "
            "or the daemon never connected to this broker"
        )
    return session.view.snapshot()


def run(args: argparse.Namespace) -> int:
    if args.fleet:
        return _run_fleet(args)
    target = target_from_args(args)
    if args.json:
        print(json.dumps(asyncio.run(snapshot(target)), indent=2))
        return 0
    if not sys.stdout.isatty():
        raise ToolError("top needs a terminal; use --json for a one-shot snapshot")
    record = Path(args.record) if args.record else None
    if record is not None:
        try:
            record.open("a", encoding="utf-8").close()
        except OSError as exc:
            raise ToolError(f"--record {record}: {exc.strerror}") from None
    TopApp(target=target, key_seconds=args.key_seconds, record=record).run()
    return 0


def _run_fleet(args: argparse.Namespace) -> int:
    if args.gateway or args.record:
        args.parser.error("--fleet shows every gateway: no --gateway or --record with it")
    if args.json:
        return fleet.run(args)  # the same document as `consolegw fleet --json`
    target = fleet.root_from_args(args)
    fleet.check_root(args, target.prefix)
    if not sys.stdout.isatty():
        raise ToolError("top needs a terminal; use consolegw fleet for a one-shot table")
    FleetApp(target=target).run()
    return 0
