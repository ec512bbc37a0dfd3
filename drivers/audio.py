"""Audio capture and playback on PortAudio (sounddevice), for any number of sound cards.

Devices are chosen by name pattern and host API, never by index: indices change whenever a
card comes or goes. PortAudio's callback thread hands blocks to asyncio through a bounded
deque and at most one pending `call_soon_threadsafe` wake-up, so neither side ever waits for
the other; a consumer that falls behind loses the oldest blocks, and that is counted.

Device loss: PortAudio ends a stream whose device fails (the finished callback fires without
our asking); a stream that silently stops delivering is caught by a stall timeout. Both end
in `DeviceLost` from `read()`/`play()`, after which the object is closed and may be opened
again (the gateway retries with backoff).

Finding devices again: PortAudio scans devices only when it is initialised. A device that was
present at the last scan and returns under the same name is opened again directly. One that
was absent (or returns under another name) needs a re-initialisation, which closes every
stream in the process; `rescan_devices()` therefore suspends and resumes every open stream
of this module (they see a short gap flagged as a discontinuity, not an error), and `open()`
only triggers it after a scan in a child process has shown that it would find the device.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import json
import logging
import math
import re
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NoReturn, Self, TypeVar

import numpy as np
import sounddevice as sd
from numpy.typing import ArrayLike, NDArray

from drivers.errors import DeviceError, DeviceLost, DeviceUnavailable

__all__ = [
    "AudioBlock",
    "AudioCapture",
    "AudioDeviceInfo",
    "AudioPlayback",
    "CaptureStats",
    "PlaybackStats",
    "find_device",
    "list_devices",
    "rescan_devices",
    "scan_devices",
    "split_channels",
]

log = logging.getLogger(__name__)

K = TypeVar("K")

# Every PortAudio control call (open, start, stop, close, query, re-initialise) holds this
# lock: PortAudio is not thread-safe across those calls, and a re-initialisation must not
# overlap any of them. Callbacks never take it.
_pa_lock = threading.RLock()

# ALSA's library writes its errors (a card unplugged, a PCM gone) straight to stderr, once
# per retry from PortAudio's rescans: dozens of lines an hour for a loss this driver already
# reports once as DeviceLost. Its error handler is ours instead: each distinct message once,
# at debug level. The CFUNCTYPE object must live as long as the process.
_ALSA_HANDLER_TYPE = ctypes.CFUNCTYPE(
    None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p
)
_alsa_seen: set[tuple[bytes, int]] = set()


def _alsa_error(
    file: bytes | None, line: int, function: bytes | None, err: int, fmt: bytes | None
) -> None:
    key = (function or b"", err)
    if key not in _alsa_seen and len(_alsa_seen) < 256:
        _alsa_seen.add(key)
        log.debug(
            "ALSA %s: %s (error %d)",
            (function or b"?").decode(errors="replace"),
            (fmt or b"").decode(errors="replace").strip(),
            err,
        )


_alsa_handler = _ALSA_HANDLER_TYPE(_alsa_error)


def _route_alsa_errors() -> None:
    name = ctypes.util.find_library("asound")
    if name is None:
        return  # no ALSA (another host API): nothing writes behind our back
    try:
        ctypes.CDLL(name).snd_lib_error_set_handler(_alsa_handler)
    except (OSError, AttributeError):
        log.debug("could not route ALSA's error messages; they go to stderr")


_route_alsa_errors()
_owners: set[_StreamOwner] = set()  # objects with an open PortAudio stream


class _Generation:
    """Bumped by every PortAudio re-initialisation (so concurrent opens rescan once)."""

    value = 0


@dataclass(frozen=True, slots=True)
class AudioDeviceInfo:
    """One PortAudio device as of the last scan."""

    index: int
    """PortAudio index: valid only until the next rescan."""
    name: str
    hostapi: str
    max_input_channels: int
    max_output_channels: int
    default_samplerate: float


@dataclass(frozen=True, slots=True)
class AudioBlock:
    """A block of captured audio."""

    timestamp: float
    """time.monotonic() estimate of the first frame's capture: the least delayed arrival seen,
    so late by at most the input latency plus callback jitter. Increases block to block."""
    index: int
    """Frame number of the first frame since open; a jump means blocks were dropped."""
    frames: NDArray[np.float32]
    """Read-only, shape (n, channels), full scale +-1.0."""
    discontinuity: bool
    """Audio was lost just before this block (input overflow, queue drop or rescan)."""


@dataclass(frozen=True, slots=True)
class CaptureStats:
    blocks: int
    """Blocks handed to the consumer."""
    frames: int
    input_overflows: int
    """Callbacks where PortAudio reported an input overflow (audio lost before us)."""
    queue_drops: int
    """Blocks dropped because the consumer fell `queue_seconds` behind."""
    resumes: int
    """Times the stream was reopened by a device rescan."""


@dataclass(frozen=True, slots=True)
class PlaybackStats:
    plays: int
    """play() calls that completed."""
    output_underflows: int
    resumes: int


def split_channels(
    frames: NDArray[np.float32], columns: Mapping[K, int]
) -> dict[K, NDArray[np.float32]]:
    """Map columns of a (n, channels) block to logical channels: {key: 1-D view of column}.

    For a stereo card carrying two radios: split_channels(block.frames, {"r1": 0, "r2": 1}).
    """
    if frames.ndim != 2:
        raise ValueError(f"frames must have shape (n, channels), got {frames.shape}")
    width = frames.shape[1]
    for key, col in columns.items():
        if not 0 <= col < width:
            raise ValueError(f"column {col} for {key!r} is outside 0..{width - 1}")
    return {key: frames[:, col] for key, col in columns.items()}


# --- device lists --------------------------------------------------------------------------


def _query_locked() -> list[AudioDeviceInfo]:
    apis = sd.query_hostapis()
    return [
        AudioDeviceInfo(
            index=int(d["index"]),
            name=str(d["name"]),
            hostapi=str(apis[d["hostapi"]]["name"]),
            max_input_channels=int(d["max_input_channels"]),
            max_output_channels=int(d["max_output_channels"]),
            default_samplerate=float(d["default_samplerate"]),
        )
        for d in sd.query_devices()
    ]


def list_devices() -> list[AudioDeviceInfo]:
    """The devices PortAudio found at its last scan (cheap; blocks while a rescan runs)."""
    with _pa_lock:
        return _query_locked()


_PROBE_CODE = """
import json, sounddevice as sd
apis = sd.query_hostapis()
print(json.dumps([[d["index"], d["name"], apis[d["hostapi"]]["name"], d["max_input_channels"],
                   d["max_output_channels"], d["default_samplerate"]] for d in sd.query_devices()]))
"""


def _probe_blocking() -> list[AudioDeviceInfo] | None:
    """Scan in a child process: a fresh PortAudio sees the devices present now (~0.1 s)."""
    try:
        result = subprocess.run(
            [sys.executable, "-c", _PROBE_CODE],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30.0,
            check=True,
        )
        rows = json.loads(result.stdout.strip().splitlines()[-1])
        return [
            AudioDeviceInfo(
                index=int(r[0]),
                name=str(r[1]),
                hostapi=str(r[2]),
                max_input_channels=int(r[3]),
                max_output_channels=int(r[4]),
                default_samplerate=float(r[5]),
            )
            for r in rows
        ]
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        log.warning("audio device scan in a child process failed: %s", exc)
        return None


async def scan_devices() -> list[AudioDeviceInfo]:
    """The devices present now, scanned in a child process: disturbs no open stream.

    The indices are the child's; they tell nothing about this process. Raises DeviceError
    when the scan fails.
    """
    devices = await asyncio.to_thread(_probe_blocking)
    if devices is None:
        raise DeviceError("audio device scan failed")
    return devices


def _rescan_blocking() -> list[AudioDeviceInfo]:
    with _pa_lock:
        owners = list(_owners)
        for owner in owners:
            owner._suspend_locked()
        # sounddevice counts its initialisations, and PortAudio only really terminates
        # when the count reaches zero: undo them all, then restore the same count.
        count = max(int(sd._initialized), 1)
        while sd._initialized > 0:
            sd._terminate()
        for _ in range(count):
            sd._initialize()
        _Generation.value += 1
        for owner in owners:
            owner._resume_locked()
        devices = _query_locked()
    log.info("audio devices rescanned: %d found, %d streams resumed", len(devices), len(owners))
    return devices


async def rescan_devices() -> list[AudioDeviceInfo]:
    """Re-initialise PortAudio so that it sees the devices present now.

    Every open AudioCapture/AudioPlayback of this process is closed and reopened around it
    (a gap of some tens of ms, flagged as a discontinuity); one whose device is gone gets
    DeviceLost. Streams opened on PortAudio by other code would be destroyed: do not mix.
    """
    return await asyncio.to_thread(_rescan_blocking)


def _compile(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:
        return None  # not a valid regex: a plain substring then


def _name_matches(name: str, pattern: str, regex: re.Pattern[str] | None) -> bool:
    return pattern in name or (regex is not None and regex.search(name) is not None)


def _hostapi_matches(hostapi: str, wanted: str | None) -> bool:
    return wanted is None or wanted.casefold() in hostapi.casefold()


def find_device(
    devices: list[AudioDeviceInfo],
    *,
    pattern: str,
    hostapi: str | None = None,
    direction: Literal["input", "output"],
    channels: int = 1,
) -> AudioDeviceInfo:
    """The one device whose name matches `pattern` (a substring or a regex searched in the
    name; an exact name wins over partial matches) on the host API containing `hostapi`.

    Raises DeviceUnavailable when none matches, when it has too few channels in that
    direction, or when several match (ambiguous: a wrong card is a wrong radio).
    """
    regex = _compile(pattern)
    found = [
        d
        for d in devices
        if _hostapi_matches(d.hostapi, hostapi) and _name_matches(d.name, pattern, regex)
    ]
    usable = [
        d
        for d in found
        if (d.max_input_channels if direction == "input" else d.max_output_channels) >= channels
    ]
    exact = [d for d in usable if d.name == pattern]
    pool = exact or usable
    where = f" on host API {hostapi!r}" if hostapi else ""
    if len(pool) == 1:
        return pool[0]
    if not pool:
        if found:
            raise DeviceUnavailable(
                f"audio device {found[0].name!r} has fewer than {channels} {direction} channels"
            )
        raise DeviceUnavailable(f"no audio device matches {pattern!r}{where}")
    names = ", ".join(repr(d.name) for d in pool)
    raise DeviceUnavailable(f"audio device pattern {pattern!r}{where} is ambiguous: {names}")


# --- the common stream owner ---------------------------------------------------------------


class _StreamOwner:
    """Opens a PortAudio stream on a device found by name, survives rescans, reports loss."""

    _direction: ClassVar[Literal["input", "output"]]

    def __init__(
        self,
        *,
        device: str,
        hostapi: str | None,
        samplerate: int,
        channels: int,
        blocksize: int,
        latency: float,
        allow_rescan: bool,
    ) -> None:
        if not isinstance(device, str) or not device:
            raise ValueError("device must be a non-empty name pattern")
        if hostapi is not None and not hostapi:
            raise ValueError("hostapi must be None or a non-empty name")
        if not isinstance(samplerate, int) or not 1000 <= samplerate <= 384_000:
            raise ValueError(f"samplerate must be an int in [1000, 384000], got {samplerate!r}")
        if not isinstance(channels, int) or not 1 <= channels <= 64:
            raise ValueError(f"channels must be an int in [1, 64], got {channels!r}")
        if not isinstance(blocksize, int) or not 0 <= blocksize <= samplerate:
            raise ValueError(f"blocksize must be an int in [0, samplerate], got {blocksize!r}")
        if not 0.0 < latency <= 2.0:
            raise ValueError(f"latency must be in (0, 2] seconds, got {latency!r}")
        self._pattern = device
        self._hostapi = hostapi
        self._samplerate = samplerate
        self._channels = channels
        self._blocksize = blocksize
        self._latency = latency
        self._allow_rescan = allow_rescan
        self._stream: Any = None  # the sounddevice stream; touched only under _pa_lock
        self._device: AudioDeviceInfo | None = None
        self._token = 0  # identifies the current stream; a stale finished callback is ignored
        self._is_open = False
        self._lost: str | None = None  # set from any thread when the device is lost
        self._lost_logged = False
        self._was_lost = False  # the last stream ended in DeviceLost
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake_pending = False
        self._resumes = 0

    @property
    def description(self) -> str:
        """The pattern and, once open, the device it resolved to (for logs)."""
        where = f"@{self._hostapi}" if self._hostapi else ""
        dev = self._device
        return f"{self._pattern!r}{where}" + (f" -> {dev.name!r}" if dev else "")

    @property
    def device(self) -> AudioDeviceInfo | None:
        """The device in use, or None when not open."""
        return self._device if self._is_open else None

    @property
    def is_open(self) -> bool:
        return self._is_open

    @property
    def samplerate(self) -> int:
        return self._samplerate

    @property
    def channels(self) -> int:
        return self._channels

    async def open(self) -> None:
        """Find the device by name and start streaming.

        Raises DeviceUnavailable when it is absent, ambiguous or cannot be opened.
        """
        if self._is_open:
            raise RuntimeError(f"audio {self._direction} {self.description} is already open")
        self._loop = asyncio.get_running_loop()
        self._lost = None
        self._lost_logged = False
        self._wake_pending = False
        self._reset()
        opening = asyncio.ensure_future(asyncio.to_thread(self._open_blocking))
        try:
            await asyncio.shield(opening)
        except asyncio.CancelledError:
            # The worker thread cannot be stopped: release what it opens, when it is done.
            opening.add_done_callback(self._release_cancelled_open)
            raise
        self._is_open = True
        # At debug: the audio device's owner logs the open (gathered at start).
        log.debug("audio %s %s open", self._direction, self.description)

    def _release_cancelled_open(self, opening: asyncio.Future[None]) -> None:
        if not opening.cancelled() and opening.exception() is None and not self._is_open:
            threading.Thread(target=self._close_blocking, daemon=True).start()

    async def close(self) -> None:
        """Stop and release the stream. Never raises; safe to call twice."""
        was_open = self._is_open
        self._is_open = False
        try:
            await asyncio.to_thread(self._close_blocking)
        except Exception:  # close must not fail the caller's cleanup path
            log.exception("closing audio %s %s", self._direction, self.description)
        self._closed()
        if was_open:
            log.info("audio %s %s closed", self._direction, self.description)

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def _raise_lost(self, reason: str) -> NoReturn:
        """Report a lost stream once, close it, and raise DeviceLost."""
        self._log_lost(reason)
        await self.close()
        raise DeviceLost(f"audio {self._direction} {self.description}: {reason}")

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # Subclass hooks.
    def _reset(self) -> None:
        raise NotImplementedError

    def _closed(self) -> None:
        raise NotImplementedError

    def _make_stream(self, device: AudioDeviceInfo, token: int) -> Any:
        raise NotImplementedError

    def _handle_wake(self) -> None:
        raise NotImplementedError

    def _before_resume(self) -> None:
        pass

    # Opening and closing (worker threads).
    def _open_blocking(self) -> None:
        fresh: list[AudioDeviceInfo] | None = None
        if self._allow_rescan and self._was_lost:
            # Reopening after a loss: look first, in a child, instead of opening a device
            # that is probably still gone (PortAudio and ALSA write errors to stderr).
            fresh = _probe_blocking()
            if fresh is not None and self._match_or_none(fresh) is None:
                raise DeviceUnavailable(f"audio device {self._pattern!r} is still absent")
        with _pa_lock:
            try:
                self._open_locked()
                self._was_lost = False
                return
            except DeviceUnavailable as exc:
                first = exc
                local = self._match_or_none(_query_locked())
                generation = _Generation.value
        if not self._allow_rescan:
            raise first
        if fresh is None:
            fresh = _probe_blocking()
        present = self._match_or_none(fresh or [])
        if present is None:
            raise first
        if local is not None and local.name == present.name:
            raise first  # same device as in our list: a rescan would not change anything
        if generation == _Generation.value:  # nobody rescanned meanwhile
            log.info("audio device %r appeared: rescanning PortAudio devices", present.name)
            _rescan_blocking()
        with _pa_lock:
            self._open_locked()
        self._was_lost = False

    def _match_or_none(self, devices: list[AudioDeviceInfo]) -> AudioDeviceInfo | None:
        try:
            return find_device(
                devices,
                pattern=self._pattern,
                hostapi=self._hostapi,
                direction=self._direction,
                channels=self._channels,
            )
        except DeviceUnavailable:
            return None

    def _open_locked(self) -> None:
        device = find_device(
            _query_locked(),
            pattern=self._pattern,
            hostapi=self._hostapi,
            direction=self._direction,
            channels=self._channels,
        )
        self._token += 1
        try:
            stream = self._make_stream(device, self._token)
        except (sd.PortAudioError, ValueError) as exc:
            raise DeviceUnavailable(f"cannot open audio device {device.name!r}: {exc}") from exc
        try:
            stream.start()
        except sd.PortAudioError as exc:
            self._token += 1
            stream.close(ignore_errors=True)
            raise DeviceUnavailable(f"cannot start audio device {device.name!r}: {exc}") from exc
        self._stream = stream
        self._device = device
        _owners.add(self)

    def _close_locked(self) -> None:
        stream, self._stream = self._stream, None
        self._token += 1  # the finished callback of this stream is ours, not a loss
        _owners.discard(self)
        if stream is not None:
            stream.abort(ignore_errors=True)
            stream.close(ignore_errors=True)

    def _close_blocking(self) -> None:
        with _pa_lock:
            self._close_locked()

    def _suspend_locked(self) -> None:
        self._close_locked()

    def _resume_locked(self) -> None:
        if self._lost is not None:
            return
        self._before_resume()
        try:
            self._open_locked()
            self._resumes += 1
        except DeviceUnavailable as exc:
            self._mark_lost(f"not found again after a device rescan: {exc}")

    # Cross-thread signalling.
    def _finished(self, token: int) -> None:
        """PortAudio's finished callback (its thread): unasked-for means the device failed."""
        if token == self._token:
            self._mark_lost("PortAudio ended the stream (device error or removal)")

    def _mark_lost(self, reason: str) -> None:
        if self._lost is None:
            self._lost = reason
        self._wake()

    def _wake(self) -> None:
        """Schedule _handle_wake in the loop; at most one pending, so never a flood."""
        if self._wake_pending:
            return
        loop = self._loop
        if loop is None:
            return
        self._wake_pending = True
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is listening
            loop.call_soon_threadsafe(self._on_wake)

    def _on_wake(self) -> None:
        self._wake_pending = False  # first, so that a wake during handling is not lost
        self._handle_wake()

    def _log_lost(self, reason: str) -> None:
        self._was_lost = True
        if not self._lost_logged:
            self._lost_logged = True
            log.warning("audio %s %s lost: %s", self._direction, self.description, reason)


# --- capture -------------------------------------------------------------------------------


class _ClosedError(RuntimeError):
    pass


class AudioCapture(_StreamOwner):
    """Captures float32 blocks of shape (blocksize, channels) from one device.

    `read()` (or `async for block in capture`) returns blocks in order. One task reads.
    """

    _direction = "input"

    def __init__(
        self,
        *,
        device: str,
        hostapi: str | None = None,
        samplerate: int = 8000,
        channels: int = 1,
        blocksize: int = 160,
        latency: float = 0.2,
        queue_seconds: float = 2.0,
        stall_timeout: float = 2.0,
        start_timeout: float = 5.0,
        allow_rescan: bool = True,
    ) -> None:
        """`device`: name substring or regex; `hostapi`: e.g. "ALSA" (None: any).

        `blocksize`: frames per block (fixed, > 0). `latency`: PortAudio's buffer in seconds,
        generous so that a loaded machine loses no audio. `queue_seconds`: audio kept for a
        slow consumer before the oldest is dropped. No block for `stall_timeout` s
        (`start_timeout` for the first) counts as device loss. `allow_rescan`: open() may
        re-initialise PortAudio when a child-process scan shows the device has appeared.
        """
        super().__init__(
            device=device,
            hostapi=hostapi,
            samplerate=samplerate,
            channels=channels,
            blocksize=blocksize,
            latency=latency,
            allow_rescan=allow_rescan,
        )
        if blocksize == 0:
            raise ValueError("blocksize must be > 0 for capture (fixed-size blocks)")
        if not 0.1 <= queue_seconds <= 600.0:
            raise ValueError(f"queue_seconds must be in [0.1, 600], got {queue_seconds!r}")
        if not 0.1 <= stall_timeout <= 60.0 or not stall_timeout <= start_timeout <= 120.0:
            raise ValueError("need 0.1 <= stall_timeout <= start_timeout <= 120 seconds")
        self._maxlen = max(2, math.ceil(queue_seconds * samplerate / blocksize))
        self._stall_timeout = stall_timeout
        self._start_timeout = start_timeout
        self._buf: deque[tuple[float, int, NDArray[np.float32], bool]] = deque(maxlen=self._maxlen)
        self._event = asyncio.Event()
        # Counters cover the object's life, across reopens.
        self._blocks = 0
        self._frames = 0
        self._overflows = 0
        self._drops = 0
        self._reset()

    def _reset(self) -> None:
        self._buf = deque(maxlen=self._maxlen)
        self._event = asyncio.Event()
        self._frames_in = 0  # callback side
        self._gap_next = False
        self._last_cb = 0.0
        self._opened_at = time.monotonic()
        self._next_index = 0  # consumer side
        self._anchor: float | None = None

    @property
    def stats(self) -> CaptureStats:
        return CaptureStats(
            blocks=self._blocks,
            frames=self._frames,
            input_overflows=self._overflows,
            queue_drops=self._drops,
            resumes=self._resumes,
        )

    def _make_stream(self, device: AudioDeviceInfo, token: int) -> Any:
        return sd.InputStream(
            device=device.index,
            samplerate=self._samplerate,
            blocksize=self._blocksize,
            channels=self._channels,
            dtype="float32",
            latency=self._latency,
            callback=self._callback,
            finished_callback=lambda: self._finished(token),
        )

    def _before_resume(self) -> None:
        # The stream is closed here, so the callback cannot race these.
        self._gap_next = True
        self._last_cb = 0.0  # the reopened stream gets start_timeout for its first block
        self._opened_at = time.monotonic()

    def _callback(self, indata: NDArray[np.float32], frames: int, _t: Any, status: Any) -> None:
        """PortAudio's thread: copy, enqueue, wake. Never blocks, never raises."""
        try:
            now = time.monotonic()
            overflow = bool(status.input_overflow)
            if overflow:
                self._overflows += 1
            gap = overflow or self._gap_next
            self._gap_next = False
            index = self._frames_in
            self._frames_in += frames
            if len(self._buf) == self._maxlen:
                self._drops += 1  # append below drops the oldest
            self._buf.append((now, index, indata.copy(), gap))
            self._last_cb = now
            self._wake()
        except Exception:  # an exception here would abort the stream
            self._gap_next = True

    def _handle_wake(self) -> None:
        self._event.set()

    def _closed(self) -> None:
        self._buf.clear()
        self._event.set()  # a reader waiting in read() sees the close

    def _block(self, item: tuple[float, int, NDArray[np.float32], bool]) -> AudioBlock:
        now, index, frames, gap = item
        n = len(frames)
        gap = gap or index != self._next_index
        self._next_index = index + n
        rate = self._samplerate
        measured = now - n / rate  # when the first frame was captured, at the latest
        if self._anchor is None or gap:
            self._anchor = measured - index / rate
        else:
            expected = self._anchor + index / rate
            if measured < expected:
                # Less delayed than before: a better estimate. Slew towards it by at most a
                # quarter block per block, so that timestamps never run backwards.
                self._anchor -= min(expected - measured, 0.25 * n / rate)
            elif measured - expected > 0.1:  # clock drift, or frames lost unseen
                self._anchor += measured - expected
        frames.flags.writeable = False
        self._blocks += 1
        self._frames += n
        return AudioBlock(
            timestamp=self._anchor + index / rate, index=index, frames=frames, discontinuity=gap
        )

    async def read(self) -> AudioBlock:
        """The next block. Raises DeviceLost (and closes) when the device is gone."""
        if not self._is_open:
            raise _ClosedError(f"audio input {self.description} is not open")
        while True:
            if self._buf:
                return self._block(self._buf.popleft())
            if not self._is_open:
                raise _ClosedError(f"audio input {self.description} was closed")
            if self._lost is not None:
                await self._raise_lost(self._lost)
            self._event.clear()
            if self._buf or self._lost is not None:
                continue
            now = time.monotonic()
            if self._last_cb:
                deadline = self._last_cb + self._stall_timeout
            else:
                deadline = self._opened_at + self._start_timeout
            if now >= deadline:
                self._lost = f"no audio for {now - (self._last_cb or self._opened_at):.1f} s"
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(deadline - now):
                    await self._event.wait()

    def __aiter__(self) -> AudioCapture:
        return self

    async def __anext__(self) -> AudioBlock:
        try:
            return await self.read()
        except _ClosedError:
            raise StopAsyncIteration from None


# --- playback ------------------------------------------------------------------------------


class _PlayItem:
    __slots__ = ("cancelled", "future", "parts_left")

    def __init__(self, future: asyncio.Future[None], parts: int) -> None:
        self.future = future
        self.parts_left = parts
        self.cancelled = False


class _Part:
    __slots__ = ("data", "item", "pos")

    def __init__(self, item: _PlayItem, data: NDArray[np.float32]) -> None:
        self.item = item
        self.data = data
        self.pos = 0


class AudioPlayback(_StreamOwner):
    """Plays samples on one device, each column independently (a stereo card carrying two
    radios plays a TTY reply on one column while the other stays free).

    The stream runs (silence) from open() to close(), so a play starts within one buffer.
    """

    _direction = "output"

    def __init__(
        self,
        *,
        device: str,
        hostapi: str | None = None,
        samplerate: int = 8000,
        channels: int = 1,
        blocksize: int = 0,
        latency: float = 0.2,
        stall_timeout: float = 5.0,
        allow_rescan: bool = True,
    ) -> None:
        """Arguments as for AudioCapture; `blocksize` 0 lets PortAudio choose. A play that
        has not finished `stall_timeout` s after its due time counts as device loss."""
        super().__init__(
            device=device,
            hostapi=hostapi,
            samplerate=samplerate,
            channels=channels,
            blocksize=blocksize,
            latency=latency,
            allow_rescan=allow_rescan,
        )
        if not 0.1 <= stall_timeout <= 60.0:
            raise ValueError(f"stall_timeout must be in [0.1, 60], got {stall_timeout!r}")
        self._stall_timeout = stall_timeout
        self._plays = 0  # counters cover the object's life, across reopens
        self._underflows = 0
        self._reset()

    def _reset(self) -> None:
        self._queues: list[deque[_Part]] = [deque() for _ in range(self._channels)]
        self._done: deque[_Part] = deque()
        self._out_latency = 0.0

    @property
    def stats(self) -> PlaybackStats:
        return PlaybackStats(
            plays=self._plays, output_underflows=self._underflows, resumes=self._resumes
        )

    def _make_stream(self, device: AudioDeviceInfo, token: int) -> Any:
        stream = sd.OutputStream(
            device=device.index,
            samplerate=self._samplerate,
            blocksize=self._blocksize,
            channels=self._channels,
            dtype="float32",
            latency=self._latency,
            callback=self._callback,
            finished_callback=lambda: self._finished(token),
        )
        self._out_latency = float(stream.latency)
        return stream

    def _callback(self, outdata: NDArray[np.float32], frames: int, _t: Any, status: Any) -> None:
        """PortAudio's thread: fill each column from its queue. Never blocks or raises."""
        try:
            outdata.fill(0.0)
            if status.output_underflow:
                self._underflows += 1
            finished = False
            for col, queue in enumerate(self._queues):
                filled = 0
                while filled < frames and queue:
                    part = queue[0]
                    if part.item.cancelled:
                        queue.popleft()
                        continue
                    n = min(frames - filled, len(part.data) - part.pos)
                    outdata[filled : filled + n, col] = part.data[part.pos : part.pos + n]
                    part.pos += n
                    filled += n
                    if part.pos == len(part.data):
                        queue.popleft()
                        self._done.append(part)
                        finished = True
            if finished:
                self._wake()
        except Exception:
            outdata.fill(0.0)

    def _handle_wake(self) -> None:
        loop = self._loop
        assert loop is not None
        while self._done:
            item = self._done.popleft().item
            item.parts_left -= 1
            if item.parts_left == 0 and not item.future.done():
                # Handed to PortAudio; it is heard once the output buffer has played out.
                loop.call_later(self._out_latency, _resolve, item.future)
        if self._lost is not None:
            self._fail_pending(DeviceLost(f"audio output {self.description}: {self._lost}"))

    def _fail_pending(self, exc: Exception) -> None:
        for queue in self._queues:
            while queue:
                future = queue.popleft().item.future
                if not future.done():
                    future.set_exception(exc)

    def _closed(self) -> None:
        self._fail_pending(DeviceLost(f"audio output {self.description} was closed"))

    async def play(self, samples: ArrayLike, *, column: int | None = None) -> None:
        """Play and return once it has been heard (handed over plus the output latency).

        `samples`: 1-D (on `column`, or on every column when None) or (n, channels).
        Plays on the same column follow each other; cancelling stops this one at once.
        Raises DeviceLost (and closes) when the device is gone.
        """
        data = np.asarray(samples, dtype=np.float32)
        if data.ndim == 2:
            if data.shape[1] != self._channels or column is not None:
                raise ValueError(
                    f"2-D samples need shape (n, {self._channels}) and column=None, "
                    f"got {data.shape}, column={column}"
                )
            parts = [(c, np.ascontiguousarray(data[:, c])) for c in range(self._channels)]
        elif data.ndim == 1:
            if column is not None and not 0 <= column < self._channels:
                raise ValueError(f"column must be in 0..{self._channels - 1}, got {column}")
            cols = range(self._channels) if column is None else [column]
            parts = [(c, data.copy()) for c in cols]
        else:
            raise ValueError(f"samples must be 1-D or 2-D, got shape {data.shape}")
        if not np.all(np.isfinite(data)):
            raise ValueError("samples must be finite")
        if not self._is_open:
            raise RuntimeError(f"audio output {self.description} is not open")
        if self._lost is not None:
            await self._raise_lost(self._lost)
        if len(data) == 0:
            return
        loop = asyncio.get_running_loop()
        item = _PlayItem(loop.create_future(), len(parts))
        for col, part_data in parts:
            self._queues[col].append(_Part(item, part_data))
        queued = max(sum(len(p.data) - p.pos for p in q) for q in self._queues)
        budget = queued / self._samplerate + self._out_latency + self._stall_timeout
        try:
            async with asyncio.timeout(budget):
                await item.future
        except TimeoutError:
            item.cancelled = True
            self._lost = self._lost or f"playback stalled ({budget:.1f} s without finishing)"
        except DeviceLost:
            if self._lost is None:
                raise  # closed under us, not a loss
        except asyncio.CancelledError:
            item.cancelled = True
            raise
        if self._lost is not None:
            await self._raise_lost(self._lost)
        self._plays += 1


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
