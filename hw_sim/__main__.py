"""`python -m hw_sim -c CONFIG`: serve the simulated devices a gateway config names.

Options: --control-port (JSON-lines fault injection, default 7399), --scenario demo (carrier
traffic and faults on a loop, for `make demo`). Prints what the simulated radios see.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable

from gateway.config import load_config
from gateway.errors import ConfigError
from hw_sim.console import ControlServer, SimConsole


def say(message: str) -> None:
    print(f"[sim] {message}", flush=True)


def watch_keying(console: SimConsole, stop: threading.Event) -> None:
    """Print each change of a simulated radio's keyed state: what the radio really does."""
    last = {name: radio.keyed for name, radio in console.radios.items()}
    while not stop.wait(0.02):
        for name, radio in console.radios.items():
            keyed = radio.keyed
            if keyed != last[name]:
                last[name] = keyed
                say(f"{name}: radio {'KEYED (transmitting)' if keyed else 'unkeyed'}")


def demo_scenario(console: SimConsole, stop: threading.Event) -> None:
    """Carrier comes and goes, a COS line flaps, a USB interface is unplugged and returns."""
    names = list(console.radios)
    first = names[0] if names else None
    second = names[1] if len(names) > 1 else first
    usb = next((n for n in names if type(console.radios[n]).__name__ == "Cm108SimRadio"), None)

    def step(delay: float, text: str, action: Callable[[], None]) -> bool:
        if stop.wait(delay):
            return False
        say(text)
        action()
        return True

    if first is None or second is None:
        return
    a, b = console.radios[first], console.radios[second]
    steps: list[tuple[float, str, Callable[[], None]]] = [
        (2, f"{first}: carrier ON (a unit is talking)", lambda: a.carrier(True)),
        (3, f"{first}: carrier off", lambda: a.carrier(False)),
        (2, f"{second}: COS line starts flapping (bad squelch)", lambda: b.cos_flap(6)),
        (5, f"{second}: COS line steady again", lambda: b.cos_flap(None)),
    ]
    if usb is not None:
        u = console.radios[usb]
        steps += [
            (4, f"{usb}: USB interface UNPLUGGED", u.unplug),
            (5, f"{usb}: USB interface plugged back in", u.replug),
        ]
    while True:
        for delay, text, action in steps:
            if not step(delay, text, action):
                return
        if stop.wait(4):
            return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hw_sim", description=__doc__)
    parser.add_argument("-c", "--config", required=True, help="gateway config naming the devices")
    parser.add_argument("--control-port", type=int, default=7399)
    parser.add_argument("--scenario", choices=["none", "demo"], default="none")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="[sim] %(levelname)s %(name)s: %(message)s")
    try:
        console = SimConsole(load_config(args.config))
    except (ConfigError, ValueError) as exc:
        print(f"hw_sim: {exc}", file=sys.stderr)
        return 2
    console.start()
    control = ControlServer(console, args.control_port)
    control.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threads = [threading.Thread(target=watch_keying, args=(console, stop), daemon=True)]
    if args.scenario == "demo":
        threads.append(threading.Thread(target=demo_scenario, args=(console, stop), daemon=True))
    for thread in threads:
        thread.start()
    say(f"serving {', '.join(console.radios) or 'no devices'}; control port {control.port}")
    while not stop.wait(0.2):
        pass
    control.stop()
    console.stop()
    for thread in threads:
        thread.join(timeout=2)
    say("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
