"""The level analysis and the recall ring buffer, on generated signals."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from gateway.audio import RingBuffer
from gateway.levels import FLOOR_DBFS, CardAnalyzer, Chunk, Floats

SR = 8000


def tone(freq: float, rms_dbfs: float, seconds: float) -> NDArray[np.float32]:
    t = np.arange(int(SR * seconds)) / SR
    peak: float = 10 ** (rms_dbfs / 20) * np.sqrt(2)
    return (peak * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def run(
    analyzer: CardAnalyzer, x: NDArray[np.float32], block: int = 160
) -> tuple[list[Chunk], list[Floats]]:
    chunks: list[Chunk] = []
    hums: list[Floats] = []
    for i in range(0, len(x), block):
        chunks += analyzer.feed(x[i : i + block])
        hum = analyzer.take_hum()
        if hum is not None:
            hums.append(hum)
    return chunks, hums


def test_levels_per_column_are_exact() -> None:
    rng = np.random.default_rng(3)
    x = np.stack(
        [
            tone(1000, -20, 2),
            (rng.standard_normal(2 * SR) * 10 ** (-40 / 20)).astype(np.float32),
            np.zeros(2 * SR, dtype=np.float32),
        ],
        axis=1,
    )
    chunks, _ = run(CardAnalyzer(samplerate=SR, columns=3), x)
    assert len(chunks) == 20
    frames = np.concatenate([c.frame_dbfs for c in chunks])
    assert np.allclose(frames[:, 0], -20, atol=0.05)
    assert abs(frames[:, 1].mean() - -40) < 0.5
    assert (frames[:, 2] == FLOOR_DBFS).all()
    assert np.isclose(chunks[5].peak[0], 10 ** (-20 / 20) * np.sqrt(2), rtol=1e-3)


def test_block_size_does_not_change_results() -> None:
    x = np.stack([tone(440, -12, 1.5), tone(60, -35, 1.5)], axis=1)
    a, _ = run(CardAnalyzer(samplerate=SR, columns=2), x, block=160)
    b, _ = run(CardAnalyzer(samplerate=SR, columns=2), x, block=1023)
    assert len(a) == len(b)
    for ca, cb in zip(a, b, strict=True):
        assert np.allclose(ca.frame_dbfs, cb.frame_dbfs)


def test_hum_measured_and_speech_band_tone_is_not_hum() -> None:
    rng = np.random.default_rng(5)
    noise = (rng.standard_normal(3 * SR) * 10 ** (-50 / 20)).astype(np.float32)
    x = np.stack([tone(60, -30, 3) + noise, tone(50, -40, 3), tone(1000, -10, 3)], axis=1)
    _, hums = run(CardAnalyzer(samplerate=SR, columns=3), x)
    assert len(hums) == 3
    for hum in hums:
        assert abs(hum[0] - -30) < 0.3
        assert abs(hum[1] - -40) < 0.3
        assert hum[2] < -90


def test_clipping_and_dc() -> None:
    clipped = np.clip(tone(500, 0, 1) * 3, -1, 1)
    dc = np.full(SR, 0.25, dtype=np.float32)
    chunks, _ = run(CardAnalyzer(samplerate=SR, columns=2), np.stack([clipped, dc], axis=1))
    assert sum(int(c.clipped[0]) for c in chunks) > SR // 2
    assert sum(int(c.clipped[1]) for c in chunks) == 0
    assert np.isclose(sum(c.total[1] for c in chunks) / SR, 0.25)


def test_rejects_wrong_shape() -> None:
    with pytest.raises(ValueError, match="expected"):
        CardAnalyzer(samplerate=SR, columns=2).feed(np.zeros((160, 3), dtype=np.float32))


def test_ring_buffer_wraps_and_keeps_the_newest() -> None:
    ring = RingBuffer(samples=1000)
    data = (np.arange(2500) % 2000 / 4000).astype(np.float32)
    for i in range(0, 2500, 300):
        ring.append(data[i : i + 300])
    assert ring.filled == 1000
    last = ring.last(600).astype(np.float64) / 32767
    assert np.allclose(last, data[-600:], atol=1 / 32767)
    assert len(ring.last(5000)) == 1000
    ring.append(np.ones(3000, dtype=np.float32))
    assert (ring.last(1000) == 32767).all()
