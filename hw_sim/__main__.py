"""`python -m hw_sim -c CONFIG`: serve the simulated devices a gateway config names.

Devices are served on the ports the config names; with --free-ports on ports the system
picks, so that several simulators (two `make demo`s) run side by side, and --write-config
FILE then writes the config the daemon needs (the same, with those ports). A busy port is a
one-line error naming it and the device. Options: --control-port (JSON-lines fault
injection; default 7399, or a free one with --free-ports), --scenario demo (carrier traffic
and faults on a loop, for `make demo`). Prints what the simulated radios see, and the
command that runs the daemon against them (with the sound cards' environment).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from gateway.config import Config, load_config
from gateway.errors import ConfigError
from hw_sim.console import Cm108SimRadio, ControlServer, SimConsole
from hw_sim.resolve import SimPortError, config_text, write_atomically
from hw_sim.signals import SignalStop


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


def watch_tty_replies(console: SimConsole, channels: list[str], stop: threading.Event) -> None:
    """Decode what the daemon plays on TTY lines: what the caller's TTY would print."""
    from gateway.dsp import TtyChar, TtyDecoder, TtyEnded

    decoders = {name: TtyDecoder(sample_rate=8000) for name in channels}
    lines = {name: "" for name in channels}
    while not stop.wait(0.5):
        for name in channels:
            played = console.audio_channels[name].played(clear=True)
            for event in decoders[name].feed(played):
                if isinstance(event, TtyChar):
                    lines[name] += event.char
                elif isinstance(event, TtyEnded) and lines[name].strip():
                    say(f"{name}: the caller's TTY prints: {lines[name].strip()}")
                    lines[name] = ""


def demo_scenario(console: SimConsole, stop: threading.Event) -> None:
    """One loop of everything the simulator can show, about 30 s long, again and again."""
    steps = (
        _radio_steps(console)
        + _audio_steps(console)
        + _tty_steps(console)
        + _signalling_steps(console)
        + _alarm_steps(console)
    )
    while steps:
        for delay, text, action in steps:
            if stop.wait(delay):
                return
            say(text)
            action()
        if stop.wait(3):
            return


Step = tuple[float, str, Callable[[], None]]


def _radio_steps(console: SimConsole) -> list[Step]:
    """Carrier comes and goes, a COS line flaps, a USB interface is unplugged and returns."""
    names = list(console.radios)
    if not names:
        return []
    first, second = names[0], names[1] if len(names) > 1 else names[0]
    b = console.radios[second]
    steps: list[Step] = [
        (2, f"{first}: carrier ON (a unit is talking)", lambda: console.carrier(first, True)),
        (2, f"{first}: carrier off", lambda: console.carrier(first, False)),
        (1, f"{second}: COS line starts flapping (bad squelch)", lambda: b.cos_flap(6)),
        (4, f"{second}: COS line steady again", lambda: b.cos_flap(None)),
    ]
    usb = next((n for n, r in console.radios.items() if isinstance(r, Cm108SimRadio)), None)
    if usb is not None:
        u = console.radios[usb]
        steps += [
            (2, f"{usb}: USB interface UNPLUGGED", u.unplug),
            (4, f"{usb}: USB interface plugged back in", u.replug),
        ]
    return steps


def _audio_steps(console: SimConsole) -> list[Step]:
    """A channel's audio line goes dead (cut cable), then comes back."""
    radio_lines = [n for n in console.audio_channels if n not in console.tty_channels]
    if not radio_lines:
        return []
    name = radio_lines[-1]
    channel = console.audio_channels[name]
    return [
        (1, f"{name}: audio line goes DEAD (cable cut)", lambda: setattr(channel, "silence", True)),
        (5, f"{name}: audio line back", lambda: setattr(channel, "silence", False)),
    ]


def _tty_steps(console: SimConsole) -> list[Step]:
    """A deaf caller's TTY on a 911 line."""
    lines = [name for name in console.tty_channels if name in console.audio_channels]
    if not lines:
        return []
    line = lines[0]
    text = "HELLO 911 MY HUSBAND FELL AND CANNOT GET UP GA\r\n"
    return [(2, f"{line}: a TTY caller types: {text.strip()}", lambda: _call(console, line, text))]


def _signalling_steps(console: SimConsole) -> list[Step]:
    """A unit keys in DTMF; a station is paged with a 5-tone call and a two-tone page; a
    unit identifies itself (MDC-1200) and another raises an emergency."""
    steps: list[Step] = []
    for name, section in console.signalling.items():
        if name not in console.audio_channels:
            continue
        if section.dtmf:
            steps.append((2, f"{name}: a unit sends DTMF 4711#", partial(_dtmf, console, name)))
        if section.selcall:
            std = section.selcall[0]
            steps.append(
                (
                    2,
                    f"{name}: a {std.upper()} selcall pages station 12234",
                    partial(_selcall, console, name, std),
                )
            )
        if section.mdc1200:
            steps.append(
                (
                    2,
                    f"{name}: unit 1234 keys up with its MDC-1200 PTT ID",
                    partial(_mdc, console, name, 0x01, 0x80, 0x1234),
                )
            )
            steps.append(
                (
                    2,
                    f"{name}: unit 0042 presses its emergency button",
                    partial(_mdc, console, name, 0x00, 0x81, 0x0042),
                )
            )
        for page_name, page in list(section.pages.items())[:1]:
            steps.append(
                (
                    2,
                    f"{name}: two-tone page for {page_name}",
                    partial(_page, console, name, page.a_hz, page.b_hz),
                )
            )
        break  # one channel shows it
    return steps


def _mdc(console: SimConsole, channel: str, op: int, arg: int, unit: int) -> None:
    console.mdc(channel, op, arg, unit)


def _page(console: SimConsole, channel: str, a_hz: float, b_hz: float | None) -> None:
    console.page(channel, a_hz, b_hz)


def _dtmf(console: SimConsole, channel: str) -> None:
    console.dtmf(channel, "4711#")


def _selcall(console: SimConsole, channel: str, standard: str) -> None:
    console.selcall(channel, "12234", standard=standard)


def _call(console: SimConsole, line: str, text: str) -> None:
    # The caller's TTY unshifts on space (RTTY practice, like minimodem's): no LTRS after
    # "911 ", which a receiver keeping the shift (TIA-825-A) would read as figures. The
    # daemon's default shift ("auto") finds that from the signal.
    console.tty_call(line, text, convention="unshift_on_space")


def _alarm_steps(console: SimConsole) -> list[Step]:
    """An alarm contact closes and opens; a supervised loop is cut; a module goes silent."""
    alarms = console.alarm_wiring()
    digital = [a for a, w in alarms.items() if w.kind == "digital"]
    supervised = [a for a, w in alarms.items() if w.nominal and "trouble_open" in w.nominal]
    steps: list[Step] = []
    if digital:
        d = digital[0]
        steps += [
            (2, f"{d}: alarm contact CLOSES", lambda: console.set_alarm_input(d, True)),
            (2, f"{d}: alarm contact opens again", lambda: console.set_alarm_input(d, False)),
        ]
    if supervised:
        loop = supervised[0]
        nominal = alarms[loop].nominal or {}
        steps += [
            (
                2,
                f"{loop}: loop wire CUT",
                lambda: console.set_alarm_input(loop, nominal["trouble_open"]),
            ),
            (
                2,
                f"{loop}: loop wire repaired",
                lambda: console.set_alarm_input(loop, nominal["normal"]),
            ),
        ]
    module_id = alarms[supervised[0]].module if supervised else next(iter(console.modules), None)
    if module_id is not None:
        module = console.modules[module_id]
        steps += [
            (2, f"{module_id}: IO module stops answering", lambda: module.set_silent(True)),
            (3, f"{module_id}: IO module answers again", lambda: module.set_silent(False)),
        ]
    return steps


def daemon_command(config_path: str, env: dict[str, str]) -> str:
    """The shell line that runs the daemon against this simulator."""
    words = ["consolegw", "run", "-c", config_path]
    if env:
        words = ["env", *(f"{k}={v}" for k, v in sorted(env.items())), *words]
    return shlex.join(words)


def _serve(args: argparse.Namespace, config: Config) -> tuple[SimConsole, ControlServer]:
    console = SimConsole(config, audio_workdir=args.audio_workdir, free_ports=args.free_ports)
    control_port = args.control_port
    if control_port is None:
        control_port = 0 if args.free_ports else 7399
    console.start()
    try:
        control = ControlServer(console, control_port)
    except BaseException:
        console.stop()
        raise
    control.start()
    config_path = args.config
    if args.write_config is not None:
        note = ", on the ports the simulator picked" if args.free_ports else ""
        text = config_text(config, ports=console.ports, note=note)
        write_atomically(Path(args.write_config), text)
        config_path = args.write_config
    say(f"serving {', '.join(console.radios) or 'no devices'}; control port {control.port}")
    port = "" if control.port == 7399 else f" --port {control.port}"
    say(f"fault injection: python -m hw_sim.ctl{port} DEVICE ACTION [VALUE]")
    if args.scenario != "demo":  # the demo runs its own daemon
        say(f"the daemon on these devices: {daemon_command(config_path, console.env)}")
    return console, control


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hw_sim", description=__doc__)
    parser.add_argument("-c", "--config", required=True, help="gateway config naming the devices")
    parser.add_argument(
        "--free-ports",
        action="store_true",
        help="serve on free ports, not the config's (give --write-config for the daemon)",
    )
    parser.add_argument(
        "--write-config", metavar="FILE", help="write the config the daemon needs to FILE"
    )
    parser.add_argument("--control-port", type=int)
    parser.add_argument("--scenario", choices=["none", "demo"], default="none")
    parser.add_argument(
        "--audio-workdir", help="where simulated sound cards live (give the daemon sim_env of it)"
    )
    args = parser.parse_args(argv)
    if args.free_ports and args.write_config is None:
        parser.error("--free-ports needs --write-config FILE: the daemon must know the ports")
    logging.basicConfig(level=logging.WARNING, format="[sim] %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    stopper = SignalStop(stop)
    try:
        console, control = _serve(args, load_config(args.config))
    except (ConfigError, ValueError) as exc:
        print(f"hw_sim: {exc}", file=sys.stderr, flush=True)
        return 2
    except SimPortError as exc:
        print(f"hw_sim: {exc}", file=sys.stderr, flush=True)
        return 1
    threads = [threading.Thread(target=watch_keying, args=(console, stop), daemon=True)]
    if args.scenario == "demo":
        threads.append(threading.Thread(target=demo_scenario, args=(console, stop), daemon=True))
        tty_lines = [n for n in console.tty_channels if n in console.audio_channels]
        if tty_lines:
            threads.append(
                threading.Thread(
                    target=watch_tty_replies, args=(console, tty_lines, stop), daemon=True
                )
            )
    for thread in threads:
        thread.start()
    while not stopper.poll():  # polled: see hw_sim.signals
        time.sleep(0.2)
    control.stop()
    console.stop()
    for thread in threads:
        thread.join(timeout=2)
    say("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
