"""Simulated audio devices that the daemon reaches through the real PortAudio/ALSA path.

Each simulated device is a private PulseAudio server (one process per device, so losing one
never disturbs another) with two null sinks: `rx`, which the simulator plays into, and `tx`,
which the daemon plays into. A private ALSA config defines one PCM per device (type `asym`:
capture from `rx.monitor`, playback into `tx`, both through the ALSA `pulse` plugin), so
PortAudio lists `consolegw_sim_<name>` as an ordinary ALSA device. The null sinks run on
PulseAudio's clock, so capture is paced in real time, and the float32 path is bit-exact.

Device loss kills that device's server: open streams fail at once (PortAudio ends the stream)
and the device vanishes from a fresh PortAudio scan (the plugin cannot connect). Replugging
restarts the server on the same socket.

Nothing global is touched: the daemon needs only the variables in `AudioSim.env`
(`ALSA_CONFIG_PATH`, `PULSE_CLIENTCONFIG`), and every file lives in the work directory.
The simulator talks to its servers with libpulse-simple (ctypes), never with PortAudio, so a
PortAudio re-initialisation in the same process (the driver's device rescan) cannot stop it.
Needs the Debian packages pulseaudio and libasound2-plugins (the ALSA `pulse` plugin).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import functools
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

PCM_PREFIX = "consolegw_sim_"
"""PortAudio/ALSA name of a simulated device: this prefix and the device name."""

DEFAULT_ALSA_CONFIG = "/usr/share/alsa/alsa.conf"

_NAME_RE = re.compile(r"[A-Za-z0-9_]{1,32}")
# PulseAudio channel maps in ALSA order: the ALSA `pulse` plugin uses this order, so using
# it on the sinks and in the simulator keeps every column where it was (no remixing).
_CHANNEL_MAPS = {
    1: "mono",
    2: "front-left,front-right",
    4: "front-left,front-right,rear-left,rear-right",
    6: "front-left,front-right,rear-left,rear-right,front-center,lfe",
    8: "front-left,front-right,rear-left,rear-right,front-center,lfe,side-left,side-right",
}
_PA_POSITIONS = {
    "mono": 0,
    "front-left": 1,
    "front-right": 2,
    "front-center": 3,
    "rear-left": 5,
    "rear-right": 6,
    "lfe": 7,
    "side-left": 10,
    "side-right": 11,
}
_SUN_PATH_MAX = 107
LOOPBACK_PRIME_S = 0.25
"""Loop-back jitter buffer: what was played is held this long before it comes back, so that
the reader thread running late on a loaded box (or waiting for the GIL of an in-process test)
leaves no hole in the looped audio. As much as the writer keeps queued, for the same reason."""
LOOPBACK_MAX_S = 0.8
"""Loop-back audio held beyond this (the writer stalled) is dropped down to the prime level,
so the loop's latency stays bounded."""


def dbfs_to_rms(rms_dbfs: float) -> float:
    """RMS amplitude of a level given as 20*log10(rms), full scale being 1.0."""
    return float(10.0 ** (rms_dbfs / 20.0))


# --- sources -----------------------------------------------------------------------------


class Source(Protocol):
    """Audio for one channel. `render` is called from the device's writer thread only."""

    def render(self, frames: int, samplerate: int) -> NDArray[np.float32]:
        """The next `frames` samples (1-D float32)."""
        ...


class Silence:
    """Digital silence (exact zeros)."""

    def render(self, frames: int, samplerate: int) -> NDArray[np.float32]:
        return np.zeros(frames, np.float32)


class Tone:
    """A sine at `frequency` Hz whose RMS level is `rms_dbfs` (peak is 3.01 dB higher)."""

    def __init__(self, *, frequency: float, rms_dbfs: float) -> None:
        if not 0.0 < frequency < 100_000.0:
            raise ValueError(f"frequency must be in (0, 100000) Hz, got {frequency}")
        if rms_dbfs > 0.0:
            raise ValueError(f"rms_dbfs must be <= 0, got {rms_dbfs}")
        self.frequency = float(frequency)
        self.rms_dbfs = float(rms_dbfs)
        self._peak = dbfs_to_rms(rms_dbfs) * math.sqrt(2.0)
        self._phase = 0.0

    def render(self, frames: int, samplerate: int) -> NDArray[np.float32]:
        step = 2.0 * math.pi * self.frequency / samplerate
        phases = self._phase + step * np.arange(frames, dtype=np.float64)
        self._phase = float((self._phase + step * frames) % (2.0 * math.pi))
        out: NDArray[np.float32] = (self._peak * np.sin(phases)).astype(np.float32)
        return out


class WhiteNoise:
    """Gaussian white noise whose RMS level is `rms_dbfs`."""

    def __init__(self, *, rms_dbfs: float, seed: int | None = None) -> None:
        if rms_dbfs > -6.0:
            raise ValueError(f"rms_dbfs must be <= -6 (peaks would clip), got {rms_dbfs}")
        self.rms_dbfs = float(rms_dbfs)
        self._rms = dbfs_to_rms(rms_dbfs)
        self._rng = np.random.default_rng(seed)

    def render(self, frames: int, samplerate: int) -> NDArray[np.float32]:
        return (self._rng.standard_normal(frames) * self._rms).astype(np.float32)


class SpeechBursts:
    """Speech-like audio: talk spurts of voice-band noise with a syllabic (~4 Hz) envelope.

    Spurt and pause lengths are drawn uniformly from `talk_s` and `pause_s`; `rms_dbfs` is
    the RMS level during a spurt. Deterministic for a given seed. `talking` tells whether a
    spurt is under way (for tests of activity detection).
    """

    def __init__(
        self,
        *,
        rms_dbfs: float = -20.0,
        talk_s: tuple[float, float] = (0.8, 2.5),
        pause_s: tuple[float, float] = (0.5, 2.0),
        seed: int | None = None,
    ) -> None:
        for label, (low, high) in (("talk_s", talk_s), ("pause_s", pause_s)):
            if not 0.0 < low <= high:
                raise ValueError(f"{label} must be (low, high) with 0 < low <= high")
        if rms_dbfs > -6.0:
            raise ValueError(f"rms_dbfs must be <= -6, got {rms_dbfs}")
        self.rms_dbfs = float(rms_dbfs)
        self._talk = talk_s
        self._pause = pause_s
        self._rng = np.random.default_rng(seed)
        self.talking = False
        self._left = 0  # frames left in the current spurt or pause
        self._t = 0  # frames into the current spurt (envelope phase)
        self._kernel: NDArray[np.float64] | None = None
        self._tail = np.zeros(0)  # last noise samples, so the filter runs across blocks

    def render(self, frames: int, samplerate: int) -> NDArray[np.float32]:
        out = np.zeros(frames, np.float32)
        done = 0
        while done < frames:
            if self._left == 0:
                self.talking = not self.talking
                span = self._talk if self.talking else self._pause
                self._left = max(1, int(self._rng.uniform(*span) * samplerate))
                self._t = 0
            n = min(self._left, frames - done)
            if self.talking:
                out[done : done + n] = self._spurt(n, samplerate)
            self._left -= n
            done += n
        return out

    def _spurt(self, n: int, samplerate: int) -> NDArray[np.float32]:
        if self._kernel is None:
            # Voice band 300-3000 Hz: a 63-tap windowed-sinc band-pass, unit RMS gain on
            # white noise so the level below is the level heard.
            taps = np.arange(63) - 31
            high = min(3000.0, 0.45 * samplerate) / samplerate
            low = 300.0 / samplerate
            kernel = 2 * high * np.sinc(2 * high * taps) - 2 * low * np.sinc(2 * low * taps)
            kernel *= np.hamming(len(taps))
            self._kernel = kernel / np.sqrt(np.sum(kernel**2))
            self._tail = np.zeros(len(taps) - 1)
        noise = np.concatenate([self._tail, self._rng.standard_normal(n)])
        self._tail = noise[-(len(self._kernel) - 1) :]
        shaped = np.convolve(noise, self._kernel, mode="valid")
        t = (self._t + np.arange(n)) / samplerate
        self._t += n
        # Syllabic envelope (~4 syllables/s); its RMS is about 0.78, compensated below.
        envelope = 0.35 + 0.65 * np.abs(np.sin(2.0 * math.pi * 2.0 * t))
        scale = dbfs_to_rms(self.rms_dbfs) / 0.78
        return (shaped * envelope * scale).astype(np.float32)


# --- libpulse-simple through ctypes --------------------------------------------------------


class _SampleSpec(ctypes.Structure):
    _fields_ = [("format", ctypes.c_int), ("rate", ctypes.c_uint32), ("channels", ctypes.c_uint8)]


class _ChannelMap(ctypes.Structure):
    _fields_ = [("channels", ctypes.c_uint8), ("map", ctypes.c_int * 32)]


class _BufferAttr(ctypes.Structure):
    _fields_ = [
        ("maxlength", ctypes.c_uint32),
        ("tlength", ctypes.c_uint32),
        ("prebuf", ctypes.c_uint32),
        ("minreq", ctypes.c_uint32),
        ("fragsize", ctypes.c_uint32),
    ]


_PA_SAMPLE_FLOAT32LE = 5
_PA_STREAM_PLAYBACK = 1
_PA_STREAM_RECORD = 2
_PA_DEFAULT = 0xFFFFFFFF


@functools.cache
def _pulse_libs() -> tuple[ctypes.CDLL, ctypes.CDLL]:
    """libpulse-simple (streams) and libpulse (error texts), loaded once."""
    simple_name = ctypes.util.find_library("pulse-simple")
    pulse_name = ctypes.util.find_library("pulse")
    if simple_name is None or pulse_name is None:
        raise RuntimeError("libpulse-simple not found: apt-get install libpulse0")
    simple = ctypes.CDLL(simple_name)
    pulse = ctypes.CDLL(pulse_name)
    simple.pa_simple_new.restype = ctypes.c_void_p
    simple.pa_simple_new.argtypes = [
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.POINTER(_SampleSpec),
        ctypes.POINTER(_ChannelMap),
        ctypes.POINTER(_BufferAttr),
        ctypes.POINTER(ctypes.c_int),
    ]
    for name in ("pa_simple_write", "pa_simple_read"):
        func = getattr(simple, name)
        func.restype = ctypes.c_int
        func.argtypes = [
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.POINTER(ctypes.c_int),
        ]
    simple.pa_simple_free.restype = None
    simple.pa_simple_free.argtypes = [ctypes.c_void_p]
    pulse.pa_strerror.restype = ctypes.c_char_p
    pulse.pa_strerror.argtypes = [ctypes.c_int]
    return simple, pulse


class _PulseError(Exception):
    pass


class _PulseStream:
    """A blocking libpulse-simple stream (one thread uses it)."""

    def __init__(
        self, *, server: str, device: str, record: bool, samplerate: int, channels: int, block: int
    ) -> None:
        simple, pulse = _pulse_libs()
        self._simple = simple
        self._pulse = pulse
        spec = _SampleSpec(_PA_SAMPLE_FLOAT32LE, samplerate, channels)
        cmap = _ChannelMap(channels)
        for i, pos in enumerate(_CHANNEL_MAPS[channels].split(",")):
            cmap.map[i] = _PA_POSITIONS[pos]
        nbytes = block * channels * 4
        if record:
            attr = _BufferAttr(_PA_DEFAULT, _PA_DEFAULT, _PA_DEFAULT, _PA_DEFAULT, nbytes)
        else:
            # About 240 ms queued: a writer thread delayed that long (a loaded 2-core box)
            # still leaves no hole in the audio. It is also the path's latency.
            attr = _BufferAttr(_PA_DEFAULT, 12 * nbytes, _PA_DEFAULT, nbytes, _PA_DEFAULT)
        err = ctypes.c_int(0)
        handle = simple.pa_simple_new(
            server.encode(),
            b"consolegw-audio-sim",
            _PA_STREAM_RECORD if record else _PA_STREAM_PLAYBACK,
            device.encode(),
            b"record" if record else b"playback",
            ctypes.byref(spec),
            ctypes.byref(cmap),
            ctypes.byref(attr),
            ctypes.byref(err),
        )
        if not handle:
            raise _PulseError(self._text(err.value))
        self._handle: int = handle

    def _text(self, code: int) -> str:
        text: bytes | None = self._pulse.pa_strerror(code)
        return text.decode() if text else f"pulse error {code}"

    def write(self, data: NDArray[np.float32]) -> None:
        err = ctypes.c_int(0)
        if self._simple.pa_simple_write(self._handle, data.ctypes.data, data.nbytes, err) < 0:
            raise _PulseError(self._text(err.value))

    def read_into(self, buf: NDArray[np.float32]) -> None:
        err = ctypes.c_int(0)
        if self._simple.pa_simple_read(self._handle, buf.ctypes.data, buf.nbytes, err) < 0:
            raise _PulseError(self._text(err.value))

    def free(self) -> None:
        self._simple.pa_simple_free(self._handle)


# --- channels and devices ------------------------------------------------------------------


class SimChannel:
    """One column of a simulated device: its source, its faults, and what the daemon played.

    Attributes are read by the writer thread once per block, so setting one takes effect
    within a block or two (plus the path's ~40 ms latency).
    """

    def __init__(self, *, index: int, samplerate: int, played_seconds: float) -> None:
        self.index = index
        self.source: Source = Silence()
        self.silence = False
        """Dead-audio fault: exact zeros, whatever the source."""
        self.hum_hz: float | None = None
        """Mains hum fault: a sine at this frequency (50 or 60 Hz) added to the source."""
        self.hum_rms_dbfs = -30.0
        self.clip_gain_db: float | None = None
        """Clipping fault: gain in dB applied before the hard limit at full scale (+-1.0)."""
        self.loopback = False
        """A loop-back cable from this column's output to its input: what the daemon plays
        here comes back on the capture, mixed into the source (so the output's idle silence
        leaves the source as it was), after the path's latency. Goes through the faults
        above like any input (a dead input stays dead)."""
        self._samplerate = samplerate
        self._loop: deque[NDArray[np.float32]] = deque()
        self._loop_frames = 0
        self._loop_primed = False
        self._loop_lock = threading.Lock()
        self._queue: deque[NDArray[np.float32]] = deque()
        self._queue_lock = threading.Lock()
        self._hum_phase = 0.0
        self._played = _Tape(int(played_seconds * samplerate))
        self._sent = _Tape(int(played_seconds * samplerate))

    def queue(self, samples: ArrayLike) -> None:
        """Play these samples (1-D, full scale +-1.0) before returning to the source."""
        data = np.asarray(samples, dtype=np.float32)
        if data.ndim != 1:
            raise ValueError(f"samples must be 1-D, got shape {data.shape}")
        with self._queue_lock:
            self._queue.append(data.copy())

    @property
    def queued_frames(self) -> int:
        """Queued samples not yet written to the device."""
        with self._queue_lock:
            return sum(len(chunk) for chunk in self._queue)

    def played(self, *, clear: bool = False) -> NDArray[np.float32]:
        """What the daemon played on this column (silence included), oldest first.

        Kept for `played_seconds`; `clear=True` empties the record after reading it.
        """
        return self._played.get(clear=clear)

    def sent(self, *, clear: bool = False) -> NDArray[np.float32]:
        """What this column carried towards the daemon (read back from the device), as
        `played` does. For comparing recordings with what was really sent."""
        return self._sent.get(clear=clear)

    def _render(self, frames: int) -> NDArray[np.float32]:
        out = np.zeros(frames, np.float32)
        with self._queue_lock:
            done = _drain(self._queue, out)
        if done < frames:
            out[done:] = self.source.render(frames - done, self._samplerate)
        looped = self._take_looped(frames)
        if looped is not None:
            out += looped
        hum = self.hum_hz
        if hum is not None:
            step = 2.0 * math.pi * hum / self._samplerate
            peak = dbfs_to_rms(self.hum_rms_dbfs) * math.sqrt(2.0)
            out += (peak * np.sin(self._hum_phase + step * np.arange(frames))).astype(np.float32)
            self._hum_phase = (self._hum_phase + step * frames) % (2.0 * math.pi)
        gain_db = self.clip_gain_db
        if gain_db is not None:
            out *= np.float32(10.0 ** (gain_db / 20.0))
        np.clip(out, -1.0, 1.0, out=out)  # a converter cannot go beyond full scale
        if self.silence:
            out[:] = 0.0
        return out

    def _from_output(self, data: NDArray[np.float32]) -> None:
        """The reader thread: a block the daemon played on this column."""
        self._played.add(data)
        with self._loop_lock:
            if not self.loopback:
                if self._loop:
                    self._loop.clear()
                    self._loop_frames = 0
                    self._loop_primed = False
                return
            self._loop.append(data)
            self._loop_frames += len(data)
            prime = int(LOOPBACK_PRIME_S * self._samplerate)
            if self._loop_frames > int(LOOPBACK_MAX_S * self._samplerate):
                while self._loop and self._loop_frames - len(self._loop[0]) >= prime:
                    self._loop_frames -= len(self._loop.popleft())

    def _take_looped(self, frames: int) -> NDArray[np.float32] | None:
        """The writer thread: the next `frames` looped-back samples, None when there are none
        (loop-back off, or its buffer still priming). A buffer that runs dry primes again."""
        if not self.loopback:
            return None
        with self._loop_lock:
            if not self._loop_primed:
                if self._loop_frames < int(LOOPBACK_PRIME_S * self._samplerate):
                    return None
                self._loop_primed = True
            out = np.zeros(frames, np.float32)
            done = _drain(self._loop, out)
            self._loop_frames -= done
            if done < frames:
                self._loop_primed = False
        return out


class _Tape:
    """The last `limit` samples of a column, appended by one thread, read by any."""

    def __init__(self, limit: int) -> None:
        self._chunks: deque[NDArray[np.float32]] = deque()
        self._frames = 0
        self._limit = limit
        self._lock = threading.Lock()

    def add(self, data: NDArray[np.float32]) -> None:
        with self._lock:
            self._chunks.append(data)
            self._frames += len(data)
            while self._chunks and self._frames - len(self._chunks[0]) >= self._limit:
                self._frames -= len(self._chunks.popleft())

    def get(self, *, clear: bool) -> NDArray[np.float32]:
        with self._lock:
            data = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)
            if clear:
                self._chunks.clear()
                self._frames = 0
        return data


class SimDevice:
    """A simulated sound card: a private PulseAudio server and its writer/reader threads."""

    def __init__(
        self,
        *,
        name: str,
        channels: int,
        samplerate: int,
        block: int,
        workdir: Path,
        played_s: float,
    ) -> None:
        self.name = name
        self.channels = channels
        self.pcm_name = PCM_PREFIX + name
        """The device name PortAudio shows (host API ALSA)."""
        self.channels_list = [
            SimChannel(index=i, samplerate=samplerate, played_seconds=played_s)
            for i in range(channels)
        ]
        self._samplerate = samplerate
        self._block = block
        self._dir = workdir / name
        self.socket_path = self._dir / "native"
        self._cli_path = self._dir / "cli"
        self.server = f"unix:{self.socket_path}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._up = threading.Event()  # server running and plugged
        self._connected = 0  # simulator streams connected to the current server
        self._connected_lock = threading.Lock()
        self._all_connected = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.reconnects = 0  # writer reconnections (server lost), for diagnostics

    @property
    def plugged(self) -> bool:
        return self._up.is_set()

    def channel(self, index: int) -> SimChannel:
        return self.channels_list[index]

    def write_config(self) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)
        cmap = _CHANNEL_MAPS[self.channels]
        # norewinds: a sink that rewinds (after a late wake-up on a loaded machine) rewrites
        # audio its monitor has already delivered, leaving holes and losses downstream.
        common = (
            f"rate={self._samplerate} channels={self.channels} channel_map={cmap} "
            "format=float32le norewinds=1"
        )
        # A null sink with no low-latency client runs its first cycle at its maximum
        # latency (2 s): nothing reaches a monitor before then, and the ALSA plugin polls
        # hard meanwhile. So the sinks start suspended and are resumed (timer restarted at
        # the clients' low latency) once the simulator's streams are connected.
        # The sockets come last: once they accept connections the sinks exist.
        (self._dir / "server.pa").write_text(
            f"load-module module-null-sink sink_name=rx {common}\n"
            f"load-module module-null-sink sink_name=tx {common}\n"
            "suspend-sink rx 1\n"
            "suspend-sink tx 1\n"
            f"load-module module-cli-protocol-unix socket={self._cli_path}\n"
            f"load-module module-native-protocol-unix socket={self.socket_path} "
            "auth-anonymous=1\n"
        )

    def alsa_config(self) -> str:
        return (
            f"pcm.{self.pcm_name} {{\n"
            "  type asym\n"
            f'  capture.pcm {{ type pulse server "{self.server}" device "rx.monitor" }}\n'
            f'  playback.pcm {{ type pulse server "{self.server}" device "tx" }}\n'
            f'  hint.description "consolegw simulated audio device {self.name}"\n'
            "}\n"
        )

    def start_threads(self) -> None:
        for target, label in ((self._writer, "rx"), (self._tap, "tap"), (self._reader, "tx")):
            thread = threading.Thread(
                target=target, name=f"audio-sim-{self.name}-{label}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def start_server(self, pulseaudio: str) -> None:
        """Start the server and wait until it accepts connections."""
        if self._proc is not None:
            return
        for path in (self.socket_path, self._cli_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # a stale socket from a killed server
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("DISPLAY", "DBUS_SESSION_BUS_ADDRESS", "PULSE_SERVER")
        }
        here = str(self._dir)
        env.update(HOME=here, XDG_RUNTIME_DIR=here, PULSE_RUNTIME_PATH=here, PULSE_STATE_PATH=here)
        with open(self._dir / "server.log", "ab") as log:
            proc = subprocess.Popen(
                [
                    pulseaudio,
                    "-n",
                    "-F",
                    str(self._dir / "server.pa"),
                    "--daemonize=no",
                    "--exit-idle-time=-1",
                    "--use-pid-file=no",
                    "--realtime=no",
                    "--high-priority=yes",  # nice -11 when allowed (root): no holes under load
                    "--disallow-exit=yes",
                    "--disable-shm=yes",  # avoids memfd warnings; a few kB/s need no shm
                    "--log-target=stderr",
                    "--log-level=" + os.environ.get("CONSOLEGW_SIM_PULSE_LOG", "error"),
                ],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,  # a Ctrl-C to the demo must not kill it first
            )
        self._proc = proc
        deadline = time.monotonic() + 10.0
        while True:
            if proc.poll() is not None:
                self._proc = None
                log_text = (self._dir / "server.log").read_text(errors="replace")[-500:]
                raise RuntimeError(f"pulseaudio for {self.name} exited: {log_text}")
            with socket.socket(socket.AF_UNIX) as probe:
                try:
                    probe.connect(str(self.socket_path))
                    break
                except OSError:
                    pass
            if time.monotonic() > deadline:
                self.kill_server()
                raise RuntimeError(f"pulseaudio for {self.name} did not start in 10 s")
            time.sleep(0.01)
        with self._connected_lock:
            self._connected = 0
            self._all_connected.clear()
        self._up.set()  # the threads connect now
        if self._threads and not self._all_connected.wait(10.0):
            self.kill_server()
            raise RuntimeError(f"simulator streams for {self.name} did not connect in 10 s")
        self._cli("suspend-sink rx 0", "suspend-sink tx 0")

    def _cli(self, *commands: str) -> None:
        """Run PulseAudio CLI commands; it answers only errors, then closes at our EOF."""
        with socket.socket(socket.AF_UNIX) as cli:
            cli.settimeout(5.0)
            cli.connect(str(self._cli_path))
            cli.sendall("".join(c + "\n" for c in commands).encode())
            cli.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := cli.recv(4096):
                answer += chunk
        if answer.strip():
            raise RuntimeError(f"pulseaudio for {self.name}: {answer.decode(errors='replace')}")

    def _note_connected(self) -> None:
        with self._connected_lock:
            self._connected += 1
            if self._connected == len(self._threads):
                self._all_connected.set()

    def kill_server(self) -> None:
        """Abrupt loss, like a pulled USB plug: SIGKILL, no goodbye to the clients."""
        self._up.clear()
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10.0)

    def stop(self) -> None:
        self._stopping.set()
        self.kill_server()
        for thread in self._threads:
            thread.join(timeout=5.0)
        self._threads.clear()

    def _connect(self, device: str, *, record: bool) -> _PulseStream | None:
        """Wait until plugged, then connect; None when stopping."""
        # A stream that runs dry for ~140 ms leaves a hole in the audio; on a loaded box
        # that happens at normal priority. libpulse's own thread inherits this nice value.
        with contextlib.suppress(OSError):  # not root: normal priority, fine when idle
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), -11)
        while not self._stopping.is_set():
            if not self._up.wait(0.1):
                continue
            try:
                stream = _PulseStream(
                    server=self.server,
                    device=device,
                    record=record,
                    samplerate=self._samplerate,
                    channels=self.channels,
                    block=self._block,
                )
                self._note_connected()
                return stream
            except _PulseError:
                time.sleep(0.05)  # server going down or not yet up
        return None

    def _writer(self) -> None:
        block = np.zeros((self._block, self.channels), np.float32)
        while (stream := self._connect("rx", record=False)) is not None:
            try:
                while not self._stopping.is_set() and self._up.is_set():
                    for ch in self.channels_list:
                        block[:, ch.index] = ch._render(self._block)
                    stream.write(block)  # blocks: PulseAudio's clock paces us
            except _PulseError:
                self.reconnects += 1
            finally:
                stream.free()

    def _reader(self) -> None:
        self._record_loop("tx.monitor", lambda ch, data: ch._from_output(data))

    def _tap(self) -> None:
        # Also keeps rx's monitor at low latency, which the daemon's capture relies on.
        self._record_loop("rx.monitor", lambda ch, data: ch._sent.add(data))

    def _record_loop(
        self, device: str, store: Callable[[SimChannel, NDArray[np.float32]], None]
    ) -> None:
        while (stream := self._connect(device, record=True)) is not None:
            buf = np.empty((self._block, self.channels), np.float32)  # columns are copied out
            try:
                while not self._stopping.is_set() and self._up.is_set():
                    stream.read_into(buf)
                    for ch in self.channels_list:
                        store(ch, buf[:, ch.index].copy())
            except _PulseError:
                pass
            finally:
                stream.free()


def _drain(chunks: deque[NDArray[np.float32]], out: NDArray[np.float32]) -> int:
    """Move queued samples into `out`, oldest first; returns how many were filled."""
    done = 0
    while done < len(out) and chunks:
        chunk = chunks[0]
        n = min(len(chunk), len(out) - done)
        out[done : done + n] = chunk[:n]
        done += n
        if n == len(chunk):
            chunks.popleft()
        else:
            chunks[0] = chunk[n:]
    return done


class AudioSim:
    """N simulated sound cards, each with 1, 2, 4, 6 or 8 channels (columns).

    `devices` maps a device name ([A-Za-z0-9_], up to 32 chars) to its channel count.
    Use as a context manager, or call start() and stop(). Usable in-process (tests) or in a
    separate simulator process (`python -m hw_sim.audio`); the daemon process needs `env`.
    """

    def __init__(
        self,
        *,
        devices: Mapping[str, int],
        samplerate: int = 8000,
        block_frames: int = 160,
        workdir: str | Path | None = None,
        played_seconds: float = 30.0,
    ) -> None:
        if not devices:
            raise ValueError("at least one device is needed")
        for name, channels in devices.items():
            if not _NAME_RE.fullmatch(name):
                raise ValueError(f"device name {name!r} must match [A-Za-z0-9_]{{1,32}}")
            if channels not in _CHANNEL_MAPS:
                raise ValueError(f"device {name}: channels must be one of 1, 2, 4, 6, 8")
        if not 4000 <= samplerate <= 192_000:
            raise ValueError(f"samplerate must be in [4000, 192000], got {samplerate}")
        if not 16 <= block_frames <= samplerate:
            raise ValueError(f"block_frames must be in [16, samplerate], got {block_frames}")
        if played_seconds <= 0:
            raise ValueError("played_seconds must be > 0")
        self.samplerate = samplerate
        self._own_workdir = workdir is None
        self.workdir = Path(
            tempfile.mkdtemp(prefix="cgw-audio-") if workdir is None else workdir
        ).absolute()
        longest = max(len(str(self.workdir / name / "native")) for name in devices)
        if longest > _SUN_PATH_MAX:
            raise ValueError(f"workdir {self.workdir} is too long for a unix socket path")
        self.devices = {
            name: SimDevice(
                name=name,
                channels=channels,
                samplerate=samplerate,
                block=block_frames,
                workdir=self.workdir,
                played_s=played_seconds,
            )
            for name, channels in devices.items()
        }
        self._pulseaudio: str | None = None
        self._started = False

    @property
    def env(self) -> dict[str, str]:
        """Variables to merge into the daemon's environment so PortAudio sees the devices."""
        return sim_env(self.workdir)

    def device(self, name: str) -> SimDevice:
        return self.devices[name]

    def channel(self, device: str, index: int = 0) -> SimChannel:
        return self.devices[device].channel(index)

    def pcm_name(self, device: str) -> str:
        """The PortAudio device name of a simulated device."""
        return self.devices[device].pcm_name

    def start(self) -> None:
        if self._started:
            return
        pulseaudio = shutil.which("pulseaudio")
        if pulseaudio is None:
            raise RuntimeError("pulseaudio not found: apt-get install pulseaudio")
        self._pulseaudio = pulseaudio
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "client.conf").write_text("autospawn = no\n")
        for dev in self.devices.values():
            dev.write_config()
        (self.workdir / "asound.conf").write_text(
            "".join(dev.alsa_config() for dev in self.devices.values())
        )
        self._started = True
        try:
            for dev in self.devices.values():
                dev.start_threads()  # they wait for the server
                dev.start_server(pulseaudio)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every server and thread; removes the work directory if we made it."""
        for dev in self.devices.values():
            dev.stop()
        self._started = False
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def unplug(self, device: str) -> None:
        """Device loss: open streams fail now, and a fresh PortAudio scan no longer lists it."""
        self.devices[device].kill_server()

    def freeze(self, device: str) -> None:
        """A stuck device: its clock stops (both directions); streams stay open, nothing moves."""
        self.devices[device]._cli("suspend-sink rx 1", "suspend-sink tx 1")

    def thaw(self, device: str) -> None:
        """Undo freeze(): the clock runs again."""
        self.devices[device]._cli("suspend-sink rx 0", "suspend-sink tx 0")

    def replug(self, device: str) -> None:
        """The device comes back (same name); blocks until it accepts connections."""
        if self._pulseaudio is None:
            raise RuntimeError("start() the simulator first")
        self.devices[device].start_server(self._pulseaudio)

    def __enter__(self) -> AudioSim:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def sim_env(workdir: str | Path, base_alsa_config: str | None = None) -> dict[str, str]:
    """The daemon's environment additions for a simulator using `workdir`.

    ALSA reads the system config first, then ours (the devices). Autospawn is off so that no
    stray PulseAudio is ever started on the daemon's behalf.
    """
    root = Path(workdir).absolute()
    base = base_alsa_config or os.environ.get("ALSA_CONFIG_PATH") or DEFAULT_ALSA_CONFIG
    ours = str(root / "asound.conf")
    parts = [part for part in base.split(":") if part and part != ours]
    return {
        "ALSA_CONFIG_PATH": ":".join([*parts, ours]),
        "PULSE_CLIENTCONFIG": str(root / "client.conf"),
    }


# --- separate simulator process ------------------------------------------------------------


def _make_source(spec: Mapping[str, Any]) -> Source:
    kind = spec.get("kind")
    if kind == "silence":
        return Silence()
    if kind == "tone":
        return Tone(frequency=float(spec["frequency"]), rms_dbfs=float(spec["rms_dbfs"]))
    if kind == "noise":
        return WhiteNoise(rms_dbfs=float(spec["rms_dbfs"]), seed=spec.get("seed"))
    if kind == "speech":
        return SpeechBursts(rms_dbfs=float(spec.get("rms_dbfs", -20.0)), seed=spec.get("seed"))
    raise ValueError(f"unknown source kind {kind!r}")


def _command(sim: AudioSim, cmd: Mapping[str, Any]) -> None:
    op = cmd.get("op")
    if op in ("unplug", "replug", "freeze", "thaw"):
        getattr(sim, op)(str(cmd["device"]))
        return
    channel = sim.channel(str(cmd["device"]), int(cmd.get("channel", 0)))
    if op == "source":
        channel.source = _make_source(cmd)
    elif op == "fault":
        if "silence" in cmd:
            channel.silence = bool(cmd["silence"])
        if "hum_hz" in cmd:
            channel.hum_hz = None if cmd["hum_hz"] is None else float(cmd["hum_hz"])
        if "hum_rms_dbfs" in cmd:
            channel.hum_rms_dbfs = float(cmd["hum_rms_dbfs"])
        if "clip_gain_db" in cmd:
            gain = cmd["clip_gain_db"]
            channel.clip_gain_db = None if gain is None else float(gain)
        if "loopback" in cmd:
            channel.loopback = bool(cmd["loopback"])
    elif op == "queue":
        channel.queue(np.asarray(cmd["samples"], dtype=np.float32))
    else:
        raise ValueError(f"unknown op {op!r}")


def main(argv: list[str] | None = None) -> int:
    """Run simulated devices; print one JSON line (env, device names); obey JSON on stdin.

    Commands, one JSON object per line; each is answered by {"ok": true} or an error:
      {"op": "source", "device": "radio1", "channel": 0, "kind": "tone",
       "frequency": 1000, "rms_dbfs": -20}            (kinds: silence, tone, noise, speech)
      {"op": "fault", "device": "radio1", "channel": 0, "silence": true, "hum_hz": 50,
       "clip_gain_db": 12, "loopback": true}          (null clears hum or clipping)
      {"op": "queue", "device": "radio1", "channel": 0, "samples": [0.1, ...]}
      {"op": "unplug" | "replug" | "freeze" | "thaw", "device": "radio1"}
    Stops on end of input, SIGTERM or SIGINT.
    """
    parser = argparse.ArgumentParser(
        prog="python -m hw_sim.audio",
        description=main.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--device", action="append", required=True, metavar="NAME=CHANNELS", help="repeatable"
    )
    parser.add_argument("--samplerate", type=int, default=8000)
    parser.add_argument("--workdir", default=None)
    parser.add_argument(
        "--noise-dbfs", type=float, default=-60.0, help="initial source: noise floor"
    )
    args = parser.parse_args(argv)
    devices = {}
    for item in args.device:
        name, _, count = item.partition("=")
        devices[name] = int(count or "1")
    sim = AudioSim(devices=devices, samplerate=args.samplerate, workdir=args.workdir)
    for dev in sim.devices.values():
        for ch in dev.channels_list:
            ch.source = WhiteNoise(rms_dbfs=args.noise_dbfs)

    def _stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    with sim:
        print(
            json.dumps(
                {"env": sim.env, "devices": {n: d.pcm_name for n, d in sim.devices.items()}}
            ),
            flush=True,
        )
        try:
            for line in sys.stdin:
                if not line.strip():
                    continue
                try:
                    _command(sim, json.loads(line))
                    reply: dict[str, Any] = {"ok": True}
                except (ValueError, KeyError, TypeError, RuntimeError) as exc:
                    reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                print(json.dumps(reply), flush=True)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
