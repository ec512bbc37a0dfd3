"""`python -m hw_sim.ctl DEVICE ACTION [VALUE]`: fault injection into a running simulator.

Examples: `python -m hw_sim.ctl fire-north carrier on`, `python -m hw_sim.ctl police-east
unplug`, `python -m hw_sim.ctl ems-south cos_flap 6`, `python -m hw_sim.ctl generator-fail
input on` (an alarm's contact), `python -m hw_sim.ctl io-1 silent on` (a module stops
answering), `python -m hw_sim.ctl io-1 input on --channel 3` (a module's input), `python -m
hw_sim.ctl panel-bus unplug` (a Modbus link), `python -m hw_sim.ctl - list`.
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
    try:
        return float(text)
    except ValueError:
        return text  # the text a simulated TTY caller types


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hw_sim.ctl", description=__doc__)
    parser.add_argument("device", help="channel id, or - for `list`")
    # Not a fixed list: the simulator knows which actions each device has, and answers an
    # unknown one with those it knows.
    parser.add_argument("action", help="e.g. carrier, unplug, audio_dead, input, silent, list")
    parser.add_argument(
        "value",
        nargs="?",
        help="on/off, a number (Hz, dB, seconds), text for tty, digits for dtmf, "
        "[standard:]digits for selcall (ccir, zvei1, eea), A/B Hz (or A) for page, "
        "KIND:UNIT (ptt_id:1234, emergency:0042) or OPARG:UNIT in hex for mdc",
    )
    parser.add_argument("--channel", type=int, help="an IO module's input or output number")
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
