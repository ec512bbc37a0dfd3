"""`python -m hw_sim.ctl DEVICE ACTION [VALUE]`: fault injection into a running simulator.

Examples: `python -m hw_sim.ctl fire-north carrier on`, `python -m hw_sim.ctl police-east
unplug`, `python -m hw_sim.ctl ems-south cos_flap 6`, `python -m hw_sim.ctl generator-fail
input on` (an alarm's contact), `python -m hw_sim.ctl io-1 silent on` (a module stops
answering), `python -m hw_sim.ctl panel-bus unplug` (a Modbus link), `python -m hw_sim.ctl - list`.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from typing import Any


def send(request: dict[str, Any], port: int = 7399, timeout: float = 5.0) -> dict[str, Any]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(json.dumps(request).encode() + b"\n")
        answer = sock.makefile("rb").readline()
    result: dict[str, Any] = json.loads(answer)
    return result


def _value(text: str | None) -> Any:
    if text is None:
        return None
    lowered = text.lower()
    if lowered in ("on", "true", "yes", "1"):
        return True
    if lowered in ("off", "false", "no", "0"):
        return False
    return float(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hw_sim.ctl", description=__doc__)
    parser.add_argument("device", help="channel id, or - for `list`")
    parser.add_argument(
        "action",
        choices=[
            "carrier",
            "cos_stuck",
            "cos_flap",
            "ptt_no_follow",
            "unplug",
            "replug",
            "state",
            "list",
        ],
    )
    parser.add_argument("value", nargs="?", help="on/off, or Hz for cos_flap (off stops it)")
    parser.add_argument("--port", type=int, default=7399)
    args = parser.parse_args(argv)
    try:
        answer = send(
            {
                "device": args.device,
                "action": args.action,
                "value": _value(args.value),
                "channel": args.channel,
            },
            args.port,
        )
    except OSError as exc:
        print(f"hw_sim.ctl: cannot reach the simulator on port {args.port}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(answer))
    return 0 if answer.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
