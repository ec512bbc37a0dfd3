"""The `consolegw` command: run the daemon, check a config, and the technician's tools."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.config import Config, MqttSection, config_warnings, load_config
from gateway.errors import ConfigError, ConsoleGwError

if TYPE_CHECKING:
    from gateway.app import Gateway

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

log = logging.getLogger("consolegw")


def _setup_logging(level: str) -> None:
    # Under systemd the journal stamps each line; elsewhere a technician wants the time.
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=level.upper(), format=fmt, stream=sys.stderr, force=True)


def _fail(message: str, code: int = EXIT_FAILURE) -> int:
    print(f"consolegw: {message}", file=sys.stderr)
    return code


def _load(path: str, broker: str | None = None) -> Config:
    config = load_config(path)
    if broker is not None:
        try:
            override = {**config.mqtt.model_dump(), "url": broker, "urls": ()}
            mqtt = MqttSection.model_validate(override)
        except ValueError as exc:
            raise ConfigError(f"--broker {broker}: {exc}") from None
        config = config.model_copy(update={"mqtt": mqtt})
    return config


def build_gateway(config: Config) -> Gateway:
    """The daemon's objects, built from a loaded config (no device opened, nothing run).

    The drivers check their arguments again: a value they refuse that validation let
    through is still the config's problem (exit 2 naming the file), not a crash."""
    from gateway.app import Gateway

    try:
        return Gateway(config)
    except (ConfigError, ValueError, OSError) as exc:
        raise ConfigError(f"{config.source}: {exc}") from None


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args.file)
    for warning in config_warnings(config):
        print(f"consolegw: warning: {warning}", file=sys.stderr)
    standby = ", standby" if config.gateway.standby else ""
    print(
        f"{args.file}: OK: gateway {config.gateway.id}{standby}, {len(config.channels)} channels, "
        f"{len(config.modbus.modules)} IO modules, {len(config.alarms)} alarm inputs, "
        f"MQTT {config.mqtt.url} prefix {config.prefix}"
    )
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from gateway.allocator import tune_allocator
    from gateway.lock import acquire

    tune_allocator()  # first: before any thread has made an arena of its own
    config = _load(args.config, args.broker)
    _setup_logging(args.log_level or config.gateway.log_level)
    for warning in config_warnings(config):
        log.warning("%s", warning)

    async def main() -> None:
        gateway = build_gateway(config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, gateway.request_stop)
        await gateway.run()

    # Before anything is built: a second daemon on this state_dir (or a running diag) must
    # not touch the hardware at all. Exit 1, not 2: systemd retries until the holder stops.
    with acquire(config.gateway.state_dir):
        asyncio.run(main())
    return EXIT_OK


def cmd_asyncapi(args: argparse.Namespace) -> int:
    from gateway.asyncapi import render_asyncapi

    text = render_asyncapi()
    if args.check:
        current = (
            Path(args.output).read_text(encoding="utf-8") if Path(args.output).exists() else ""
        )
        if current != text:
            return _fail(f"{args.output} is out of date: run `consolegw asyncapi -o {args.output}`")
        print(f"{args.output}: up to date")
        return EXIT_OK
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")
    return EXIT_OK


def cmd_tty(args: argparse.Namespace) -> int:
    from gateway.tty import decode_file, encode_file

    try:
        if args.action == "decode":
            chars, notes = decode_file(args.file, shift=args.shift, baud=args.baud)
            for note in notes:
                print(note, file=sys.stderr)
            text = "".join(c.char for c in chars)
            if not text:
                print("no TTY text found", file=sys.stderr)
            if args.json:
                import json

                for c in chars:
                    line = {"time": round(c.time, 3), "char": c.char, "code": c.code}
                    if c.revised:
                        line["revised"] = True
                    print(json.dumps(line))
                return EXIT_OK
            sys.stdout.write(text + ("\n" if text and not text.endswith("\n") else ""))
            return EXIT_OK
        seconds = encode_file(args.text, args.output, baud=args.baud)
        print(f"wrote {args.output}: {seconds:.1f} s at {args.baud:g} baud", file=sys.stderr)
        return EXIT_OK
    except (OSError, EOFError, ValueError) as exc:  # wave raises EOFError/Error(ValueError)
        return _fail(f"tty {args.action}: {exc}")


def cmd_signal(args: argparse.Namespace) -> int:
    from gateway import signalling

    try:
        if args.action == "decode":
            pages = [signalling.parse_page(text) for text in args.page or []]
            found, notes = signalling.decode_file(args.file, pages)
            for note in notes:
                print(note, file=sys.stderr)
            channels = 1 + max((ch for ch, _ in found), default=0)
            if args.json:
                import json

                for ch, event in found:
                    print(json.dumps(signalling.event_json(ch, event)))
            else:
                for ch, event in found:
                    print(signalling.describe(ch, event, channels))
            if not found:
                print("no signalling found", file=sys.stderr)
            return EXIT_OK
        seconds = signalling.encode_file(
            args.format,
            args.what,
            args.output,
            samplerate=args.rate,
            on_ms=args.on_ms,
            off_ms=args.off_ms,
            level_dbfs=args.level,
            standard=args.standard,
            first_ms=args.first_ms,
            a_s=args.a_s,
            b_s=args.b_s,
        )
        print(f"wrote {args.output}: {seconds:.2f} s at {args.rate} Hz", file=sys.stderr)
        return EXIT_OK
    except ValueError as exc:
        return _fail(f"signal {args.action}: {exc}", EXIT_USAGE)
    except OSError as exc:
        return _fail(f"signal {args.action}: {exc}")


def _version() -> str:
    """The installed distribution's version: what `pip` or the .deb put on this machine."""
    try:
        return importlib.metadata.version("consolegw")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="consolegw",
        description="Radio and hardware gateway for 911 dispatch consoles.",
    )
    parser.add_argument("--version", action="version", version=f"consolegw {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("-c", "--config", required=True, help="config file (TOML)")
    run.add_argument("--broker", help="override mqtt.url, e.g. mqtt://127.0.0.1:1883")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate a config file without touching hardware")
    check.add_argument("file")
    check.set_defaults(func=cmd_check_config)

    api = sub.add_parser("asyncapi", help="write the AsyncAPI document of the MQTT contract")
    api.add_argument("-o", "--output", default="docs/asyncapi.yaml", help="file, or - for stdout")
    api.add_argument("--check", action="store_true", help="fail if the file is out of date")
    api.set_defaults(func=cmd_asyncapi)

    tty = sub.add_parser("tty", help="TTY/TDD (Baudot) audio files: decode and encode")
    tty_sub = tty.add_subparsers(dest="action", required=True, metavar="ACTION")
    decode = tty_sub.add_parser(
        "decode", help="print the text in a WAV file (only the text on stdout)"
    )
    decode.add_argument("file", help="WAV file (8 or 16 bit PCM, any rate from 6 kHz)")
    decode.add_argument(
        "--shift",
        choices=["auto", "unshift_on_space", "keep"],
        default="auto",
        help="the sender's shift convention (default: found from the signal)",
    )
    decode.add_argument(
        "--baud",
        type=float,
        choices=[45.45, 50.0],
        default=None,
        help="read only this rate (default: 45.45 and 50, told apart)",
    )
    decode.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per character: time (s, end of its first stop bit), char, code, "
        "and revised when it was read again",
    )
    decode.set_defaults(func=cmd_tty)
    encode = tty_sub.add_parser("encode", help="write text as TTY audio to a WAV file")
    encode.add_argument("text")
    encode.add_argument("-o", "--output", required=True, help="WAV file to write")
    encode.add_argument("--baud", type=float, choices=[45.45, 50.0], default=45.45)
    encode.set_defaults(func=cmd_tty)

    signal = sub.add_parser(
        "signal",
        help="signalling in audio files (DTMF, 5-tone, two-tone, MDC-1200): decode and encode",
    )
    signal_sub = signal.add_subparsers(dest="action", required=True, metavar="ACTION")
    sdecode = signal_sub.add_parser(
        "decode", help="list the signalling in an audio file, with times (every channel)"
    )
    sdecode.add_argument("file", help="audio file soundfile reads (WAV, FLAC, Ogg), 6 kHz up")
    sdecode.add_argument("--json", action="store_true", help="one JSON object per event")
    sdecode.add_argument(
        "--page",
        action="append",
        metavar="NAME=A/B",
        help="a two-tone page to listen for, tones in Hz (NAME=A for a long tone); repeatable",
    )
    sdecode.set_defaults(func=cmd_signal)
    sencode = signal_sub.add_parser("encode", help="write signalling to a WAV file")
    sencode.add_argument(
        "format", choices=["dtmf", "selcall", "page", "mdc1200"], help="what to send"
    )
    sencode.add_argument(
        "what",
        help="the digits (DTMF: 0-9, *, #, A-D; selcall: 0-9, A-D, F, repeats as sent); "
        "page: A/B in Hz, or A for a long tone; mdc1200: KIND:UNIT (ptt_id:1234, "
        "emergency:0042...) or OPARG:UNIT in hex (0180:1234)",
    )
    sencode.add_argument("-o", "--output", required=True, help="WAV file to write")
    sencode.add_argument("--rate", type=int, default=8000, help="sample rate (default 8000)")
    sencode.add_argument(
        "--on-ms", type=float, default=None, help="tone length (DTMF 100; selcall: the standard's)"
    )
    sencode.add_argument("--off-ms", type=float, default=100.0, help="pause length (100)")
    sencode.add_argument("--level", type=float, default=-10.0, help="each tone, dBFS (-10)")
    sencode.add_argument(
        "--standard",
        choices=["ccir", "zvei1", "eea"],  # gateway.dsp.selcall.STANDARDS (numpy: not here)
        default="ccir",
        help="selcall: CCIR (100 ms tones), ZVEI1 (70 ms) or EEA (40 ms); default ccir",
    )
    sencode.add_argument("--first-ms", type=float, default=None, help="selcall: first tone held")
    sencode.add_argument("--a-s", type=float, default=None, help="page: tone A, s (1; long 8)")
    sencode.add_argument("--b-s", type=float, default=None, help="page: tone B, s (3)")
    sencode.set_defaults(func=cmd_signal)

    from gateway.tools import register_tools

    register_tools(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ConfigError as exc:
        return _fail(f"bad config:\n{exc}", EXIT_USAGE)
    except ConsoleGwError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        print("consolegw: stopped (Ctrl-C)", file=sys.stderr)
        return EXIT_FAILURE
    except BrokenPipeError:
        # `consolegw diag --json | head`: the reader left; that is not our failure.
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
