"""`consolegw recordings list|export|play|plot|serve`: the recorder's index and files on this host.

Reads the index (SQLite) and the audio files the daemon's recorder writes; never writes to
either, so it runs beside the daemon. The folder is the config's `recorder.folder` (or
<gateway.state_dir>/recordings), or `--folder`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.tools import ToolError

if TYPE_CHECKING:  # imported when a command runs: the parser is built at every start
    import numpy as np
    from numpy.typing import NDArray

    from gateway.recorder.store import Query, Recording, RecordingStore

TOKEN_ENV = "CONSOLEGW_RECORDINGS_TOKEN"
"""The web page's token from the environment (a command line is visible to every user)."""
MAX_SPAN_S = 24 * 3600.0
"""The longest time span `export --channel` stitches into one file."""


def _folder(args: argparse.Namespace) -> Path:
    if args.folder:
        folder = Path(args.folder)
    elif args.config:
        from gateway.config import load_config

        config = load_config(args.config)
        rec = config.recorder
        folder = Path(rec.folder) if rec.folder else config.gateway.state_dir / "recordings"
    else:
        raise ToolError("give -c CONFIG or --folder: where the recordings are")
    if not (folder / "index.sqlite").is_file():
        raise ToolError(f"{folder}: no recorder index here (index.sqlite)")
    return folder


def _query(args: argparse.Namespace, limit: int) -> Query:
    from gateway.recorder.store import Query

    try:
        return Query.of_text(
            channel=args.channel,
            direction=args.direction,
            since=args.since,
            until=args.until,
            text=getattr(args, "text", None),
            limit=limit,
            naive_is_local=True,
            names=("--since", "--until"),
            unit=getattr(args, "unit", None),
        )
    except ValueError as exc:
        raise ToolError(str(exc)) from None


def _local(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def _store(args: argparse.Namespace) -> RecordingStore:
    from gateway.recorder.store import RecordingStore

    return RecordingStore(folder=_folder(args))


def cmd_list(args: argparse.Namespace) -> int:
    from gateway.recorder import RecordingInfo

    store = _store(args)
    found = store.query(_query(args, args.limit))
    if args.json:
        print(json.dumps([RecordingInfo.of(r).model_dump(mode="json") for r in found], indent=2))
        return 0
    if not found:
        print("no recordings match")
        return 0
    print(
        f"{'id':>6}  {'channel':<12} {'dir':<3} {'start (local)':<19} {'length':>7} "
        f"{'level':>6}  {'status':<10} by / faults / units / text"
    )
    for r in found:
        level = f"{r.level_dbfs:.0f}" if r.level_dbfs is not None else "-"
        extra = " ".join(
            x
            for x in (
                r.requested_by or "",
                ",".join(r.faults),
                " ".join(f"unit {u}" for u in r.units),
                r.tty_text.replace("\n", " / ")[:40],
            )
            if x
        )
        print(
            f"{r.id:>6}  {r.channel:<12.12} {r.direction:<3} {_local(r.start):<19} "
            f"{r.duration_s:>6.1f}s {level:>6}  {r.status:<10} {extra}"
        )
    return 0


def _read(rec: Recording) -> tuple[NDArray[np.float64], int]:
    import soundfile as sf

    try:
        data, rate = sf.read(rec.path, dtype="float64", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise ToolError(f"recording {rec.id}: cannot read {rec.path}: {exc}") from None
    return data[:, 0], int(rate)


def _one(store: RecordingStore, record_id: int) -> Recording:
    rec = store.get(record_id)
    if rec is None:
        raise ToolError(f"no recording {record_id}")
    return rec


def stitch(records: list[Recording], start: float, end: float) -> tuple[NDArray[np.float64], int]:
    """The records of one channel laid on the time line [start, end), silence between."""
    import numpy as np

    if end - start > MAX_SPAN_S:
        raise ToolError(f"a span of {end - start:.0f} s is longer than {MAX_SPAN_S:.0f} s")
    rate = records[0].samplerate
    out = np.zeros(round((end - start) * rate))
    for rec in sorted(records, key=lambda r: r.start):
        if rec.samplerate != rate:
            raise ToolError(f"recording {rec.id} is at {rec.samplerate} Hz, the others {rate}")
        samples, _ = _read(rec)
        at = round((rec.start - start) * rate)
        lo = max(0, -at)
        hi = min(len(samples), len(out) - at)
        if hi > lo:
            out[at + lo : at + hi] = samples[lo:hi]
    return out, rate


def cmd_export(args: argparse.Namespace) -> int:
    from gateway.audio import to_pcm16, write_wav16

    store = _store(args)
    output = Path(args.output)
    if args.id is not None:
        rec = _one(store, args.id)
        samples, rate = _read(rec)
        what = f"recording {rec.id} ({rec.channel} {rec.direction}, {_local(rec.start)})"
    else:
        if not (args.channel and args.since and args.until):
            raise ToolError("give a recording id, or --channel, --since and --until")
        query = _query(args, 10_000)
        assert query.since is not None and query.until is not None
        found = store.query(query)
        if not found:
            raise ToolError(f"no recordings of {args.channel} in that span")
        samples, rate = stitch(found, query.since, query.until)
        what = f"{len(found)} recordings of {args.channel}, {args.since} to {args.until}"
    try:
        write_wav16(output, to_pcm16(samples), rate)
    except OSError as exc:
        raise ToolError(f"{output}: cannot write: {exc.strerror or exc}") from None
    print(f"wrote {output}: {what}, {len(samples) / rate:.1f} s at {rate} Hz")
    return 0


def cmd_play(args: argparse.Namespace) -> int:
    import numpy as np
    import sounddevice as sd

    store = _store(args)
    rec = _one(store, args.id)
    samples, rate = _read(rec)
    print(f"playing recording {rec.id} ({rec.channel} {rec.direction}, {rec.duration_s:.1f} s)")
    try:
        sd.play(samples.astype(np.float32), rate, device=args.device, blocking=True)
    except (sd.PortAudioError, ValueError) as exc:
        raise ToolError(f"cannot play: {exc}") from None
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from gateway.events import utc_timestamp
    from gateway.tools.plot import make_plot

    store = _store(args)
    rec = _one(store, args.id)
    info = make_plot(
        Path(rec.path),
        Path(args.output),
        events_path=Path(args.events) if args.events else None,
        start=utc_timestamp(rec.start),
        title=f"recording {rec.id}: {rec.channel} {rec.direction}, {_local(rec.start)}",
        channel=rec.channel,
    )
    print(f"wrote {info.output}: {info.duration_s:g} s, {len(info.markers)} marker(s)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import os
    import socket

    from gateway.tools.recordings_web import make_server

    folder = _folder(args)
    token = os.environ.get(TOKEN_ENV) or None
    if args.token_file:
        try:
            token = Path(args.token_file).read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            raise ToolError(f"--token-file: {exc}") from None
        if token is None:
            raise ToolError(f"--token-file {args.token_file}: the file is empty")
    from gateway.recorder.store import RecordingStore

    try:
        server, token = make_server(
            RecordingStore(folder=folder),
            host=args.host,
            port=args.port,
            token=token,
            title=args.title or socket.gethostname(),
        )
    except OSError as exc:
        raise ToolError(f"cannot serve on {args.host}:{args.port}: {exc}") from None
    host, port = str(server.server_address[0]), server.server_address[1]
    shown = f"[{host}]" if ":" in host else host
    print(f"recordings of {folder}: http://{shown}:{port}/?token={token}", flush=True)
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        print("note: plain HTTP beyond this host; use it only on a trusted network", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rec = sub.add_parser(
        "recordings",
        help="the recorder's records on this host: list, export, play, plot, a web page",
        description=(
            "Reads the recorder's index and files (never writes them; runs beside the "
            "daemon). Times are RFC 3339; without a zone, local time."
        ),
    )
    rec.add_argument("-c", "--config", help="config file: where the recordings are")
    rec.add_argument("--folder", help="the recordings folder (overrides -c)")
    actions = rec.add_subparsers(dest="action", required=True, metavar="ACTION")

    def filters(p: argparse.ArgumentParser) -> None:
        p.add_argument("--channel", help="only this channel")
        p.add_argument("--direction", choices=["rx", "tx"], help="only received or transmitted")
        p.add_argument("--since", metavar="TIME", help="records that end at or after this")
        p.add_argument("--until", metavar="TIME", help="records that start before this")

    listing = actions.add_parser("list", help="records, newest first")
    filters(listing)
    listing.add_argument("--text", help="in the TTY transcript, the requester or a fault code")
    listing.add_argument("--unit", help="records during which this MDC-1200 unit ID was heard")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    listing.add_argument(
        "--json", action="store_true", help="one JSON list (as request/recordings answers)"
    )
    listing.set_defaults(func=cmd_list)

    export = actions.add_parser(
        "export",
        help="one record, or a time span of a channel stitched on its time line, to a WAV",
    )
    export.add_argument("id", type=int, nargs="?", help="the record's id")
    filters(export)
    export.add_argument("-o", "--output", required=True, metavar="FILE.wav")
    export.set_defaults(func=cmd_export)

    play = actions.add_parser("play", help="play one record on this host's sound output")
    play.add_argument("id", type=int)
    play.add_argument("--device", help="PortAudio output device (default: the system's)")
    play.set_defaults(func=cmd_play)

    plot = actions.add_parser("plot", help="waveform, level and spectrogram of one record")
    plot.add_argument("id", type=int)
    plot.add_argument("-o", "--output", required=True, metavar="FILE.png")
    plot.add_argument("--events", metavar="EVENTS.json", help="events to mark (as for plot)")
    plot.set_defaults(func=cmd_plot)

    serve = actions.add_parser(
        "serve",
        help="a read-only web page: records per channel and time, filters, playback",
        description=(
            "Serves the records to a browser, read-only. Every request needs the token: "
            f"from --token-file, ${TOKEN_ENV} or a new random one; the address printed "
            "carries it. Localhost unless --host says otherwise (plain HTTP)."
        ),
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=0, help="port (default 0: a free one, printed)")
    serve.add_argument("--token-file", metavar="FILE", help="the token, in a file")
    serve.add_argument("--title", help="the page's title (default: this host's name)")
    serve.set_defaults(func=cmd_serve)
