"""Streaming DFT bins at fixed tones, for the signalling decoders (DTMF, selcall).

The input is cut in hops; each hop's sums under the tones' mixers come from one matrix
product, turned by the mixer phase at the hop's start (exact for whole-Hz tones: it is
counted in integers from the stream start), and a window's bin is the sum over its hops.
Any split of the input into blocks gives the same bins."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
C128 = npt.NDArray[np.complex128]


class WindowedBins:
    """feed() samples, get each completed window's bins (one row per hop) and energy."""

    def __init__(self, rate: int, hop: int, tones_hz: F64, window_hops: int) -> None:
        if window_hops < 2 or not np.all(tones_hz == np.rint(tones_hz)):
            raise ValueError("whole-Hz tones (their phase is counted exactly), 2 hops a window")
        self.rate, self.hop, self.window_hops = rate, hop, window_hops
        self._int_hz = tones_hz.astype(np.int64)
        m = np.arange(hop, dtype=np.float64)
        phasors = np.exp(-2j * np.pi * np.outer(m, tones_hz / rate))
        # Real samples: one real product against [cos | sin] instead of a complex one.
        self._phasors_ri = np.ascontiguousarray(np.concatenate((phasors.real, phasors.imag), 1))
        # The mixer's phase at a hop start is a whole number of cycles/rate: looked up.
        self._turns = np.exp(-2j * np.pi * np.arange(rate) / rate)
        self._tail = np.zeros(0, dtype=np.float64)  # samples of a hop not yet complete
        self._chunks = 0  # complete hops of samples seen (chunk j: samples j*hop on)
        self._partial_z = np.zeros((0, len(tones_hz)), dtype=np.complex128)
        self._partial_e = np.zeros(0)

    def feed(self, samples: npt.ArrayLike) -> tuple[C128, F64]:
        """(bins, energy) of each window completed by these samples: window k (k counted
        from the stream start) is chunks k .. k + window_hops - 1. Non-finite samples are 0."""
        x = np.asarray(samples, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(x)):
            x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        n_tones = len(self._int_hz)
        buf = np.concatenate((self._tail, x)) if len(self._tail) else x
        whole = len(buf) // self.hop
        self._tail = buf[whole * self.hop :].copy()
        if whole == 0:
            return np.zeros((0, n_tones), np.complex128), np.zeros(0)
        chunks = buf[: whole * self.hop].reshape(whole, self.hop)
        starts = (self._chunks + np.arange(whole, dtype=np.int64)) * self.hop
        cycles = np.mod(np.outer(starts, self._int_hz), self.rate)
        ri = chunks @ self._phasors_ri
        part_z = (ri[:, :n_tones] + 1j * ri[:, n_tones:]) * self._turns[cycles]
        part_e = np.einsum("ij,ij->i", chunks, chunks)
        self._chunks += whole
        all_z = np.concatenate((self._partial_z, part_z))
        all_e = np.concatenate((self._partial_e, part_e))
        w = self.window_hops
        self._partial_z, self._partial_e = all_z[-(w - 1) :], all_e[-(w - 1) :]
        if len(all_z) < w:
            return np.zeros((0, n_tones), np.complex128), np.zeros(0)
        cz = np.concatenate((np.zeros((1, n_tones), np.complex128), np.cumsum(all_z, 0)))
        ce = np.concatenate(([0.0], np.cumsum(all_e)))
        z: C128 = cz[w:] - cz[:-w]
        energy: F64 = np.maximum(ce[w:] - ce[:-w], 0.0)
        return z, energy

    def measure_hz(self, hops: npt.NDArray[np.int64], z: C128, nominal: float) -> float:
        """A tone's frequency from the phase advance of its bin from hop to hop (each step
        weighted by its power; across a dropout the advance could wrap: neighbours only)."""
        near = np.diff(hops) == 1
        if not np.any(near):
            return nominal
        turn = np.sum((z[1:] * np.conj(z[:-1]))[near])
        return nominal + float(np.angle(turn)) / (2.0 * np.pi) * self.rate / self.hop

    def measure_in_main_bin(
        self, hops: npt.NDArray[np.int64], z: C128, columns: npt.NDArray[np.int64], bin_hz: F64
    ) -> float:
        """`measure_hz` in the bin that held the tone most often: a tone between two bins
        may hop between them, and steps across bins are left out (their phases differ)."""
        main = int(np.bincount(columns).argmax())
        same = columns == main
        return self.measure_hz(hops[same], z[same], float(bin_hz[main]))


def raised_cosine_edges(x: F64, rate: int, edge_s: float = 0.002) -> F64:
    """`x` with raised-cosine ends (no clicks for a receiver to hear), in place."""
    edge = min(round(edge_s * rate), len(x) // 2)
    if edge:
        rise = 0.5 - 0.5 * np.cos(np.pi * np.arange(edge) / edge)
        x[:edge] *= rise
        x[len(x) - edge :] *= rise[::-1]
    return x
