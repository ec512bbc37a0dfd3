"""Technician tools: `consolegw top`, `fleet`, `diag`, `plot` and `recordings`.

Every tool follows the `consolegw` style: `--help` says what it does and what it touches,
failures exit non-zero with a one-line reason (ToolError -> status 1, a bad config or bad
arguments -> status 2), and `--json` prints one JSON document where the output is data.
Implementations are imported when their command runs: textual and matplotlib are heavy and
the daemon never needs them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from gateway.errors import ConsoleGwError


class ToolError(ConsoleGwError):
    """A tool cannot do its job; the message is the one-line reason shown to the technician."""


def _positive_seconds(maximum: float) -> Callable[[str], float]:
    """An argparse type: seconds in (0, maximum]; a bad value is a usage error (status 2)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not 0 < value <= maximum:
            raise argparse.ArgumentTypeError(f"must be in (0, {maximum:g}] seconds: {text}")
        return value

    return parse


def _cmd_top(args: argparse.Namespace) -> int:
    from gateway.tools import top

    return top.run(args)


def _cmd_fleet(args: argparse.Namespace) -> int:
    from gateway.tools import fleet

    return fleet.run(args)


def _cmd_diag(args: argparse.Namespace) -> int:
    from gateway.tools import diag

    return diag.run(args)


def _cmd_plot(args: argparse.Namespace) -> int:
    from gateway.tools import plot

    return plot.run(args)


def register_tools(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the tools' subcommands to the `consolegw` parser."""
    top = sub.add_parser(
        "top",
        help="live view of every channel, alarm and module (from MQTT; works remotely)",
        description=(
            "A live view built only from the daemon's MQTT topics: channels (state, PTT, "
            "COS, device, level, faults, TX time left), alarms, IO modules and the event log. "
            "Keys: arrows select, Tab switches table, k keys the selected channel for a "
            "test (asks first; the daemon ends it after the lease), a acknowledges the "
            "selected alarm (asks first), r requests a recall of the selected channel, q quits."
        ),
    )
    top.add_argument("-c", "--config", help="config file: broker, credentials, TLS and prefix")
    top.add_argument("--broker", help="broker URL, e.g. mqtt://console-07:1883 (overrides -c)")
    top.add_argument("--gateway", help="gateway id when no config is given (prefix consolegw/ID)")
    top.add_argument(
        "--prefix",
        help="topic prefix, when it is not consolegw/<gateway id>; with --fleet the root "
        "(default: the config's prefix without the gateway id, or consolegw)",
    )
    top.add_argument(
        "--fleet",
        action="store_true",
        help="every gateway under the root prefix, one row each, live (as consolegw fleet)",
    )
    top.add_argument(
        "--key-seconds",
        type=_positive_seconds(30),
        default=5.0,
        help="lease of the test key sent by k (default 5)",
    )
    top.add_argument(
        "--record",
        metavar="EVENTS.jsonl",
        help="append every event seen to this file (JSON lines, for plot --events)",
    )
    top.add_argument(
        "--json", action="store_true", help="print the retained state once as JSON and exit"
    )
    top.set_defaults(func=_cmd_top, parser=top, settle=3.0)

    fleet = sub.add_parser(
        "fleet",
        help="every gateway on the broker: status, session, uptime, faults, outbox (from MQTT)",
        description=(
            "One row per gateway found under the root prefix (<root>/<gateway id>/...), built "
            "only from retained topics (status, state, channel, alarm and module states): "
            "status, session, version, uptime (or since when), channels, active faults, "
            "outbox depth, standby, active alarms, IO modules offline, and BAD: payloads "
            "there that could not be read (shown as ?). Sends nothing to the gateways. Exit "
            "status: 0 every gateway found is online without faults, 1 one is offline, of "
            "unknown status or has a fault, or none was found, 2 the broker could not be "
            "reached or bad arguments or config."
        ),
    )
    fleet.add_argument("-c", "--config", help="config file: broker, credentials, TLS and root")
    fleet.add_argument("--broker", help="broker URL, e.g. mqtt://cad-mqtt:1883 (overrides -c)")
    fleet.add_argument(
        "--prefix",
        help="root prefix (default: the config's prefix without the gateway id, or consolegw)",
    )
    fleet.add_argument(
        "--settle",
        type=_positive_seconds(30),
        default=3.0,
        help="wait at most this long for the retained topics when the broker drops the "
        "end-of-retained probe (default 3)",
    )
    fleet.add_argument("--json", action="store_true", help="print one JSON list, for scripts")
    fleet.set_defaults(func=_cmd_fleet, parser=fleet)

    diag = sub.add_parser(
        "diag",
        help="inventory of this machine's hardware and guided PASS/FAIL checks",
        description=(
            "Lists the serial ports (with /dev/serial/by-id names), CM108-family USB "
            "interfaces (with USB port paths), PortAudio devices and the configured Modbus "
            "modules, then runs guided checks against the hardware directly through the "
            "drivers: each radio channel keyed for --key-seconds (read-back and carrier "
            "reported), each Modbus module polled once, and with a loopback fitted from a "
            "channel's audio output to its input, a 1 kHz tone measured (tone) and a TTY "
            "message decoded back (tty). The daemon must NOT be running on "
            "this hardware (systemctl stop consolegw): diag checks the lock the daemon holds "
            "in its state_dir, and the broker, and refuses to touch the hardware while the "
            "daemon runs or while neither can tell (unless --force). Exit status: 0 every "
            "check passed or was skipped, 1 a check failed, 2 bad config or arguments."
        ),
    )
    diag.add_argument("-c", "--config", help="config file; without it, inventory only")
    diag.add_argument("--json", action="store_true", help="print one JSON document (for tickets)")
    diag.add_argument(
        "--broker", help="ask this broker for the daemon's status, not mqtt.url (as run --broker)"
    )
    diag.add_argument(
        "--key-seconds",
        type=_positive_seconds(30),
        default=2.0,
        help="how long each radio is keyed by the ptt check (default 2)",
    )
    diag.add_argument(
        "--checks",
        help="comma-separated checks to run (default: all; see --list-checks)",
    )
    diag.add_argument(
        "--only", help="comma-separated channel/module ids: check only these (default: all)"
    )
    diag.add_argument(
        "--yes",
        action="store_true",
        help="do not ask before keying transmitters (required when stdin is not a terminal)",
    )
    diag.add_argument(
        "--force",
        action="store_true",
        help="touch the hardware even when the daemon runs or that cannot be told (you have "
        "made sure it is stopped: two programs on one radio fight over PTT)",
    )
    diag.add_argument("--list-checks", action="store_true", help="list the checks and exit")
    diag.set_defaults(func=_cmd_diag, parser=diag)

    plot = sub.add_parser(
        "plot",
        help="picture of a recording: waveform, level and spectrogram, with event markers",
        description=(
            "Draws a recording (WAV: 8/16/24/32-bit PCM or 32-bit float) as three stacked "
            "panels: waveform, level in dBFS per 50 ms and spectrogram, with vertical markers "
            "for PTT, COS and fault events. Events come from --events (a JSON list, or JSON "
            "lines, of events as published on MQTT); the recording's start time from the "
            'sidecar RECALL.json next to the WAV ({"start_ts": ..., "channel": ...}) or '
            "--start. Without either, the first event is placed at the file's start."
        ),
    )
    plot.add_argument("wav", metavar="RECALL.wav", help="the recording")
    plot.add_argument("-o", "--output", required=True, metavar="FILE.png", help="image to write")
    plot.add_argument("--events", metavar="EVENTS.json", help="events to mark")
    plot.add_argument("--start", metavar="TS", help="RFC 3339 time of the first sample")
    plot.add_argument(
        "--size",
        default="1400x900",
        metavar="WxH",
        help="image size in pixels (default 1400x900)",
    )
    plot.add_argument("--title", help="title (default: the file name and channel)")
    plot.add_argument(
        "--column", type=int, default=0, help="channel of a multi-channel WAV, from 0 (default 0)"
    )
    plot.add_argument("--json", action="store_true", help="print what was drawn as JSON")
    plot.set_defaults(func=_cmd_plot, parser=plot)

    from gateway.tools import recordings

    recordings.register(sub)
