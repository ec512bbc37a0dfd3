"""drivers.audio through the real sounddevice -> PortAudio -> ALSA `pulse` plugin path.

The simulated cards are private PulseAudio servers (hw_sim.audio); nothing here fakes a
stream. Each test gets fresh cards and points this process's ALSA config at them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from drivers import audio
from drivers.audio import AudioBlock, AudioCapture, AudioDeviceInfo, AudioPlayback
from drivers.errors import DeviceLost, DeviceUnavailable
from hw_sim.audio import AudioSim, Silence, Tone, WhiteNoise

pytestmark = pytest.mark.timeout(60)

RATE = 8000


@pytest.fixture
async def sim(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[AudioSim]:
    with AudioSim(devices={"radio1": 1, "pair": 2}, samplerate=RATE) as simulator:
        for key, value in simulator.env.items():
            monkeypatch.setenv(key, value)
        await audio.rescan_devices()  # PortAudio reads the new ALSA config
        yield simulator


async def gather_audio(capture: AudioCapture, seconds: float) -> list[AudioBlock]:
    blocks: list[AudioBlock] = []
    frames = 0
    async with asyncio.timeout(seconds + 10.0):
        while frames < seconds * RATE:
            block = await capture.read()
            blocks.append(block)
            frames += len(block.frames)
    return blocks


def rms_dbfs(samples: NDArray[np.float32]) -> float:
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return 20.0 * math.log10(max(rms, 1e-10))


def dominant_hz(samples: NDArray[np.float32]) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * RATE / len(samples))


def find(haystack: NDArray[np.float32], needle: NDArray[np.float32]) -> int | None:
    """Index where `needle` starts exactly in `haystack` (its first sample is non-zero)."""
    for start in np.flatnonzero(haystack == needle[0]):
        if np.array_equal(haystack[start : start + len(needle)], needle):
            return int(start)
    return None


def pattern(n: int, seed: int) -> NDArray[np.float32]:
    """Pseudo-random samples, none of them zero, so the start is unmistakable."""
    rng = np.random.default_rng(seed)
    samples: NDArray[np.float32] = (rng.uniform(0.05, 0.9, n) * rng.choice([-1.0, 1.0], n)).astype(
        np.float32
    )
    return samples


async def sim_sending(sim: AudioSim, device: str, column: int, level: float) -> None:
    """Wait until the simulated card carries `level` on `column` (its own read-back), so that
    a capture opened now receives nothing older."""

    def carrying() -> bool:
        recent = sim.channel(device, column).sent()[-RATE // 4 :]
        return len(recent) == RATE // 4 and abs(rms_dbfs(recent) - level) < 0.5

    await wait_until(carrying)


async def wait_until(condition: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize(
    ("source", "level"),
    [
        (Tone(frequency=1000.0, rms_dbfs=-6.0), -6.0),
        (Tone(frequency=1000.0, rms_dbfs=-20.0), -20.0),
        (Tone(frequency=440.0, rms_dbfs=-45.0), -45.0),
        (WhiteNoise(rms_dbfs=-30.0, seed=3), -30.0),
    ],
)
async def test_level_of_generated_signal(sim: AudioSim, source: Tone, level: float) -> None:
    sim.channel("radio1").source = source
    await sim_sending(sim, "radio1", 0, level)
    capture = AudioCapture(device="radio1", hostapi="ALSA", samplerate=RATE)
    await capture.open()
    try:
        blocks = await gather_audio(capture, 0.5)
    finally:
        await capture.close()
    samples = np.concatenate([b.frames[:, 0] for b in blocks])
    assert blocks[0].frames.shape == (160, 1)
    assert abs(rms_dbfs(samples) - level) < 0.5
    if isinstance(source, Tone):
        assert abs(dominant_hz(samples) - source.frequency) < 10.0


async def test_two_logical_channels_from_one_stereo_device(sim: AudioSim) -> None:
    sim.channel("pair", 0).source = Tone(frequency=500.0, rms_dbfs=-10.0)
    sim.channel("pair", 1).source = Tone(frequency=1500.0, rms_dbfs=-35.0)
    await sim_sending(sim, "pair", 0, -10.0)
    await sim_sending(sim, "pair", 1, -35.0)
    capture = AudioCapture(device="pair", channels=2, samplerate=RATE)
    await capture.open()
    try:
        blocks = await gather_audio(capture, 0.5)
    finally:
        await capture.close()
    columns = {"fire": 0, "police": 1}
    split = [audio.split_channels(b.frames, columns) for b in blocks]
    fire = np.concatenate([s["fire"] for s in split])
    police = np.concatenate([s["police"] for s in split])
    assert abs(rms_dbfs(fire) - -10.0) < 0.5
    assert abs(dominant_hz(fire) - 500.0) < 10.0
    assert abs(rms_dbfs(police) - -35.0) < 0.5  # the loud column does not leak into it
    assert abs(dominant_hz(police) - 1500.0) < 10.0
    with pytest.raises(ValueError, match="outside"):
        audio.split_channels(blocks[0].frames, {"x": 2})


async def test_known_sequence_arrives_intact_and_in_order(sim: AudioSim) -> None:
    channel = sim.channel("pair", 1)
    channel.source = Silence()
    sent = pattern(RATE, seed=7)  # one second
    capture = AudioCapture(device="pair", channels=2, samplerate=RATE)
    await capture.open()
    blocks: list[AudioBlock] = []
    try:
        await capture.read()
        channel.queue(sent)
        async with asyncio.timeout(20.0):
            # Until the sequence and a little silence after it have arrived.
            while not blocks or blocks[-1].frames[:, 1].any() or len(blocks) < RATE // 160:
                blocks.append(await capture.read())
    finally:
        await capture.close()
    assert not any(b.discontinuity for b in blocks[1:])
    assert [b.index for b in blocks] == [blocks[0].index + i * 160 for i in range(len(blocks))], (
        "blocks arrive in order without gaps"
    )
    stamps = [b.timestamp for b in blocks]
    assert stamps == sorted(stamps)
    received = np.concatenate([b.frames[:, 1] for b in blocks])
    start = find(received, sent)
    assert start is not None, "the sequence arrived bit-exact"
    assert not np.concatenate([b.frames[:, 0] for b in blocks]).any(), "column 0 stayed silent"
    # The simulator's own tap of what it sent holds the same sequence (for recall checks).
    assert find(channel.sent(), sent) is not None


async def test_device_loss_then_return(sim: AudioSim) -> None:
    sim.channel("radio1").source = Tone(frequency=1000.0, rms_dbfs=-20.0)
    other = AudioCapture(device="pair", channels=2, samplerate=RATE)
    capture = AudioCapture(device=r"consolegw_sim_radio\d", samplerate=RATE)
    await other.open()
    await capture.open()
    try:
        assert capture.device is not None
        assert capture.device.name == "consolegw_sim_radio1"
        await sim_sending(sim, "radio1", 0, -20.0)
        await capture.read()
        sim.unplug("radio1")
        with pytest.raises(DeviceLost):
            async with asyncio.timeout(10.0):
                while True:
                    await capture.read()
        assert not capture.is_open  # closed itself; the gateway reopens with backoff
        with pytest.raises(DeviceUnavailable):
            await capture.open()
        sim.replug("radio1")
        sim.channel("radio1").sent(clear=True)
        await sim_sending(sim, "radio1", 0, -20.0)
        await capture.open()  # same name as before: found again without a rescan
        blocks = await gather_audio(capture, 0.5)
        assert abs(rms_dbfs(np.concatenate([b.frames[:, 0] for b in blocks])) - -20.0) < 0.5
        # The other card never noticed.
        await gather_audio(other, 0.2)
        assert other.stats.resumes == 0
    finally:
        await capture.close()
        await other.close()


async def test_device_absent_at_start_is_found_by_rescan(sim: AudioSim) -> None:
    sim.unplug("radio1")
    await audio.rescan_devices()
    assert "consolegw_sim_radio1" not in [d.name for d in audio.list_devices()]
    other = AudioCapture(device="pair", channels=2, samplerate=RATE)
    capture = AudioCapture(device="radio1", samplerate=RATE)
    await other.open()
    try:
        with pytest.raises(DeviceUnavailable, match="no audio device matches"):
            await capture.open()
        assert other.stats.resumes == 0, "no rescan while the device is absent"
        sim.replug("radio1")
        present = await audio.scan_devices()
        assert "consolegw_sim_radio1" in [d.name for d in present]
        await capture.open()  # a child-process scan sees it, so open() rescans
        await gather_audio(capture, 0.2)
        # The rescan closed and reopened the other stream: a flagged gap, not an error.
        assert other.stats.resumes == 1
        async with asyncio.timeout(10.0):
            while not (await other.read()).discontinuity:
                pass  # the blocks queued before the rescan come first
        await gather_audio(other, 0.2)
        assert other.is_open
    finally:
        await capture.close()
        await other.close()


async def test_stuck_device_is_lost_after_stall_timeout(sim: AudioSim) -> None:
    capture = AudioCapture(device="radio1", samplerate=RATE, stall_timeout=0.5)
    await capture.open()
    try:
        await capture.read()
        sim.freeze("radio1")  # the stream stays open but no audio comes
        with pytest.raises(DeviceLost, match="no audio"):
            async with asyncio.timeout(10.0):
                while True:
                    await capture.read()
    finally:
        sim.thaw("radio1")
        await capture.close()


async def test_slow_consumer_loses_oldest_blocks_counted(sim: AudioSim) -> None:
    capture = AudioCapture(device="radio1", samplerate=RATE, queue_seconds=0.1)
    await capture.open()
    try:
        await capture.read()
        await wait_until(lambda: capture.stats.queue_drops >= 3)  # we do not read meanwhile
        block = await capture.read()
        assert block.discontinuity
        assert block.index > 160
        assert capture.stats.input_overflows == 0
    finally:
        await capture.close()


async def test_playback_reaches_the_simulator(sim: AudioSim) -> None:
    playback = AudioPlayback(device="pair", channels=2, samplerate=RATE)
    await playback.open()
    left = pattern(RATE // 2, seed=1)
    right = pattern(RATE // 4, seed=2)
    try:
        sim.channel("pair", 0).played(clear=True)
        sim.channel("pair", 1).played(clear=True)
        # Columns play independently and at the same time.
        await asyncio.gather(playback.play(left, column=0), playback.play(right, column=1))
        await wait_until(lambda: find(sim.channel("pair", 0).played(), left) is not None)
        await wait_until(lambda: find(sim.channel("pair", 1).played(), right) is not None)
        # A 2-D play covers every column.
        both = np.stack([right, -right], axis=1)
        await playback.play(both)
        await wait_until(lambda: find(sim.channel("pair", 1).played(), -right) is not None)
        assert playback.stats.plays == 3
        with pytest.raises(ValueError, match="column"):
            await playback.play(left, column=2)
    finally:
        await playback.close()


async def test_cancelled_play_stops_at_once(sim: AudioSim) -> None:
    playback = AudioPlayback(device="radio1", samplerate=RATE)
    await playback.open()
    try:
        long = np.full(RATE * 5, 0.25, np.float32)
        task = asyncio.create_task(playback.play(long))
        await wait_until(lambda: bool(sim.channel("radio1").played().any()))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.5)
        sim.channel("radio1").played(clear=True)
        await asyncio.sleep(0.3)
        assert not sim.channel("radio1").played().any(), "nothing plays after the cancel"
        await playback.play(np.full(80, 0.5, np.float32))  # and the device is still usable
    finally:
        await playback.close()


async def test_playback_device_loss(sim: AudioSim) -> None:
    playback = AudioPlayback(device="radio1", samplerate=RATE)
    await playback.open()
    try:
        task = asyncio.create_task(playback.play(np.full(RATE * 5, 0.25, np.float32)))
        await wait_until(lambda: bool(sim.channel("radio1").played().any()))
        sim.unplug("radio1")
        with pytest.raises(DeviceLost):
            async with asyncio.timeout(10.0):
                await task
        assert not playback.is_open
    finally:
        await playback.close()


async def test_fault_injection_shapes_the_audio(sim: AudioSim) -> None:
    """Hum, clipping and dead audio, as read back from the simulated card."""
    channel = sim.channel("radio1")
    channel.source = Tone(frequency=1000.0, rms_dbfs=-20.0)

    async def fresh(seconds: float = 0.25) -> NDArray[np.float32]:
        channel.sent(clear=True)
        await wait_until(lambda: len(channel.sent()) >= seconds * RATE)
        return channel.sent()[: int(seconds * RATE)]

    channel.hum_hz = 50.0
    channel.hum_rms_dbfs = -30.0
    await fresh(0.3)  # what was in flight before the change
    samples = await fresh(0.5)
    spectrum = np.abs(np.fft.rfft(samples)) / len(samples) * 2 / math.sqrt(2)  # 2 Hz bins
    assert abs(20 * math.log10(spectrum[25]) - -30.0) < 0.5
    assert abs(20 * math.log10(spectrum[500]) - -20.0) < 0.5
    channel.hum_hz = None
    channel.clip_gain_db = 20.0  # -20 dB RMS tone, peak -17 dB, driven 3 dB into the rails
    await fresh(0.3)
    samples = await fresh()
    assert float(np.max(np.abs(samples))) == 1.0
    assert np.count_nonzero(np.abs(samples) == 1.0) > len(samples) // 10
    channel.clip_gain_db = None
    channel.silence = True
    await fresh(0.3)
    assert not (await fresh()).any()
    channel.silence = False
    await fresh(0.3)
    assert abs(rms_dbfs(await fresh()) - -20.0) < 0.1


def _info(name: str, hostapi: str = "ALSA", inputs: int = 2) -> AudioDeviceInfo:
    return AudioDeviceInfo(
        index=0,
        name=name,
        hostapi=hostapi,
        max_input_channels=inputs,
        max_output_channels=2,
        default_samplerate=48000.0,
    )


def test_find_device_by_pattern() -> None:
    devices = [
        _info("USB Audio Device: - (hw:1,0)"),
        _info("USB Audio Device: - (hw:2,0)"),
        _info("pulse"),
        _info("USB Audio Device", hostapi="JACK Audio Connection Kit"),
        _info("mono", inputs=1),
    ]
    find_in = audio.find_device
    assert find_in(devices, pattern="(hw:2,0)", direction="input").name.endswith("(hw:2,0)")
    assert find_in(devices, pattern=r"hw:1,\d", direction="input").name.endswith("(hw:1,0)")
    assert find_in(devices, pattern="USB Audio Device", hostapi="jack", direction="input")
    with pytest.raises(DeviceUnavailable, match="ambiguous"):
        find_in(devices, pattern="USB Audio", hostapi="ALSA", direction="input")
    with pytest.raises(DeviceUnavailable, match="fewer than 2"):
        find_in(devices, pattern="mono", direction="input", channels=2)
    with pytest.raises(DeviceUnavailable, match="no audio device"):
        find_in(devices, pattern="absent", direction="input")


def test_constructors_validate_arguments() -> None:
    with pytest.raises(ValueError):
        AudioCapture(device="")
    with pytest.raises(ValueError):
        AudioCapture(device="x", samplerate=100)
    with pytest.raises(ValueError):
        AudioCapture(device="x", blocksize=0)
    with pytest.raises(ValueError):
        AudioCapture(device="x", channels=0)
    with pytest.raises(ValueError):
        AudioPlayback(device="x", latency=5.0)
    with pytest.raises(ValueError):
        AudioSim(devices={"bad name": 1})
    with pytest.raises(ValueError):
        AudioSim(devices={"three": 3})


async def settles_at(capture: AudioCapture, level: float) -> None:
    """Read quarter seconds until one is at `level` (the change takes the path's latency)."""
    measured: list[float] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(10.0):
            while not measured or abs(measured[-1] - level) >= 0.5:
                blocks = await gather_audio(capture, 0.25)
                measured.append(rms_dbfs(np.concatenate([b.frames[:, 0] for b in blocks])))
    assert measured and abs(measured[-1] - level) < 0.5, measured


@pytest.fixture
def external_sim() -> Iterator[tuple[subprocess.Popen[str], dict[str, Any]]]:
    """The simulator as its own process, as the demo runs it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "hw_sim.audio", "--device", "ext=1", "--noise-dbfs", "-50"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        hello: dict[str, Any] = json.loads(proc.stdout.readline())
        yield proc, hello
    finally:
        proc.stdin.close()  # end of input stops it
        assert proc.wait(timeout=10.0) == 0


async def test_simulator_as_a_separate_process(
    monkeypatch: pytest.MonkeyPatch,
    external_sim: tuple[subprocess.Popen[str], dict[str, Any]],
) -> None:
    proc, hello = external_sim

    def command(cmd: dict[str, object]) -> dict[str, object]:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(cmd) + "\n")
        proc.stdin.flush()
        reply: dict[str, object] = json.loads(proc.stdout.readline())
        return reply

    for key, value in hello["env"].items():
        monkeypatch.setenv(key, value)
    await audio.rescan_devices()
    capture = AudioCapture(device=hello["devices"]["ext"], samplerate=RATE)
    await capture.open()
    try:
        await settles_at(capture, -50.0)
        tone = {"op": "source", "device": "ext", "kind": "tone", "frequency": 800, "rms_dbfs": -12}
        assert command(tone) == {"ok": True}
        await settles_at(capture, -12.0)
        assert command({"op": "nonsense", "device": "ext"})["ok"] is False
        assert command({"op": "unplug", "device": "ext"}) == {"ok": True}
        with pytest.raises(DeviceLost):
            async with asyncio.timeout(10.0):
                while True:
                    await capture.read()
    finally:
        await capture.close()
