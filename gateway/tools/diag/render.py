"""The report as rich tables for a terminal: the inventory (each radio kind's devices, the
sound cards, the Modbus modules), then the checks and the verdict."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from gateway.tools.diag.core import DiagReport


def _table(title: str, columns: Iterable[str]) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _print_table(console: Any, table: Any) -> None:
    if table.row_count == 0:
        table.add_row("(none found)", *[""] * (len(table.columns) - 1), style="dim")
    console.print(table)


def _serial_ports(ports: list[dict[str, Any]]) -> Any:
    table = _table("Serial ports", ("device", "stable names", "description", "USB", "channels"))
    for port in ports:
        names = "\n".join(port["by_id"] + port["by_path"]) or "-"
        style = "" if port["present"] else "bold red"
        table.add_row(
            port["device"],
            names,
            port["description"] or "-",
            port["usb"] or "-",
            ", ".join(port["channels"]) or "-",
            style=style,
        )
    return table


def _usb_interfaces(devices: list[dict[str, Any]]) -> Any:
    table = _table(
        "USB radio interfaces (CM108 family)",
        ("USB id", "model", "port path", "serial", "HID", "channels", "via"),
    )
    for dev in devices:
        table.add_row(
            dev["usb"],
            dev["model"],
            dev["port_path"] or "?",
            dev["serial_number"] or "?",
            "yes" if dev["hid_interface"] else "NO",
            ", ".join(dev["channels"]) or "-",
            dev["backend"],
        )
    return table


def _any_devices(key: str, devices: list[dict[str, Any]]) -> Any:
    """A kind without a table of its own: its devices' fields as columns."""
    columns = list(dict.fromkeys(name for dev in devices for name in dev)) or ["device"]
    table = _table(key.replace("_", " ").capitalize(), columns)
    for dev in devices:
        table.add_row(*(_cell(dev.get(name)) for name in columns))
    return table


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "-"
    return str(value)


RADIO_TABLES: dict[str, Callable[[list[dict[str, Any]]], Any]] = {
    "serial_ports": _serial_ports,
    "usb_interfaces": _usb_interfaces,
}
"""The table for each radio kind's inventory key (others get a plain one)."""


def render(report: DiagReport, console: Any) -> None:
    """The report as rich tables (inventory first, then the checks and the verdict)."""

    inv = report.inventory
    for key, devices in inv.radios.items():
        table_of = RADIO_TABLES.get(key)
        _print_table(console, table_of(devices) if table_of else _any_devices(key, devices))

    table = _table("Audio devices (PortAudio)", ("name", "host API", "in", "out", "rate"))
    for audio in inv.audio_devices:
        table.add_row(
            audio["name"],
            audio["hostapi"],
            str(audio["max_input_channels"]),
            str(audio["max_output_channels"]),
            f"{audio['default_samplerate']:g}",
        )
    _print_table(console, table)

    if inv.modbus_modules:
        table = _table(
            "Modbus IO modules (configured)", ("module", "link", "device id", "model", "alarms")
        )
        for module in inv.modbus_modules:
            table.add_row(
                module["module"],
                f"{module['link']} ({module['where']})",
                str(module["device_id"]),
                module["model"],
                ", ".join(module["alarms"]) or "-",
            )
        _print_table(console, table)
    for note in inv.notes:
        console.print(f"[yellow]note:[/] {note}")

    table = _table("Checks", ("check", "target", "result", "detail"))
    styles = {"PASS": "bold green", "FAIL": "bold white on red", "SKIP": "yellow"}
    for result in report.results:
        table.add_row(
            result.check,
            result.target,
            f"[{styles[result.status]}]{result.status}[/]",
            result.detail,
        )
    _print_table(console, table)
    if report.count("PASS") + report.count("FAIL") == 0:
        console.print("RESULT: nothing checked (inventory only; give -c CONFIG for the checks)")
        return
    verdict = "[bold white on red] FAIL [/]" if report.failed else "[bold green]PASS[/]"
    console.print(
        f"RESULT {verdict}: {report.count('PASS')} passed, {report.count('FAIL')} failed, "
        f"{report.count('SKIP')} skipped"
    )
