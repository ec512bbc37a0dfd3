"""`consolegw plot`: a recording as a picture a technician can attach to a ticket.

Three stacked panels on one time axis: the waveform, the level in dBFS per 50 ms window and a
spectrogram, with a vertical marker for every PTT, COS and fault event (and shaded spans while
keyed or receiving), so "the radio keyed but nothing went out" or "carrier but no audio" is
visible at a glance.

Times: events carry RFC 3339 `ts`; the recording's first sample is at `start_ts` from the
sidecar `RECALL.json` next to `RECALL.wav` (written with the recording), or `--start`.

Extension point: `register_marker(event_type, ...)` draws more event types (recall marks,
`tty.text`, VOX) with no change here.
"""

from __future__ import annotations

import argparse
import json
import math
import struct
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from gateway.events import parse_timestamp, utc_timestamp
from gateway.tools import ToolError

LEVEL_WINDOW_S = 0.05
LEVEL_FLOOR_DBFS = -100.0
"""Digital silence is drawn here rather than at minus infinity."""
SPECTRUM_RANGE_DB = 90.0
"""Dynamic range shown by the spectrogram, down from its loudest bin."""


# -- markers --------------------------------------------------------------------------------


LineStyle = Literal["-", "--", ":", "-."]


@dataclass(frozen=True, slots=True)
class MarkerStyle:
    color: str
    linestyle: LineStyle
    label: str
    span: str | None = None
    """Spans open at an event whose style names `span` with `opens` and close at the next
    closing one: PTT on..off and COS on..off are shaded."""
    opens: bool = False


MARKER_STYLES: dict[str, MarkerStyle] = {}
"""Event type -> how its marker looks. Only these types are drawn."""


def register_marker(
    event_type: str,
    *,
    color: str,
    linestyle: LineStyle = "-",
    label: str | None = None,
    span: str | None = None,
    opens: bool = False,
) -> None:
    """Draw events of `event_type` (e.g. "tty.text", "recall.mark") as vertical markers."""
    MARKER_STYLES[event_type] = MarkerStyle(color, linestyle, label or event_type, span, opens)


register_marker("ptt.on", color="#d62728", label="PTT on", span="ptt", opens=True)
register_marker("ptt.off", color="#d62728", linestyle="--", label="PTT off", span="ptt")
register_marker("cos.on", color="#2ca02c", label="COS on", span="cos", opens=True)
register_marker("cos.off", color="#2ca02c", linestyle="--", label="COS off", span="cos")
register_marker("fault.raised", color="#ff7f0e", label="fault")
register_marker("fault.cleared", color="#ff7f0e", linestyle=":", label="fault cleared")


@dataclass(frozen=True, slots=True)
class Marker:
    t: float
    """Seconds from the recording's first sample."""
    type: str
    label: str


@dataclass
class PlotInfo:
    """What was drawn (`plot --json`)."""

    wav: str
    output: str
    rate: int
    channels: int
    duration_s: float
    start_ts: str | None
    channel: str | None
    peak_dbfs: float
    markers: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# -- reading --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Recording:
    samples: NDArray[np.float64]
    """One channel, full scale +-1.0."""
    rate: int
    channels: int


_PCM = 1
_FLOAT = 3
_EXTENSIBLE = 0xFFFE


def _read_other(path: Path, column: int) -> Recording:
    """Ogg/Opus, FLAC and the rest libsndfile reads (the recorder's files)."""
    import soundfile as sf

    try:
        data, rate = sf.read(path, dtype="float64", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        raise ToolError(
            f"{path}: not a WAV file (nor Ogg/Opus, FLAC or another libsndfile format)"
        ) from None
    channels = int(data.shape[1])
    if not 0 <= column < channels:
        raise ToolError(f"{path}: has {channels} channel(s); --column {column} does not exist")
    return Recording(samples=data[:, column], rate=int(rate), channels=channels)


def read_wav(path: Path, *, column: int = 0) -> Recording:
    """PCM 8/16/24/32-bit and float 32/64 WAV (plain or WAVE_FORMAT_EXTENSIBLE), one column.

    The stdlib `wave` module reads integer PCM only; recordings may be float.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ToolError(f"{path}: cannot read: {exc.strerror}") from None
    if len(raw) < 12 or raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        return _read_other(path, column)
    fmt: tuple[int, int, int, int] | None = None
    data: bytes | None = None
    pos = 12
    while pos + 8 <= len(raw):
        chunk, size = raw[pos : pos + 4], struct.unpack_from("<I", raw, pos + 4)[0]
        body = raw[pos + 8 : pos + 8 + size]
        if chunk == b"fmt " and len(body) >= 16:
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", body)
            if tag == _EXTENSIBLE and len(body) >= 26:
                tag = struct.unpack_from("<H", body, 24)[0]  # first bytes of the sub-format GUID
            fmt = (tag, channels, rate, bits)
        elif chunk == b"data":
            data = body  # a truncated recording (writer killed) keeps what it has
        pos += 8 + size + (size & 1)
    if fmt is None or data is None:
        raise ToolError(f"{path}: WAV without fmt or data chunk")
    tag, channels, rate, bits = fmt
    if channels < 1 or rate < 1:
        raise ToolError(f"{path}: bad WAV header ({channels} channels, {rate} Hz)")
    if not 0 <= column < channels:
        raise ToolError(f"{path}: has {channels} channel(s); --column {column} does not exist")
    frame = channels * bits // 8
    usable = len(data) - len(data) % frame if frame else 0
    samples = _decode(data[:usable], tag, bits, path)
    return Recording(
        samples=samples.reshape(-1, channels)[:, column].astype(np.float64),
        rate=rate,
        channels=channels,
    )


def _decode(data: bytes, tag: int, bits: int, path: Path) -> NDArray[np.float64]:
    if tag == _FLOAT and bits in (32, 64):
        return np.frombuffer(data, dtype="<f4" if bits == 32 else "<f8").astype(np.float64)
    if tag != _PCM:
        raise ToolError(f"{path}: WAV format {tag:#x} not supported (PCM or float only)")
    if bits == 8:
        return (np.frombuffer(data, dtype=np.uint8).astype(np.float64) - 128.0) / 128.0
    if bits == 16:
        return np.frombuffer(data, dtype="<i2").astype(np.float64) / 32768.0
    if bits == 24:
        b = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        value = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        value = np.where(value >= 1 << 23, value - (1 << 24), value)
        return value.astype(np.float64) / float(1 << 23)
    if bits == 32:
        return np.frombuffer(data, dtype="<i4").astype(np.float64) / float(1 << 31)
    raise ToolError(f"{path}: {bits}-bit PCM not supported")


def parse_time(value: Any) -> float:
    """RFC 3339 text (or epoch seconds) -> epoch seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    try:
        return parse_timestamp(str(value))
    except ValueError as exc:
        raise ToolError(str(exc)) from None


def read_sidecar(wav: Path) -> dict[str, Any] | None:
    """RECALL.json next to RECALL.wav: {"start_ts": ..., "channel": ...}, if there is one."""
    sidecar = wav.with_suffix(".json")
    if not sidecar.is_file():
        return None
    try:
        body = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ToolError(f"{sidecar}: unreadable sidecar: {exc}") from None
    if not isinstance(body, dict):
        raise ToolError(f"{sidecar}: the sidecar must be a JSON object")
    return body


def load_events(path: Path) -> list[dict[str, Any]]:
    """A JSON list of events, {"events": [...]}, or JSON lines (one event per line)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ToolError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        body: Any = json.loads(text)
    except ValueError:
        try:
            body = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError as exc:
            raise ToolError(f"{path}: neither JSON nor JSON lines: {exc}") from None
    if isinstance(body, dict):
        body = body.get("events", [body])
    if not isinstance(body, list):
        raise ToolError(f"{path}: expected a list of events")
    return [e for e in body if isinstance(e, dict)]


def place_markers(
    events: list[dict[str, Any]],
    *,
    start: float | None,
    channel: str | None,
    duration_s: float,
    notes: list[str],
) -> list[Marker]:
    """Events -> markers on the recording's time axis (only the styled types, in range)."""
    timed: list[tuple[float, dict[str, Any]]] = []
    for event in events:
        kind = event.get("type")
        if kind not in MARKER_STYLES or "ts" not in event:
            continue
        if (
            channel is not None
            and event.get("source") == "channel"
            and (event.get("source_id") != channel)
        ):
            continue  # another channel's event
        timed.append((parse_time(event["ts"]), event))
    timed.sort(key=lambda item: item[0])
    if start is None and timed:
        start = timed[0][0]
        notes.append("no start time (no sidecar, no --start): first event placed at t=0")
    markers = []
    outside = 0
    for when, event in timed:
        assert start is not None
        t = when - start
        if not -0.001 <= t <= duration_s + 0.001:
            outside += 1
            continue
        style = MARKER_STYLES[str(event["type"])]
        label = style.label
        data = event.get("data")
        if isinstance(data, dict) and data.get("fault"):
            label = f"{label}: {data['fault']}"
        markers.append(Marker(t=max(0.0, t), type=str(event["type"]), label=label))
    if outside:
        notes.append(f"{outside} event(s) outside the recording not drawn")
    return markers


# -- drawing --------------------------------------------------------------------------------


def level_dbfs(
    samples: NDArray[np.float64], rate: int, window_s: float = LEVEL_WINDOW_S
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(window start times, RMS level in dBFS) per window; a sine at full scale is -3 dBFS."""
    size = max(1, round(rate * window_s))
    count = len(samples) // size
    if count == 0:
        return np.zeros(0), np.zeros(0)
    frames = samples[: count * size].reshape(count, size)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    with np.errstate(divide="ignore"):
        level = 20.0 * np.log10(rms)
    level = np.maximum(level, LEVEL_FLOOR_DBFS)
    return np.arange(count) * size / rate, level


def _envelope(
    samples: NDArray[np.float64], rate: int, buckets: int
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Min/max per bucket: a long recording drawn as its envelope, not millions of points."""
    size = max(1, len(samples) // buckets)
    count = len(samples) // size
    frames = samples[: count * size].reshape(count, size)
    return np.arange(count) * size / rate, frames.min(axis=1), frames.max(axis=1)


def build_figure(
    recording: Recording,
    markers: list[Marker],
    *,
    title: str,
    size_px: tuple[int, int] = (1400, 900),
    dpi: int = 100,
) -> Any:
    """The three panels with markers; returns a matplotlib Figure (Agg, no pyplot state).

    Every marker line has gid "marker:<type>" and every span "span:<name>", so callers
    (and tests) can find what was drawn.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    samples, rate = recording.samples, recording.rate
    duration = len(samples) / rate
    fig = Figure(figsize=(size_px[0] / dpi, size_px[1] / dpi), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    ax_wave, ax_level, ax_spec = fig.subplots(
        3, 1, sharex=True, gridspec_kw={"height_ratios": [1, 1, 1.4]}
    )
    fig.suptitle(title, fontsize=11)

    if len(samples) > 8 * size_px[0]:
        t, low, high = _envelope(samples, rate, 2 * size_px[0])
        ax_wave.fill_between(t, low, high, color="#1f77b4", linewidth=0)
    elif len(samples):
        ax_wave.plot(np.arange(len(samples)) / rate, samples, color="#1f77b4", linewidth=0.6)
    ax_wave.set_ylim(-1.05, 1.05)
    ax_wave.set_ylabel("amplitude (FS)")

    t_level, level = level_dbfs(samples, rate)
    if len(level):
        ax_level.step(t_level, level, where="post", color="#9467bd", linewidth=1.0)
    ax_level.set_ylim(LEVEL_FLOOR_DBFS - 3, 3)
    ax_level.set_ylabel(f"level (dBFS, {LEVEL_WINDOW_S * 1000:g} ms)")
    ax_level.axhline(0, color="grey", linewidth=0.5)

    nfft = 256 if rate <= 16_000 else 1024
    if len(samples) > nfft:
        # A whisper of noise keeps digital silence finite in dB (log of zero).
        noisy = samples + np.random.default_rng(0).normal(0, 1e-7, len(samples))
        _, _, _, image = ax_spec.specgram(
            noisy, NFFT=nfft, Fs=rate, noverlap=nfft // 2, cmap="magma", scale="dB"
        )
        values = np.asarray(image.get_array(), dtype=np.float64)
        finite = values[np.isfinite(values)]
        if finite.size:
            top = float(finite.max())
            image.set_clim(top - SPECTRUM_RANGE_DB, top)
    ax_spec.set_ylim(0, rate / 2)
    ax_spec.set_ylabel("frequency (Hz)")
    ax_spec.set_xlabel("seconds from the start of the recording")
    for ax in (ax_wave, ax_level, ax_spec):
        ax.set_xlim(0, max(duration, 1e-3))
        ax.grid(True, alpha=0.25)

    spans: dict[str, float] = {}
    for marker in markers:
        style = MARKER_STYLES[marker.type]
        for ax in (ax_wave, ax_level, ax_spec):
            ax.axvline(
                marker.t,
                color=style.color,
                linestyle=style.linestyle,
                linewidth=1.4,
                gid=f"marker:{marker.type}",
            )
        ax_wave.annotate(
            marker.label,
            (marker.t, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(2, -2),
            textcoords="offset points",
            rotation=90,
            va="top",
            fontsize=7,
            color=style.color,
        )
        if style.span is not None:
            if style.opens:
                spans.setdefault(style.span, marker.t)
            elif style.span in spans:
                _span(ax_level, spans.pop(style.span), marker.t, style)
    for name, began in spans.items():  # still keyed / receiving at the end
        style = next(s for s in MARKER_STYLES.values() if s.span == name and s.opens)
        _span(ax_level, began, duration, style)

    kinds = list(dict.fromkeys(m.type for m in markers))
    if kinds:
        handles = [
            Line2D([], [], color=MARKER_STYLES[k].color, linestyle=MARKER_STYLES[k].linestyle)
            for k in kinds
        ]
        ax_wave.legend(
            handles, [MARKER_STYLES[k].label for k in kinds], loc="lower right", fontsize=8
        )
    return fig


def _span(ax: Any, begin: float, end: float, style: MarkerStyle) -> None:
    ax.axvspan(begin, end, color=style.color, alpha=0.12, linewidth=0, gid=f"span:{style.span}")


# -- command line ---------------------------------------------------------------------------


def _size(text: str, parser: argparse.ArgumentParser) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        parser.error(f"--size must look like 1400x900, not {text!r}")
    if not (200 <= width <= 10_000 and 200 <= height <= 10_000):
        parser.error("--size: each side must be 200..10000 pixels")
    return width, height


def make_plot(
    wav: Path,
    output: Path,
    *,
    events_path: Path | None = None,
    start: str | None = None,
    size_px: tuple[int, int] = (1400, 900),
    title: str | None = None,
    column: int = 0,
    channel: str | None = None,
) -> PlotInfo:
    """Read, place markers, draw, save. Raises ToolError with a one-line reason.
    `channel`: whose events to mark (default: the sidecar's)."""
    recording = read_wav(wav, column=column)
    sidecar = read_sidecar(wav) or {}
    if channel is not None:
        sidecar["channel"] = channel
    notes: list[str] = []
    start_epoch: float | None = None
    if start is not None:
        start_epoch = parse_time(start)
    elif sidecar.get("start_ts") is not None:
        start_epoch = parse_time(sidecar["start_ts"])
    channel = sidecar.get("channel")
    channel = str(channel) if channel is not None else None
    duration = len(recording.samples) / recording.rate
    markers: list[Marker] = []
    if events_path is not None:
        markers = place_markers(
            load_events(events_path),
            start=start_epoch,
            channel=channel,
            duration_s=duration,
            notes=notes,
        )
    when = ""
    if start_epoch is not None:
        when = " · " + datetime.fromtimestamp(start_epoch).astimezone().isoformat(
            timespec="seconds"
        )
    heading = title or (
        f"{wav.name}" + (f" · channel {channel}" if channel else "") + when + f" · {duration:.1f} s"
    )
    fig = build_figure(recording, markers, title=heading, size_px=size_px)
    try:
        fig.savefig(output, dpi=fig.dpi, format="png")
    except OSError as exc:
        raise ToolError(f"{output}: cannot write: {exc.strerror}") from None
    peak = float(np.max(np.abs(recording.samples))) if len(recording.samples) else 0.0
    return PlotInfo(
        wav=str(wav),
        output=str(output),
        rate=recording.rate,
        channels=recording.channels,
        duration_s=round(duration, 3),
        start_ts=None if start_epoch is None else utc_timestamp(start_epoch),
        channel=channel,
        peak_dbfs=round(20 * math.log10(peak), 2) if peak > 0 else LEVEL_FLOOR_DBFS,
        markers=[asdict(m) for m in markers],
        notes=notes,
    )


def run(args: argparse.Namespace) -> int:
    size = _size(args.size, args.parser)
    output = Path(args.output)
    if output.suffix.lower() != ".png":
        args.parser.error(f"-o must name a .png file, not {args.output!r}")
    info = make_plot(
        Path(args.wav),
        output,
        events_path=Path(args.events) if args.events else None,
        start=args.start,
        size_px=size,
        title=args.title,
        column=args.column,
    )
    if args.json:
        print(json.dumps(asdict(info), indent=2))
    else:
        for note in info.notes:
            print(f"note: {note}")
        print(
            f"wrote {info.output}: {info.duration_s:g} s at {info.rate} Hz, peak "
            f"{info.peak_dbfs:g} dBFS, {len(info.markers)} marker(s)"
        )
    return 0
