"""Level analysis of a sound card's columns at once (numpy, vectorised across channels).

The card's audio is cut into 100 ms chunks of five 20 ms frames. Per chunk and column: the
RMS of each frame (for activity and the noise floor), the peak, how many samples sit at full
scale (clipping), the sum (DC offset) and the sum of squares (the second's RMS). Once per
second: mains hum, the power at 50 and 60 Hz and their 2nd and 3rd harmonics, by projecting
exactly one second of audio on those sines (whole cycles, so the bins do not leak).
Per-channel decisions (activity, faults) are the caller's: this module only measures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FRAME_S = 0.02
FRAMES_PER_CHUNK = 5
FLOOR_DBFS = -120.0
"""What digital silence reads as, instead of minus infinity."""
FULL_SCALE = 0.999
HUM_HZ = (50.0, 60.0, 100.0, 120.0, 150.0, 180.0)

Floats = NDArray[np.float64]


def to_dbfs(rms: Floats) -> Floats:
    """RMS (full scale 1.0) to dBFS, floored at FLOOR_DBFS."""
    with np.errstate(divide="ignore"):
        return np.maximum(20.0 * np.log10(rms), FLOOR_DBFS)


@dataclass(frozen=True, slots=True)
class Chunk:
    """Measurements of one 100 ms chunk; arrays have one entry (or column) per channel."""

    frame_dbfs: Floats
    """Shape (5, channels): RMS of each 20 ms frame, dBFS."""
    peak: Floats
    clipped: NDArray[np.int64]
    total: Floats
    """Sum of samples (DC offset = total / frames)."""
    sumsq: Floats
    frames: int


class CardAnalyzer:
    """Measures every column of one capture device; feed it blocks as they arrive."""

    def __init__(self, *, samplerate: int, columns: int) -> None:
        if samplerate % int(1 / FRAME_S) != 0:
            raise ValueError(f"samplerate {samplerate} is not a multiple of 50 Hz frames")
        if columns < 1:
            raise ValueError("columns must be at least 1")
        self.samplerate = samplerate
        self.columns = columns
        self.frame_len = int(samplerate * FRAME_S)
        self.chunk_len = self.frame_len * FRAMES_PER_CHUNK
        self._pending = np.zeros((self.chunk_len, columns), dtype=np.float32)
        self._filled = 0
        self._hum_buf = np.zeros((samplerate, columns), dtype=np.float32)
        self._hum_filled = 0
        t = np.arange(samplerate) / samplerate
        basis = [np.cos(2 * math.pi * f * t) for f in HUM_HZ] + [
            np.sin(2 * math.pi * f * t) for f in HUM_HZ
        ]
        self._hum_basis = np.stack(basis, axis=1).astype(np.float32)
        self._hum_ready: Floats | None = None

    def feed(self, frames: NDArray[np.float32]) -> list[Chunk]:
        """Add a block (n, columns); returns the chunks it completed, oldest first."""
        if frames.ndim != 2 or frames.shape[1] != self.columns:
            raise ValueError(f"expected (n, {self.columns}) frames, got {frames.shape}")
        chunks = []
        offset = 0
        n = frames.shape[0]
        while offset < n:
            take = min(self.chunk_len - self._filled, n - offset)
            self._pending[self._filled : self._filled + take] = frames[offset : offset + take]
            self._filled += take
            offset += take
            if self._filled == self.chunk_len:
                chunks.append(self._measure(self._pending))
                self._add_hum(self._pending)
                self._filled = 0
        return chunks

    def take_hum(self) -> Floats | None:
        """Hum level per column in dBFS, once per second of audio (else None)."""
        ready, self._hum_ready = self._hum_ready, None
        return ready

    def _measure(self, chunk: NDArray[np.float32]) -> Chunk:
        x = chunk.astype(np.float64)
        squares = x * x
        per_frame = squares.reshape(FRAMES_PER_CHUNK, self.frame_len, self.columns).mean(axis=1)
        magnitude = np.abs(x)
        return Chunk(
            frame_dbfs=to_dbfs(np.sqrt(per_frame)),
            peak=magnitude.max(axis=0),
            clipped=(magnitude >= FULL_SCALE).sum(axis=0),
            total=x.sum(axis=0),
            sumsq=squares.sum(axis=0),
            frames=self.chunk_len,
        )

    def _add_hum(self, chunk: NDArray[np.float32]) -> None:
        end = self._hum_filled + self.chunk_len
        self._hum_buf[self._hum_filled : end] = chunk
        self._hum_filled = end
        if self._hum_filled < self.samplerate:
            return
        self._hum_filled = 0
        # Projection on each sine: amplitude = 2/N * |<x, e^jwt>|; the RMS of all of them.
        proj = (self._hum_buf.T @ self._hum_basis).astype(np.float64)
        k = len(HUM_HZ)
        amplitude_sq = (proj[:, :k] ** 2 + proj[:, k:] ** 2) * (2.0 / self.samplerate) ** 2
        self._hum_ready = to_dbfs(np.sqrt(amplitude_sq.sum(axis=1) / 2.0))
