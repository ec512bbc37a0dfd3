"""Audio monitor DSP cost: CPU seconds per second of audio per channel, channels per core.

    python bench/audio_channels.py [--channels 64] [--seconds 30]

Runs the daemon's own code (gateway.levels.CardAnalyzer and gateway.audio.ChannelAudio,
activity, noise floor, faults, ring buffer, level publishing) over N channels of 8 kHz
audio arranged as 8-column cards, fed in 160-frame blocks as PortAudio delivers them. Half
the channels carry speech-like bursts, half idle noise. The baseline, in the same run, is the
same analysis with one analyzer per channel (no vectorisation across a card's columns).
CPU is process time (all threads). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.audio import ChannelAudio  # noqa: E402
from gateway.channel import ChannelMonitor  # noqa: E402
from gateway.config import ChannelAudioSection, ChannelSection  # noqa: E402
from gateway.levels import CardAnalyzer  # noqa: E402
from gateway.outbox import Outbox  # noqa: E402
from gateway.publisher import Publisher  # noqa: E402

SR = 8000
BLOCK = 160


def signals(channels: int, seconds: int) -> np.ndarray:
    """(frames, channels): speech-like bursts on even channels, -60 dBFS noise on odd ones."""
    rng = np.random.default_rng(1)
    n = SR * seconds
    out = (rng.standard_normal((n, channels)) * 10 ** (-60 / 20)).astype(np.float32)
    t = np.arange(n) / SR
    envelope = (np.sin(2 * np.pi * 0.3 * t) > 0.2).astype(np.float32)
    voice = 0.1 * np.sin(2 * np.pi * 400 * t) * (1 + 0.5 * np.sin(2 * np.pi * 5 * t))
    out[:, ::2] += (voice * envelope).astype(np.float32)[:, None]
    return out


def make_channels(count: int, publisher: Publisher, tmp: Path, per_card: int) -> list[ChannelAudio]:
    section = ChannelAudioSection(device="card", recall_on_fault_s=0)
    result = []
    for i in range(count):
        monitor = ChannelMonitor(
            channel_id=f"c{i}", config=ChannelSection(), radio=None, publisher=publisher
        )
        result.append(
            ChannelAudio(
                channel_id=f"c{i}",
                config=section.model_copy(update={"column": i % per_card}),
                samplerate=SR,
                monitor=monitor,
                publisher=publisher,
                recall_dir=tmp / "recall",
            )
        )
    return result


def run(audio: np.ndarray, channels: list[ChannelAudio], per_card: int) -> float:
    """Feed the audio as the capture task does; returns CPU seconds used."""
    total = audio.shape[1]
    cards = [
        (CardAnalyzer(samplerate=SR, columns=per_card), list(range(c, c + per_card)))
        for c in range(0, total, per_card)
    ]
    start = time.process_time()
    now = time.time()
    for offset in range(0, audio.shape[0], BLOCK):
        block = audio[offset : offset + BLOCK]
        for analyzer, columns in cards:
            frames = block[:, columns[0] : columns[-1] + 1]
            members = [channels[c] for c in columns]
            for local, channel in enumerate(members):
                channel.add_samples(frames[:, local], now)
            for chunk in analyzer.feed(frames):
                for channel in members:
                    channel.on_chunk(chunk)  # its column on this card is its config's
            hum = analyzer.take_hum()
            if hum is not None:
                for local, channel in enumerate(members):
                    channel.on_hum(float(hum[local]))
    return time.process_time() - start


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=30)
    args = parser.parse_args()
    audio = signals(args.channels, args.seconds)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        outbox = Outbox(path=tmp / "o.db", max_events=10**6, fsync=False)
        outbox.open()
        publisher = Publisher(prefix="bench", gateway_id="bench", outbox=outbox)
        vectorised = run(audio, make_channels(args.channels, publisher, tmp, 8), per_card=8)
        baseline = run(audio, make_channels(args.channels, publisher, tmp, 1), per_card=1)
        outbox.close()
    channel_seconds = args.channels * args.seconds
    per_channel = vectorised / channel_seconds
    base_per_channel = baseline / channel_seconds
    share_64 = per_channel * 64
    print(f"{args.channels} channels x {args.seconds} s of 8 kHz audio")
    print(
        f"vectorised per card: {vectorised:.2f} CPU s = {per_channel * 1e3:.3f} ms per "
        f"channel-second; 64 channels use {share_64 * 100:.1f}% of one core (target < 10%)"
    )
    print(
        f"one analyzer per channel (baseline): {baseline:.2f} CPU s = "
        f"{base_per_channel * 1e3:.3f} ms per channel-second; speed-up "
        f"{baseline / vectorised:.2f}x"
    )
    print(
        json.dumps(
            {
                "bench": "audio_channels",
                "channels": args.channels,
                "seconds": args.seconds,
                "cpu_s_per_channel_s": round(per_channel, 6),
                "channels_per_core": int(1 / per_channel),
                "core_share_64_channels": round(share_64, 4),
                "baseline_cpu_s_per_channel_s": round(base_per_channel, 6),
                "speedup_vs_baseline": round(baseline / vectorised, 2),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
