"""FSK front end and character framing for the TTY decoder (internal to gateway.dsp.tty).

Signal path, all in numpy and all causal; any split of the input into blocks gives the
same numbers (taps applied one at a time, mixer phases anchored at hop starts):

1. `FrontEnd`: a complex band-pass FIR (centred on 1600 Hz) decimates the input to about
   2000 complex samples/s. Every hop (128 samples, 64 ms) a Hann periodogram gives the
   noise floor, whether TTY tones are present (and whether only an idle mark is), and the
   mark and space frequencies (the peaks within +-6 % of 1400 and 1800 Hz, so a TTY whose
   tones are off is tracked; a tone not measured yet in a burst is inferred from the
   other). Each tone is mixed to 0 Hz with the frequency found one hop earlier and
   accumulated into a running sum, so the integrate-and-dump output of a bit ending at
   any sample n is C[n] - C[n - bit]: a matched filter per bit evaluated at every timing
   phase for the price of one subtraction.
2. `Tracker` (one per baud rate): a start bit is hunted where the space tone clearly
   dominates a bit window; the frame timing is then the offset, within about one bit, that
   maximises the frame log-likelihood (idle and stop bits mark, start bit space, data bits
   free, non-coherent soft values). Once characters come back to back, the next one is
   looked for where their rhythm puts it, and that prior is weighed in (a character with
   few transitions, such as LTRS, is otherwise easily pulled off by noise). Soft values use
   amplitude-weighted envelopes (threshold correction), so a line that attenuates one tone
   more than the other keeps the optimum threshold; each frame carries the log-likelihood
   ratios of its data bits for the character decision. The timing score of a frame at
   every start is computed in bulk (with the levels set at detection, held for the burst).
3. Coherent reading (Tracker.coherent): a TTY's FSK is continuous-phase, so under each of
   the 32 codes the phase of every bit window follows from the tone frequencies. Each
   window's sum is turned by its mixer's own phase into the signal's phase at the window
   start; the mark windows of a code add up coherently, and so do its space windows. The
   exact tone frequencies are learnt from the phase steps between like bits; once both are
   and the signal shows it holds its phase, every frame's code is decided this way. At
   45.45 baud a wrong bit turns every later window by 0.8 turns, which makes a wrong code
   far less likely than bit by bit; at 50 baud the tones are a whole number of turns apart
   per bit and only the gain of coherent detection is left. Measured on minimodem's
   signals: 1 % CER about 1 dB lower, and a quarter of the errors at 1 dB below that.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
C64 = npt.NDArray[np.complex64]
C128 = npt.NDArray[np.complex128]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]

MARK_HZ: Final = 1400.0
SPACE_HZ: Final = 1800.0
CENTER_HZ: Final = 1600.0
BAUD_45: Final = 1000.0 / 22.0  # 45.45 baud: 22 ms bits
BAUD_50: Final = 50.0
TOLERANCE: Final = 0.06  # search +-6 % around each nominal tone (TTYs are within 5 %)

TARGET_RATE: Final = 2000.0  # decimated complex sample rate (approximately)
HOP: Final = 128  # decimated samples per analysis hop (64 ms at 2000/s)
NFFT: Final = 256  # periodogram length (7.8 Hz bins)
AVG_HOPS: Final = 8  # periodograms averaged for frequency and floor estimates (~0.5 s)
PAIR_TOLERANCE_HZ: Final = 15.0  # a held tone this far from its partner's implied one is stale
PEAK_SIGNIFICANCE: Final = 6.0  # tone peak over median floor before a frequency is trusted
PRESENCE_RATIO: Final = 8.0  # tone bin over median floor (2-hop average): "tone present"
FLOOR_HALF_BAND: Final = 450.0  # Hz around the centre used for the noise floor median
RECENT_HOPS: Final = 16  # hunting for start bits needs tones within the last ~1 s
HISTORY_S: Final = 12.0  # decimated history kept for re-decoding the start of a burst
_FEW_HOPS: Final = 8  # hops per block up to which per-hop loops beat numpy's bulk calls
_HOP_CAP: Final = 512  # per-hop parameters: HISTORY_S is under 200 hops
MIN_NOISE: Final = 1e-12  # floor on the noise estimate (digital silence is not 0 dB SNR)


class Buf:
    """A growable 1-D array addressed by absolute index, trimmed from the front."""

    def __init__(
        self, dtype: npt.DTypeLike, start: int = 0, cap: int = 1 << 16, full: int = 1 << 16
    ) -> None:
        """`cap`: by default HISTORY_S of decimated samples and a block, the size trimming
        keeps it at, from the start (and `full` if it grows): a buffer grown by doubling
        made the front end of a decoder's first minute a fifth slower (measured, 8
        messages, best of 6). What is never written costs no memory.
        """
        self.a = np.empty(cap, dtype=dtype)  # only what was written is read
        self.base = start
        self.n = 0
        self._full = full

    @property
    def end(self) -> int:
        return self.base + self.n

    def append(self, v: npt.NDArray[np.generic]) -> None:
        self.extend(len(v))[:] = v

    def extend(self, k: int) -> npt.NDArray[Any]:
        """Grow by `k` entries and return them (a view) to be written in place."""
        if self.n + k > len(self.a):
            cap = max(self._full, 2 * len(self.a), self.n + k)
            new = np.empty(cap, dtype=self.a.dtype)
            new[: self.n] = self.a[: self.n]
            self.a = new
        out = self.a[self.n : self.n + k]
        self.n += k
        return out

    def restart(self, start: int) -> None:
        """Empty, its first index `start` (the array is kept: no new allocation)."""
        self.base = start
        self.n = 0

    def truncate(self, end: int) -> None:
        """Drop everything from absolute index `end` on."""
        self.n = max(0, min(self.n, end - self.base))

    def trim(self, keep_from: int) -> None:
        """Forget data before `keep_from` (only when that frees at least half the array)."""
        drop = keep_from - self.base
        if drop > 0 and drop >= len(self.a) // 2 and drop <= self.n:
            self.a[: self.n - drop] = self.a[drop : self.n].copy()
            self.n -= drop
            self.base += drop

    def get(self, start: int, stop: int) -> npt.NDArray[Any]:
        return self.a[start - self.base : stop - self.base]

    def take(self, idx: I64) -> npt.NDArray[Any]:
        return self.a[idx - self.base]


def _design_taps(fs: float, decim: int) -> tuple[F32, int]:
    """Polyphase taps of a complex band-pass around CENTER_HZ (Hamming windowed sinc).

    Returned as an (L, 2) float32 matrix [real, imag] in input order, so that one output is
    window(x) @ taps. The output is not mixed down: sampled at fs/decim, the band around
    CENTER_HZ simply appears at its alias, and the tone mixers use absolute frequencies,
    which alias the same way.
    """
    length = 8 * decim
    k = np.arange(length, dtype=np.float64)
    cutoff = 800.0 / fs
    h = np.sinc(2 * cutoff * (k - (length - 1) / 2)) * np.hamming(length)
    h /= h.sum()
    w = 2 * math.pi * CENTER_HZ / fs
    # Output m is sum_k h[k] e^{jwk} x[n - k] with n = m*D + L - 1; row j holds x[m*D + j].
    g = h[::-1] * np.exp(1j * w * (length - 1 - k))
    taps = np.stack([g.real, g.imag], axis=1).astype(np.float32)
    return taps, length


def alias(f: float, fs2: float) -> float:
    """Where absolute frequency `f` appears in a complex signal sampled at `fs2`."""
    return float(np.mod(f + fs2 / 2, fs2) - fs2 / 2)


def _hop_buf(dtype: npt.DTypeLike) -> Buf:
    """A buffer of per-hop parameters (HISTORY_S is under 200 hops)."""
    return Buf(dtype, cap=_HOP_CAP, full=_HOP_CAP)


def _as_slice(idx: I64) -> slice:
    """Consecutive indices as the slice they are."""
    assert len(idx) and np.array_equal(idx, np.arange(idx[0], idx[0] + len(idx)))
    return slice(int(idx[0]), int(idx[0]) + len(idx))


def _window_means(rows_data: F64, first: int, k: int) -> tuple[F64, F64]:
    """Means of the (up to) k rows, and of the (up to) 2 rows, ending at each row from
    `first` on, newest first (k >= 2).

    Always summed in the same order, so a hop's value does not depend on how many hops
    were analysed together (a running cumulative sum would round differently). The sum
    of 2 is the first step of the sum of k.
    """
    n = len(rows_data) - first
    pad = max(0, k - 1 - first)  # the stream's first hops have fewer rows before them
    if pad:
        rows_data = np.concatenate([np.zeros((pad, rows_data.shape[1])), rows_data])
    lo = first + pad
    out = rows_data[lo:] + rows_data[lo - 1 : lo - 1 + n]  # adding the zero padding is exact
    rows = np.arange(first + 1, first + 1 + n)
    mean2: F64 = out / np.minimum(rows, 2)[:, None]
    for j in range(2, k):
        out += rows_data[lo - j : lo - j + n]
    mean: F64 = out / np.minimum(rows, k)[:, None]
    return mean, mean2


# 2 pi split in two, the high part with 26 significant bits: q * _TWO_PI_HI and
# q * _TWO_PI_LO are then exact for any integer q below _MOD_Q_MAX.
_TWO_PI: Final = 2 * math.pi
_TWO_PI_HI: Final = math.ldexp(
    math.floor(math.ldexp(math.frexp(_TWO_PI)[0], 26)), math.frexp(_TWO_PI)[1] - 26
)
_TWO_PI_LO: Final = _TWO_PI - _TWO_PI_HI  # exact, 25 significant bits
_MOD_Q_MAX: Final = 2.0**26


def _mod_2pi(a: F64) -> F64:
    """np.mod(a, 2 pi), exactly (bit for bit), in a fifth of the time.

    fmod's result is exactly representable, so a - q (2 pi) for the right integer q,
    computed without rounding, is it: a - q * hi is exact (the two are within a factor of
    two, Sterbenz) and so is q * lo, and their difference is the representable result.
    Where the quotient estimate is off by one (the result falls outside [0, 2 pi)), for
    negative input (np.mod rounds there) or a quotient too large to be exact, np.mod.
    """
    q = np.floor(a * (1.0 / _TWO_PI))
    r: F64 = (a - q * _TWO_PI_HI) - q * _TWO_PI_LO
    bad = (r < 0.0) | (r >= _TWO_PI) | (q < 0.0) | (q >= _MOD_Q_MAX)
    if bad.any():
        r[bad] = np.mod(a[bad], _TWO_PI)
    return r


class FrontEnd:
    """Decimation, per-hop spectral analysis and per-tone running sums."""

    def __init__(self, sample_rate: float) -> None:
        self.fs = float(sample_rate)
        self.decim = max(1, round(self.fs / TARGET_RATE))
        self.fs2 = self.fs / self.decim
        self.taps, self.ntaps = _design_taps(self.fs, self.decim)
        assert self.ntaps % self.decim == 0  # the polyphase split in process relies on it
        self._taps_col = self.taps[:, :, None].copy()  # per tap: (2, 1), to scale both parts
        # Input samples not yet consumed; output m uses input [m*D, m*D + L).
        self._x = np.zeros(0, dtype=np.float32)
        # Decimated complex band signal; NFFT zeros before index 0 so early windows exist.
        self.y = Buf(np.complex64, start=-NFFT)
        self.y.append(np.zeros(NFFT, dtype=np.complex64))
        # Running sums of each tone mixed to 0 Hz (complex128: no drift over hours).
        self.cm = Buf(np.complex128, start=-NFFT)
        self.cs = Buf(np.complex128, start=-NFFT)
        self.cm.append(np.zeros(NFFT, dtype=np.complex128))
        self.cs.append(np.zeros(NFFT, dtype=np.complex128))
        # Each tone's mixer phasor conjugated, e^{+jM(n)}, per sample: with it a window's
        # sum is turned into the signal's own phase at the window start (Tracker.coherent).
        # Kept conjugated, as the trackers use it, so that they need not conjugate it.
        self.xm = Buf(np.complex64, start=-NFFT)
        self.xs = Buf(np.complex64, start=-NFFT)
        self.xm.append(np.ones(NFFT, dtype=np.complex64))
        self.xs.append(np.ones(NFFT, dtype=np.complex64))
        self._anchor = [(0, 0.0), (0, 0.0)]  # per tone: (hop, mixer phase at its start)
        self._fixed_until = 0  # samples before this use _fixed_hz (a burst re-read)
        self._fixed_hz = (MARK_HZ, SPACE_HZ)
        # Per-hop parameters; hop h covers decimated samples [h*HOP, (h+1)*HOP), and the
        # parameters of hop h come from the analysis of hop h-1.
        self.p_mark = _hop_buf(np.float64)
        self.p_space = _hop_buf(np.float64)
        self.p_noise = _hop_buf(np.float64)
        self.p_present = _hop_buf(np.bool_)
        self.p_recent = _hop_buf(np.bool_)  # tones present in any of the last RECENT_HOPS hops
        self.p_tones = _hop_buf(np.bool_)  # both tone frequencies clearly measured
        self.p_idle = _hop_buf(np.bool_)  # steady idle mark: the carrier held between characters
        self._per_hop = (
            self.p_mark,
            self.p_space,
            self.p_noise,
            self.p_present,
            self.p_recent,
            self.p_tones,
            self.p_idle,
        )
        self._append_default_hop()
        self._since_present = RECENT_HOPS
        self._hops_done = 0
        self._win = np.hanning(NFFT + 2)[1:-1].astype(np.float32)
        self._hop_offsets = np.arange(HOP, dtype=np.float64)
        self._around = np.array([[-1], [0], [1]], dtype=np.int64)
        self._win_pow = float(np.sum(self._win.astype(np.float64) ** 2))
        # FFT bins covering CENTER_HZ +- FLOOR_HALF_BAND, in order of absolute frequency.
        step = self.fs2 / NFFT
        nu = np.fft.fftfreq(NFFT, d=1.0 / self.fs2)
        shift = CENTER_HZ - alias(CENTER_HZ, self.fs2)
        absf = nu + shift
        band = np.nonzero(np.abs(absf - CENTER_HZ) <= FLOOR_HALF_BAND + 2 * step)[0]
        band = band[np.argsort(absf[band])]
        self._band = band.astype(np.int64)
        self._band_f = absf[band]
        # The band is in order of frequency, so each range of it is a slice: numpy's
        # slices and take() are several times faster than fancy indexing along an axis.
        self._floor_sel = _as_slice(
            np.nonzero(np.abs(self._band_f - CENTER_HZ) <= FLOOR_HALF_BAND)[0]
        )
        self._mark_sel = _as_slice(self._sel_near(MARK_HZ))
        self._space_sel = _as_slice(self._sel_near(SPACE_HZ))
        self._step = step
        self._hist = np.zeros((0, len(band)), dtype=np.float64)  # last AVG_HOPS-1 spectra
        self._est_mark = MARK_HZ
        self._est_space = SPACE_HZ

    def _sel_near(self, nominal: float) -> I64:
        """Bins within TOLERANCE of `nominal`, and one more each side.

        The extra bins let a tone near the edge of the range (5 % off, between the last
        two bins) still show as a local maximum rather than a slope running off the edge.
        """
        f, pad = self._band_f, self.fs2 / NFFT
        ok = (f >= nominal * (1 - TOLERANCE) - pad) & (f <= nominal * (1 + TOLERANCE) + pad)
        return np.nonzero(ok)[0].astype(np.int64)

    # -- time base ----------------------------------------------------------------------

    def time_of(self, m: float) -> float:
        """Stream time in seconds of decimated index `m` (filter delay removed)."""
        return (m * self.decim + (self.ntaps - 1) / 2) / self.fs

    @property
    def avail(self) -> int:
        """One past the last decimated index whose running sums exist."""
        return self.cm.end

    # -- processing -----------------------------------------------------------------------

    def process(self, x: F32) -> None:
        """Consume input samples; extend y, the hop parameters and the running sums."""
        buf = np.concatenate([self._x, x]) if len(self._x) else x
        d, length = self.decim, self.ntaps
        count = (len(buf) - length) // d + 1 if len(buf) >= length else 0
        if count <= 0:
            self._x = buf.copy()
            return
        # One tap at a time (not BLAS): the same sums in the same order whatever the block
        # size, so a stream cut into any blocks decodes exactly as one block. The input is
        # split into its d phases first (row p holds x[m*d + p]), so that each tap reads a
        # contiguous run, and both parts of a tap are applied in one operation.
        rows = count + length // d - 1
        phases = buf[: rows * d].reshape(rows, d).T.copy()
        acc = np.zeros((2, count), dtype=np.float32)
        tmp = np.empty((2, count), dtype=np.float32)
        taps = self._taps_col
        for j in range(length):
            q = j // d
            np.multiply(phases[j - q * d, q : q + count], taps[j], out=tmp)
            acc += tmp
        self._x = buf[count * d :].copy()
        start = self.y.end
        y = self.y.extend(count)
        y.real = acc[0]
        y.imag = acc[1]
        self._analyse_hops()
        self._accumulate(start, self.y.end)
        keep = self.y.end - int(HISTORY_S * self.fs2)
        for sbuf in (self.y, self.cm, self.cs, self.xm, self.xs):
            sbuf.trim(keep)
        keep_hop = keep // HOP - 2
        for pbuf in self._per_hop:
            pbuf.trim(keep_hop)

    def _append_default_hop(self) -> None:
        """One hop of parameters with nothing measured: nominal tones, no signal."""
        self.p_mark.append(np.array([MARK_HZ]))
        self.p_space.append(np.array([SPACE_HZ]))
        self.p_noise.append(np.array([np.inf]))
        for pb in (self.p_present, self.p_recent, self.p_tones, self.p_idle):
            pb.append(np.array([False]))

    def _analyse_hops(self) -> None:
        """Periodograms for every hop completed; parameters for the hops that follow."""
        done = self.y.end // HOP
        first = self._hops_done
        if first == 0 and done >= 1:
            # Hop 0's window reaches into the zeros before the stream: no estimate from it.
            self._append_default_hop()
            first = self._hops_done = 1
        if done <= first:
            return
        # Window r is hops r and r + 1 of `blocks` (NFFT is two hops), windowed.
        blocks = self.y.get((first + 1) * HOP - NFFT, done * HOP).reshape(-1, HOP)
        # complex128: numpy's pocketfft takes a fifth of the time on it than on complex64.
        windowed = np.empty((done - first, NFFT), dtype=np.complex128)
        np.multiply(blocks[:-1], self._win[:HOP], out=windowed[:, :HOP])
        np.multiply(blocks[1:], self._win[HOP:], out=windowed[:, HOP:])
        spec = np.fft.fft(windowed, axis=1).take(self._band, axis=1)
        power = spec.real**2 + spec.imag**2
        allp = np.concatenate([self._hist, power], axis=0)
        avg8, avg2 = _window_means(allp, len(self._hist), AVG_HOPS)
        self._hist = allp[-(AVG_HOPS - 1) :]

        mid = (self._floor_sel.stop - self._floor_sel.start) // 2
        floor8 = np.partition(avg8[:, self._floor_sel], mid, axis=1)[:, mid]
        floor2 = np.partition(avg2[:, self._floor_sel], mid, axis=1)[:, mid]
        # The long average is steadier; the short one follows a floor that rises (speech
        # starting after silence) at once. Medians of averages of ~4 and ~2 exponentials.
        floor = np.maximum(floor8, floor2 * (0.93 / 0.84))
        floor = np.maximum(floor, MIN_NOISE * 0.93 * self._win_pow)
        mark_f, mark_sig = self._track(avg8, floor, self._mark_sel)
        space_f, space_sig = self._track(avg8, floor, self._space_sel)
        mark, space = self._hold(mark_f, mark_sig, space_f, space_sig)
        # The median of an average of ~4 independent exponential bins is ~0.93 of its mean.
        noise = floor / (0.93 * self._win_pow)
        present, idle = self._presence(avg2, floor, mark, space)
        self.p_mark.append(mark)
        self.p_space.append(space)
        self.p_noise.append(noise)
        self.p_present.append(present)
        self.p_tones.append(mark_sig & space_sig)
        self.p_idle.append(idle)
        if first == 1:
            # The stream's first two hops have no window of their own before them: give
            # them the noise of the window over them (measured on them), or a TTY already
            # on when the stream starts (a file cut in its lead-in) loses its first
            # character as a frame with no signal. Nothing reads them before this: every
            # frame that starts there is decided later.
            self.p_noise.a[0 - self.p_noise.base : 2 - self.p_noise.base] = noise[0]
        idx = np.arange(len(present))
        last = np.maximum.accumulate(np.where(present, idx, -1 - self._since_present))
        since = idx - last
        self.p_recent.append(since < RECENT_HOPS)
        self._since_present = int(since[-1])
        self._hops_done = done

    def _track(self, avg: F64, floor: F64, sel: slice) -> tuple[F64, B]:
        """Peak frequency among the bins `sel` per hop, and whether it is significant.

        Significant: a local maximum inside the search range (not a slope running off its
        edge) standing PEAK_SIGNIFICANCE above the floor.
        """
        sub = avg[:, sel]
        if len(sub) <= _FEW_HOPS:
            return self._track_each(sub, floor, sel)
        return self._track_bulk(sub, floor, sel)

    def _track_bulk(self, sub: F64, floor: F64, sel: slice) -> tuple[F64, B]:
        """_track for many hops at once: `sub` holds their bins `sel`."""
        width = sel.stop - sel.start
        rows = np.arange(len(sub))
        k = np.argmax(sub, axis=1)
        sig = (sub[rows, k] > PEAK_SIGNIFICANCE * floor) & (k > 0) & (k < width - 1)
        kk = np.minimum(np.maximum(k, 1), width - 2)
        # The three bins around each peak in one gather and one log.
        lft, mid, rgt = np.log(sub[rows, kk + self._around] + 1e-300)
        den = lft - 2 * mid + rgt
        delta = np.zeros(len(sub))
        fit = den < 0  # a parabola through the three opens downwards: its vertex
        delta[fit] = 0.5 * (lft[fit] - rgt[fit]) / den[fit]
        f: F64 = self._band_f[sel][kk] + np.minimum(np.maximum(delta, -0.5), 0.5) * self._step
        return f, sig

    def _track_each(self, sub: F64, floor: F64, sel: slice) -> tuple[F64, B]:
        """_track_bulk hop by hop (the same operations on the same floats; the log taken by
        numpy as there)."""
        width = sel.stop - sel.start
        freqs = self._band_f[sel].tolist()
        out_f: list[float] = []
        out_sig: list[bool] = []
        for row, fl in zip(sub, floor.tolist(), strict=True):
            k = int(row.argmax())
            out_sig.append(float(row[k]) > PEAK_SIGNIFICANCE * fl and 0 < k < width - 1)
            kk = min(max(k, 1), width - 2)
            lft, mid, rgt = np.log(row[kk - 1 : kk + 2] + 1e-300).tolist()
            den = lft - 2 * mid + rgt
            delta = 0.5 * (lft - rgt) / den if den < 0 else 0.0
            out_f.append(freqs[kk] + min(max(delta, -0.5), 0.5) * self._step)
        return np.array(out_f), np.array(out_sig, dtype=bool)

    def _hold(self, mark_f: F64, mark_sig: B, space_f: F64, space_sig: B) -> tuple[F64, F64]:
        """Tone frequencies per hop: the latest significant measurement of each.

        A tone not measured yet in this burst (the space during the mark lead-in) would
        keep a value from before it, the nominal frequency or a noise peak, and read the
        first start bit with a mixer up to 90 Hz off, losing it. So a held value that
        does not go with the other tone, just measured, is replaced by the partner that
        tone implies: 400 Hz apart, scaled halfway between a common shift and a common
        ratio (a TTY 5 % off is then within 10 Hz either way).
        """
        mark: list[float] = []
        space: list[float] = []
        m, sp = self._est_mark, self._est_space
        for mf, ms, sf, ss in zip(
            mark_f.tolist(), mark_sig.tolist(), space_f.tolist(), space_sig.tolist(), strict=True
        ):
            if ms:
                m = mf
            if ss:
                sp = sf
            if ms and not ss:
                guess = m + (SPACE_HZ - MARK_HZ) * (1.0 + 0.5 * (m / MARK_HZ - 1.0))
                if abs(sp - guess) > PAIR_TOLERANCE_HZ:
                    sp = guess
            elif ss and not ms:
                guess = sp - (SPACE_HZ - MARK_HZ) * (1.0 + 0.5 * (sp / SPACE_HZ - 1.0))
                if abs(m - guess) > PAIR_TOLERANCE_HZ:
                    m = guess
            mark.append(m)
            space.append(sp)
        self._est_mark, self._est_space = m, sp
        return np.array(mark), np.array(space)

    def _tone_power(self, avg2: F64, f: F64) -> F64:
        """Power in the three bins around frequency f (per hop; f may be a stack of rows
        of frequencies per hop, one row per tone)."""
        k = np.rint((f - self._band_f[0]) / self._step).astype(np.int64)
        last = len(self._band_f) - 1
        k = np.minimum(np.maximum(k, 1), last - 1)  # the tones are well inside the band
        k += np.arange(len(avg2))[None, :] * avg2.shape[1]  # flat indices: take is fast
        flat = avg2.ravel()
        out: F64 = flat.take(k - 1) + flat.take(k) + flat.take(k + 1)
        return out

    def _presence(self, avg2: F64, floor: F64, mark: F64, space: F64) -> tuple[B, B]:
        """Per hop: either tone present; and a steady idle mark (the TTY holding its carrier).

        Idle mark is the mark tone alone, holding a good share of the band: a voice with a
        harmonic on the mark frequency spreads its power over many others.
        """
        if len(avg2) <= _FEW_HOPS:
            return self._presence_each(avg2, floor, mark, space)
        p_m, p_s = self._tone_power(avg2, np.stack([mark, space]))
        present: B = np.maximum(p_m, p_s) > 3 * PRESENCE_RATIO * floor
        band = avg2.sum(axis=1)
        idle: B = (p_m > 3 * PRESENCE_RATIO * floor) & (p_s < 9 * floor) & (p_m > 0.3 * band)
        return present, idle

    def _presence_each(self, avg2: F64, floor: F64, mark: F64, space: F64) -> tuple[B, B]:
        """_presence hop by hop (the same operations on the same floats)."""
        f0, step = float(self._band_f[0]), self._step
        last = len(self._band_f) - 1
        present: list[bool] = []
        idle: list[bool] = []
        rows = zip(
            avg2.tolist(),
            floor.tolist(),
            mark.tolist(),
            space.tolist(),
            avg2.sum(axis=1).tolist(),  # numpy's sum, as in bulk
            strict=True,
        )
        for row, fl, m, sp, band in rows:
            km = min(max(round((m - f0) / step), 1), last - 1)  # round: half to even, as rint
            ks = min(max(round((sp - f0) / step), 1), last - 1)
            p_m = row[km - 1] + row[km] + row[km + 1]
            p_s = row[ks - 1] + row[ks] + row[ks + 1]
            present.append(max(p_m, p_s) > 3 * PRESENCE_RATIO * fl)
            idle.append(p_m > 3 * PRESENCE_RATIO * fl and p_s < 9 * fl and p_m > 0.3 * band)
        return np.array(present, dtype=bool), np.array(idle, dtype=bool)

    def _freqs(self, pbuf: Buf, fixed: float, hops: I64) -> F64:
        """Tone frequency per hop: fixed inside a re-read burst, else as tracked."""
        f: F64 = pbuf.take(hops).astype(np.float64)
        if self._fixed_until > 0:
            f = np.where(hops * HOP < self._fixed_until, fixed, f)
        return f

    def _accumulate(self, start: int, stop: int) -> None:
        """Running sums for y[start:stop] with the per-hop tone frequencies.

        The mixer phase is anchored at hop starts (phase at a hop start plus the hop's
        frequency times the offset into the hop), so it is the same number however the
        input was split into blocks.
        """
        if stop <= start:
            return
        h0, h1 = start // HOP, (stop - 1) // HOP
        hops = np.arange(h0, h1 + 1, dtype=np.int64)
        # Both tones at once, row 0 mark and row 1 space: the same operations on each
        # element as tone by tone, in fewer calls.
        hz = [self._freqs(self.p_mark, self._fixed_hz[0], hops)]
        hz.append(self._freqs(self.p_space, self._fixed_hz[1], hops))
        w = np.stack(hz) * (2 * math.pi / self.fs2)
        head = np.array([[self._anchor[0][1]], [self._anchor[1][1]]])
        assert self._anchor[0][0] == h0 and self._anchor[1][0] == h0
        starts = np.cumsum(np.concatenate([head, w * HOP], axis=1), axis=1)  # at hop starts
        # Every sample of the hops touched, then the part wanted: the phase of sample n is
        # the phase at its hop's start plus the hop's frequency times its offset in the hop.
        grid = starts[:, :-1, None] + w[:, :, None] * self._hop_offsets
        lo = start - h0 * HOP
        phase = grid.reshape(2, -1)[:, lo : lo + stop - start]
        ph32 = _mod_2pi(phase).astype(np.float32)
        cos, sin = np.cos(ph32), np.sin(ph32)
        y = self.y.get(start, stop)
        for tone, (csum, xbuf) in enumerate(((self.cm, self.xm), (self.cs, self.xs))):
            turn = xbuf.extend(stop - start)  # cos/sin: far cheaper than exp
            turn.real = cos[tone]
            turn.imag = sin[tone]
            u = y * np.conj(turn)  # mixed down with e^{-jM(n)}
            # The new running sums in place after the last one: a cumulative sum from it.
            c = csum.extend(stop - start)
            c[:] = u
            sums = csum.a[csum.n - len(u) - 1 : csum.n]
            np.cumsum(sums, out=sums)
            if stop == (h1 + 1) * HOP:
                self._anchor[tone] = (h1 + 1, float(starts[tone, -1]))
            else:
                self._anchor[tone] = (h1, float(starts[tone, -2]))

    def recompute(self, start: int, split: int, mark_hz: float, space_hz: float) -> None:
        """Redo the running sums from `start` on, with fixed tone frequencies up to `split`.

        Used when a burst is detected, so its first characters are read with the tone
        frequencies measured when it was recognised rather than those of its first hops.
        Both ends are rounded out to hop boundaries.
        """
        stop = self.cm.end
        start = max(start, self.cm.base + 1)
        start = -(-start // HOP) * HOP
        if start >= stop:
            return
        self._fixed_until = -(-split // HOP) * HOP
        self._fixed_hz = (mark_hz, space_hz)
        for sbuf in (self.cm, self.cs, self.xm, self.xs):
            sbuf.truncate(start)
        self._anchor = [(start // HOP, 0.0), (start // HOP, 0.0)]
        self._accumulate(start, stop)


@dataclass(slots=True)
class Frame:
    """One character frame as read by a tracker (decimated sample indices)."""

    start: int  # first sample of the start bit
    end: int  # one past the first stop bit
    decided: int  # data needed up to (excluding) this index to decide the frame
    code: int
    start_ok: bool
    stop_ok: bool
    snr: float  # mean on-tone bit energy over the noise of a bit window
    min_snr: float  # the same for the weakest of the 7 bits
    leak: float  # off-tone over on-tone energy, summed over the 7 bits
    # Log-likelihood ratios of the 5 data bits (positive = mark = 1), for deciding the code
    # bit by bit: None when the frame was read coherently (code_ll), which decides it then.
    llr: F32 | None
    code_ll: F64 | None  # log-likelihood of each of the 32 codes, read coherently (or None)
    dm: C64  # each tone's window sums as signal phase at the window start (8 windows)
    ds: C64
    chain_z: float | None  # the coherent sums' size under `code` (when read coherently)
    absent: int  # of the 7 bits, how many hold less than half the TTY's level of their tone
    n_mark: int  # bits read as mark, and the mean envelope of each tone on its own bits
    mark_env: float
    space_env: float

    @property
    def valid(self) -> bool:
        return self.start_ok and self.stop_ok


TRIGGER_SNR: Final = 2.5  # start-bit window energy over the noise of a bit window
START_REL: Final = 0.1  # start-bit energy relative to the frame's mean bit energy
TRIGGER_LLR: Final = 3.0  # how clearly a window must read as space to start a frame
LEARN_SNR: Final = 3.0  # frames that teach the threshold correction the tone levels
LEARN_LEAK: Final = 0.5
RHYTHM_NATS: Final = 5.0  # prior for a start exactly one period after a back-to-back one
COHERENCE_MIN: Final = 0.8  # read frames coherently once the signal holds its phase this well
PAIRS_MIN: Final = 8  # and each tone's frequency is learnt from this many pairs of like bits
# A TTY's tones hold still: the phase steps are averaged over about 100 frames (a noisier
# estimate turns a frame's last windows by tenths of a radian at -8 dB).
PAIR_MEMORY: Final = 0.99
# Timing score weights over the 8 windows (idle, start, 5 data, stop): |q| of the data bits
# plus q of the idle and stop bits (mark) minus q of the start bit (space).
_DATA_W: Final = np.array([0, 0, 1, 1, 1, 1, 1, 0], dtype=np.float32)
_FIXED_W: Final = np.array([1, -1, 0, 0, 0, 0, 0, 1], dtype=np.float32)


@dataclass(frozen=True, slots=True)
class _TrackerTables:
    """What a tracker computes from its rate alone (shared: building it took a
    millisecond per tracker, a decoder's whole start-up)."""

    nbf: float
    nb: int
    offs: I64  # bit-window end offsets from the start-bit start, bits -1 (idle) .. 6
    frame_len: int
    next_scan: int
    next_floor: int
    ar: F64
    steps: F64
    n_mark: F64
    like: list[list[tuple[int, int]]]
    code_mark: list[list[bool]]
    uniq_m: F64
    uniq_s: F64
    chain_map: I64


@functools.lru_cache(maxsize=16)
def _tracker_tables(fs2: float, baud: float) -> _TrackerTables:
    nbf = fs2 / baud
    nb = round(nbf)
    offs = np.array([round((i + 1) * nbf) - 1 for i in range(-1, 7)], np.int64)
    # Coherent reading of a frame (see `coherent`): each code's tone per window (idle,
    # start, 5 data, stop), the window starts, and the samples of each tone before
    # each window under that code (the signal phase runs on at the tone's frequency).
    pattern = np.array([[1, 0, *((c >> i) & 1 for i in range(5)), 1] for c in range(32)])
    is_mark = pattern.astype(bool)
    # Bits last nbf samples (a fraction at some rates) while windows start on whole
    # samples: each window's start is `frac` off the ideal grid, spent in its own bit.
    starts = offs - nb + 1
    frac = (starts - starts[0]) - nbf * np.arange(8)
    bits_m = np.zeros((32, 8), np.float64)
    bits_m[:, 1:] = np.cumsum(pattern[:, :-1], axis=1)
    before_m = nbf * bits_m + frac * pattern
    before_s = nbf * (np.arange(8) - bits_m) + frac * (1 - pattern)
    like = [
        [
            (u, 0 if bool(pattern[c, u]) else 1)
            for u in range(7)
            if pattern[c, u] == pattern[c, u + 1]
        ]
        for c in range(32)
    ]  # per code: (window, tone) of each pair of like bits in a row
    # The chains (see Tracker._chains) as (tone, code, window), tone 0 for a mark window
    # and 1 for a space one, hold a turn where the code has that tone and 0 elsewhere; the
    # turn depends only on the samples of each tone before the window, which many codes
    # share. chain_map picks each entry from those distinct turns (index U: 0).
    pairs = np.stack([before_m.ravel(), before_s.ravel()], axis=1)
    uniq, inverse = np.unique(pairs, axis=0, return_inverse=True)
    inv = inverse.reshape(32, 8)
    chain_map = np.stack([np.where(is_mark, inv, len(uniq)), np.where(is_mark, len(uniq), inv)])
    for a in (offs, chain_map):
        a.flags.writeable = False
    return _TrackerTables(
        nbf=nbf,
        nb=nb,
        offs=offs,
        frame_len=round(7 * nbf),
        next_scan=round(6.5 * nbf),
        next_floor=round(6.75 * nbf),
        ar=np.arange(4 * nb, dtype=np.float64),
        steps=np.diff(starts).astype(np.float64),
        n_mark=pattern.sum(axis=1).astype(np.float64),
        like=like,
        code_mark=[[bool(v) for v in row] for row in pattern],
        uniq_m=uniq[:, 0].copy(),
        uniq_s=uniq[:, 1].copy(),
        chain_map=chain_map,
    )


class Tracker:
    """Start-bit hunting and frame timing for one baud rate."""

    def __init__(self, fe: FrontEnd, baud: float) -> None:
        self.fe = fe
        self.baud = baud
        t = _tracker_tables(fe.fs2, baud)
        self.nbf = t.nbf
        self.nb = t.nb
        self.offs = t.offs
        self.frame_len = t.frame_len
        self.next_scan = t.next_scan
        self.next_floor = t.next_floor
        # Envelopes of the bit-long integrate-and-dump of each tone, ending at each sample.
        self.rm = Buf(np.float32, start=fe.cm.base + self.nb)
        self.rs = Buf(np.float32, start=fe.cm.base + self.nb)
        self.dm = Buf(np.complex64, start=fe.cm.base + self.nb)
        self.ds = Buf(np.complex64, start=fe.cm.base + self.nb)
        # The timing score of a frame starting at each sample (see _extend_timing), from the
        # soft values q of the window ending at each sample, at the timing amplitudes.
        self._tamp = (0.0, 0.0)
        self.q = Buf(np.float32, start=fe.cm.base + self.nb)
        self.score = Buf(np.float32, start=fe.cm.base + self.nb - int(self.offs[0]))
        self._ar = t.ar
        self._steps = t.steps
        self._n_mark = t.n_mark
        self._like = t.like
        self._code_mark = t.code_mark
        self._uniq_m, self._uniq_s = t.uniq_m, t.uniq_s
        self._turns = np.zeros(len(t.uniq_m) + 1, np.complex128)
        self._chain_map = t.chain_map
        self.reset_chain(MARK_HZ, SPACE_HZ)
        self.reset(0)

    def reset_chain(self, mark_hz: float, space_hz: float) -> None:
        """Start learning a TTY's exact tone frequencies afresh from these measurements."""
        k = 2 * math.pi / self.fe.fs2
        self._w_ref = (mark_hz * k, space_hz * k)  # rad/sample, as measured
        self.w_m, self.w_s = self._w_ref  # as learnt from the phase of its bits
        # The reference's phase step over each window step, per tone.
        self._ref_step = [[complex(np.exp(-1j * w * d)) for d in self._steps] for w in self._w_ref]
        self._cached_w = (math.nan, math.nan)
        self._chain = np.zeros((2, 32, 8), np.complex128)
        self._pair = [0j, 0j]  # phase steps between like bits, accumulated
        self._pairs_n = [0, 0]  # how many, per tone
        self.coherence = 0.0  # how well the signal follows a continuous phase (0..1)
        self._coh_n = 0  # frames it was measured on

    def forget_before(self, position: int) -> None:
        """Nothing before `position`, less two frames, will be read: if the envelopes have
        not come that far, start them there rather than compute the span between.

        A tracker that sat out a burst (the other rate's) would otherwise compute the
        envelopes of the whole history when the burst ends. They are a function of the
        running sums at each sample, so those after `position` are the same either way.
        """
        start = position - 2 * self.frame_len - 4 * self.nb
        if self.rm.end < start and start >= self.fe.cm.base + self.nb:
            self._restart_envelopes(start)

    def _quiet(self) -> bool:
        """Hunting without a TTY (masked) and nothing due: True if no tone has been present
        since the envelopes' end, which may then lag, uncomputed; when tones come, the
        envelopes start shortly before them rather than compute the span between.

        Nothing reads that span: the hunt looks only where tones were present lately, no
        character is due, and a burst is read from at most six hops before its presence
        (TtyDecoder._presence_start) and two bits more. An idle channel (silence, noise)
        then costs the front end alone. The envelopes are a function of the running sums
        at each sample, so those computed are the same either way.
        """
        fe = self.fe
        recent = fe.p_recent
        h0 = max(self.rm.end // HOP, recent.base)
        hits = np.flatnonzero(recent.get(h0, recent.end))
        if len(hits) == 0:
            return True
        start = (h0 + int(hits[0]) - 8) * HOP - 2 * self.nb
        if start > self.rm.end and start >= fe.cm.base + self.nb:
            self._restart_envelopes(start)
        return False

    def _restart_envelopes(self, start: int) -> None:
        """Envelopes, soft values and timing scores empty, the first at `start`."""
        for buf in (self.rm, self.rs, self.dm, self.ds, self.q):
            buf.restart(start)
        self.score.restart(start - int(self.offs[0]))

    def reset(self, position: int) -> None:
        self.scan = position  # next start candidate to examine
        self.floor = position  # earliest start accepted by the timing search
        self.trigger: int | None = None
        self._due = False  # the pending search was placed by the rhythm, not by a trigger
        self.amp_m = 0.0  # threshold-correction amplitudes (|S| units); 0 = unknown
        self.amp_s = 0.0
        self.set_timing_amplitudes(0.0, 0.0)
        self.last_start: int | None = None
        self.period = 0.0  # start-to-start spacing of back-to-back characters
        self.period_n = 0  # how many consecutive spacings agreed with it
        self.misses = 0  # consecutive frames with a bad start or stop bit

    def _rhythm(self, t0: int) -> None:
        """Learn the spacing of back-to-back characters (1 to 2 stop bits, no idle)."""
        if self.last_start is not None:
            gap = t0 - self.last_start
            if 7 * self.nbf - self.nb / 2 <= gap <= 8.6 * self.nbf:
                if self.period_n and abs(gap - self.period) <= 0.3 * self.nb:
                    self.period += 0.25 * (gap - self.period)
                    self.period_n += 1
                else:
                    self.period = float(gap)
                    self.period_n = 1
            else:
                self.period_n = 0
        self.last_start = t0

    def _scale(self, noise: float, level: float) -> float:
        """Factor from soft values q to log-likelihood ratios."""
        if noise <= 0:
            return 0.0
        if self.amp_m > 0 and self.amp_s > 0:
            return 2.0 / noise
        return 2.0 * level / noise  # amplitudes not learnt yet: use the envelope level

    def invalidate(self, start: int) -> None:
        """The running sums changed from `start` on: drop envelopes that used them."""
        for buf in (self.rm, self.rs, self.dm, self.ds, self.q):
            buf.truncate(start)
        self.score.truncate(start - int(self.offs[-1]))

    def set_timing_amplitudes(self, amp_m: float, amp_s: float) -> None:
        """The tone levels the timing search corrects its threshold with (0: unknown).

        Held for a whole burst, set when it is detected (the frame decisions follow the
        levels frame by frame): so the timing score of every sample is computed once, in
        bulk, whatever the blocks the input came in.
        """
        if (amp_m, amp_s) == self._tamp:
            return
        self._tamp = (amp_m, amp_s)
        base = self.rm.base
        self.q.restart(base)
        self.score.restart(base - int(self.offs[0]))
        self._extend_timing()

    def _extend_timing(self) -> None:
        """Soft values and timing scores for the envelopes not covered yet.

        The score of a start t is the frame log-likelihood up to a scale: idle mark before
        (q > 0), start bit space (q < 0), data bits either way (|q|), stop bit mark.
        """
        lo, hi = self.q.end, self.rm.end
        if hi > lo:
            am, as_ = self._tamp
            rm, rs = self.rm.get(lo, hi), self.rs.get(lo, hi)
            if am > 0 and as_ > 0:
                q = am * rm - as_ * rs - np.float32(0.5 * (am * am - as_ * as_))
            else:
                q = rm - rs
            self.q.append(q)
        offs = self.offs
        t_min = self.q.base - int(offs[0])  # the first start whose windows are all held
        if self.score.end < t_min:  # (the buffers are trimmed each on its own)
            self.score.restart(t_min)
        t_lo, t_hi = self.score.end, self.q.end - int(offs[-1])
        if t_hi <= t_lo:
            return
        qa = self.q.a
        b = t_lo - self.q.base
        n = t_hi - t_lo
        o = [int(v) + b for v in offs]
        # Written in place, in the order of (q0 - q1 + q7) + |q2| + ... + |q6|.
        score = self.score.extend(n)
        np.subtract(qa[o[0] : o[0] + n], qa[o[1] : o[1] + n], out=score)
        score += qa[o[7] : o[7] + n]
        aq = np.abs(qa[o[2] : o[6] + n])  # |q| once for all five data windows
        for k in range(2, 7):
            score += aq[o[k] - o[2] : o[k] - o[2] + n]

    def refresh(self) -> None:
        """Bring the envelopes up to the running sums (for reading them from outside)."""
        self._update()

    def _update(self) -> None:
        fe, nb = self.fe, self.nb
        lo, hi = self.rm.end, fe.avail
        if lo < fe.cm.base + nb:  # history trimmed past us (long gap): restart the envelopes
            lo = fe.cm.base + nb
            self._restart_envelopes(lo)
        if hi > lo:
            # Window sums ending at each sample, turned by the mixer phase at the window's
            # first sample: the signal's phase there (see coherent); their size is the
            # envelope.
            # The difference of the running sums in complex128 (they grow for hours), the
            # window sum itself in complex64, as it is kept.
            a, b = lo - nb + 1, hi - nb + 1
            for csum, turn, dbuf, rbuf in (
                (fe.cm, fe.xm, self.dm, self.rm),
                (fe.cs, fe.xs, self.ds, self.rs),
            ):
                d = dbuf.extend(hi - lo)
                np.subtract(
                    csum.get(lo, hi), csum.get(lo - nb, hi - nb), out=d, casting="same_kind"
                )
                d *= turn.get(a, b)
                np.abs(d, out=rbuf.extend(hi - lo))
            keep = fe.cm.base + nb
            for buf in (self.rm, self.rs, self.dm, self.ds, self.q, self.score):
                buf.trim(keep)
        self._extend_timing()

    def _q(self, rm: F32, rs: F32) -> F32:
        """Soft values, positive = mark (threshold-corrected once amplitudes are known)."""
        am, as_ = self.amp_m, self.amp_s
        if am > 0 and as_ > 0:
            out: F32 = am * rm - as_ * rs - np.float32(0.5 * (am * am - as_ * as_))
            return out
        return rm - rs

    def run(self, limit: int, masked: bool) -> list[Frame]:
        """Read every frame that can be decided with data before `limit`.

        `masked`: hunt for start bits only where tones were seen recently (no detection yet).
        """
        if masked and self.trigger is None and self.period_n < 2 and self._quiet():
            return []
        self._update()
        nb = self.nb
        frames: list[Frame] = []
        while True:
            if self.trigger is None:
                if self.period_n >= 2 and self.last_start is not None:
                    # Back-to-back characters: look where the next one is due, trigger or not
                    # (a start bit that noise weakened must not send the hunt into the data).
                    self.trigger = round(self.last_start + self.period)
                    self._due = True
                else:
                    hit = self._hunt(limit, masked)
                    if hit is None:
                        return frames
                    self.trigger = hit
                    self._due = False
            trig = self.trigger
            if self._due:
                lo, hi = trig - nb // 2, trig + nb // 2
            else:
                lo, hi = trig - nb // 2, trig + (3 * nb) // 2
            lo = max(lo, self.floor, self.rm.base + 2, self.score.base)
            hi = max(hi, lo)
            need = hi + int(self.offs[-1]) + 1
            if need > limit:
                return frames
            frame = self._read(lo, hi, need)
            self.trigger = None
            if frame is None:  # idle mark where a character was due: the stream paused
                self.period_n = 0
                self.last_start = None
                self.scan = self.floor = max(lo, trig - nb // 2)
                continue
            frames.append(frame)
            if not masked and frame.valid and frame.snr >= LEARN_SNR and frame.leak <= LEARN_LEAK:
                self.learn(frame)  # here, not by the caller: the same for any block size
            self._next(frame.start, frame.valid)

    def _next(self, t0: int, valid: bool) -> None:
        """Where to look after a frame read at t0: on in the rhythm, or half a bit on."""
        nb = self.nb
        on_beat = (
            self.period_n >= 2
            and self.last_start is not None
            and abs(t0 - self.last_start - self.period) <= nb // 4
        )
        self.misses = 0 if valid else self.misses + 1
        if valid or (on_beat and self.misses < 2):
            self._rhythm(t0)
            self.scan = t0 + self.next_scan
            self.floor = t0 + self.next_floor
        else:
            # Start or stop bit wrong and not where the rhythm says: most likely a
            # misframe (a data bit taken for a start bit). Hunt again half a bit on.
            self.period_n = 0
            self.last_start = None
            self.scan = self.floor = t0 + nb // 2

    def _hunt(self, limit: int, masked: bool) -> int | None:
        """First position from `scan` whose bit window clearly reads as a start bit."""
        lo = max(self.scan, self.rm.base + 1)
        hi = limit - self.nb + 1  # windows [t, t + nb) must be complete
        if hi <= lo:
            return None
        # Looked at in growing pieces: the start bit is mostly within a bit or two, and
        # the test is per position, so the first hit is the same as over the whole span.
        piece = 256
        while lo < hi:
            end = min(hi, lo + piece)
            hit = self._hunt_in(lo, end, masked)
            if hit is not None:
                return hit
            lo, piece = end, 4 * piece
        self.scan = hi
        return None

    def _hunt_in(self, lo: int, hi: int, masked: bool) -> int | None:
        """`_hunt` over the starts [lo, hi)."""
        fe, nb = self.fe, self.nb
        if masked:
            # No tones lately anywhere in the span (silence, noise): no hit can pass.
            h0 = max((lo + nb - 1) // HOP, fe.p_recent.base)
            if not fe.p_recent.get(h0, (hi + nb - 2) // HOP + 1).any():
                return None
        base = self.rm.base
        a, b = lo + nb - 1 - base, hi + nb - 1 - base  # window-end indices
        rm = self.rm.a[a:b]
        rs = self.rs.a[a:b]
        hops = (np.arange(lo + nb - 1, hi + nb - 1) // HOP) - fe.p_noise.base
        noise = fe.p_noise.a[hops] * nb
        q = self._q(rm, rs)
        if self.amp_m > 0 and self.amp_s > 0:
            llr = q * (2.0 / noise)
        else:
            llr = q * (2.0 * np.maximum(rm, rs) / noise)
        # A start bit: the space tone clearly dominates a bit window, well above noise.
        cond = (llr < -TRIGGER_LLR) & (rs * rs > TRIGGER_SNR * noise)
        if masked:
            cond &= fe.p_recent.a[hops + (fe.p_noise.base - fe.p_recent.base)]
        hit = np.flatnonzero(cond)
        return lo + int(hit[0]) if len(hit) else None

    def _read(self, lo: int, hi: int, need: int) -> Frame | None:
        """The most likely frame starting in [lo, hi]; None if idle mark is likelier (due only)."""
        fe, nb = self.fe, self.nb
        width = hi + 1 - lo
        sb = self.score.base
        score = self.score.a[lo - sb : hi + 1 - sb]
        am, as_ = self.amp_m, self.amp_s
        known = am > 0 and as_ > 0
        if self.period_n >= 2 and self.last_start is not None:
            # Back-to-back characters: the next start is one period on, to a sample or two.
            # Weigh that against the bits (log-likelihood units) so a character with few
            # transitions (LTRS, all mark) is not pulled off by noise.
            noise = float(fe.p_noise.a[lo // HOP - fe.p_noise.base]) * nb
            if noise > 0:
                if known:
                    scale = 1.0 / noise  # half of _scale's
                else:
                    mid = lo + width // 2 + self.offs[1:8] - self.rm.base
                    level = float(np.maximum(self.rm.a[mid], self.rs.a[mid]).sum()) / 7.0
                    scale = level / noise
                if scale > 0:
                    off = (lo - self.last_start - self.period) + self._ar[:width]
                    score = score * scale + RHYTHM_NATS * np.exp(-0.08 * off * off)
        best = int(score.argmax())
        idx = self.offs + (lo + best - self.rm.base)
        rm: F32 = self.rm.a.take(idx)
        rs: F32 = self.rs.a.take(idx)
        qb = self._q(rm, rs)
        ql = qb.tolist()  # 8 values: plain floats are faster
        if self._due:
            frame_ll = ql[0] - ql[1] + abs(ql[2]) + abs(ql[3]) + abs(ql[4]) + abs(ql[5])
            frame_ll += abs(ql[6]) + ql[7]
            if sum(ql) >= frame_ll:
                return None  # all mark reads at least as well as a frame: no character here
        return self._frame(lo + best, qb, ql=ql, rm=rm, rs=rs, need=need, idx=idx)

    def rate_fit(self, anchors: list[int], search: int, limit: int) -> F64:
        """How much tone each anchor's frame puts into this rate's bit grid, per sample.

        For each anchor (a character start found at either rate) the 8 bit windows of a
        frame at this rate (idle mark, start space, 5 data bits on whichever tone is
        stronger, stop mark) are laid from every start within `search` samples of it, and
        the best sum of on-tone envelopes is divided by the 8 bit times it spans: the mean
        tone amplitude the grid captures. On the right grid every window sits on one bit
        and captures it all; on the other rate's grid the bit edges drift 2 ms per bit, so
        a window that straddles a mark/space edge (one k bits after the start edge lands
        2k ms off) loses part of both tones. The grids are fitted to the observed edges,
        and no character lines both up. NaN where the data needed are not there (before
        `limit` and still in history), so the answer does not depend on how far input has
        come.
        """
        self._update()
        base, nb = self.rm.base, self.nb
        out = np.full(len(anchors), np.nan)
        span = np.arange(-search, search + 1, dtype=np.int64)
        end = min(self.rm.end, limit)
        for j, a in enumerate(anchors):
            if a - search - 1 - nb < base or a + search + int(self.offs[-1]) >= end:
                continue
            idx = (a + span - base)[:, None] + self.offs[None, :]
            m = self.rm.a[idx]
            s = self.rs.a[idx]
            on = m[:, 0] + s[:, 1] + np.maximum(m[:, 2:7], s[:, 2:7]).sum(axis=1) + m[:, 7]
            out[j] = float(on.max()) / (8 * self.nbf)
        return out

    def _frame(
        self, t0: int, q: F32, *, ql: list[float], rm: F32, rs: F32, need: int, idx: I64
    ) -> Frame:
        ml, sl = rm.tolist(), rs.tolist()  # 8 values: plain floats are faster
        known = self.amp_m > 0 and self.amp_s > 0
        half_m, half_s = 0.5 * self.amp_m, 0.5 * self.amp_s
        code = n_mark = absent = 0
        env_m = env_s = on_sum = off_sum = 0.0
        min_on = math.inf
        for i in range(1, 8):  # start, 5 data, stop
            m, v = ml[i], sl[i]
            if ql[i] > 0:
                n_mark += 1
                env_m += m
                on, off = m * m, v * v
                absent += known and m < half_m
                if 2 <= i <= 6:
                    code |= 1 << (i - 2)
            else:
                env_s += v
                on, off = v * v, m * m
                absent += known and v < half_s
            on_sum += on
            off_sum += off
            min_on = min(min_on, on)
        ref_m = env_m / n_mark if n_mark else 0.0
        noise = float(self.fe.p_noise.a[t0 // HOP - self.fe.p_noise.base]) * self.nb
        # Both tones' windows side by side, as the coherent product takes them.
        both = np.empty((2, 8, 1), np.complex64)
        dm, ds = both[0, :, 0], both[1, :, 0]
        if self.dm.base == self.rm.base == self.ds.base:  # (always: trimmed together)
            self.dm.a.take(idx, out=dm)
            self.ds.a.take(idx, out=ds)
        else:
            dm[:], ds[:] = self._windows(t0)
        code_ll: F64 | None = None
        chain_z: float | None = None
        if self.coherent_ready:
            code_ll, zm, zs = self._coherent_both(both, noise)
            chain_z = float(zm[code] + zs[code])
        llr: F32 | None = None
        if code_ll is None:
            llr = q[2:7] * np.float32(self._scale(noise, (env_m + env_s) / 7.0))
        return Frame(
            start=t0,
            end=t0 + self.frame_len,
            decided=need,
            code=code,
            # A start bit must hold space-tone energy like the frame's other bits (a frame
            # begun in the silence or noise before a carrier is not a character).
            start_ok=not (ql[1] > 0)  # the start bit read as space (as in the loop above)
            and sl[1] ** 2 >= START_REL * on_sum / 7.0
            and (sl[1] >= 0.5 * self.amp_s if self.amp_s > 0 else sl[1] ** 2 > TRIGGER_SNR * noise)
            # The bit before the start bit is carrier too (idle mark or a stop bit): a frame
            # begun in the noise before a carrier that starts with a short lead-in is not.
            and max(ml[0], sl[0]) >= 0.5 * (self.amp_m if self.amp_m > 0 else ref_m),
            stop_ok=ql[7] > 0,
            snr=on_sum / 7.0 / noise if noise > 0 else 0.0,
            min_snr=min_on / noise if noise > 0 else 0.0,
            leak=off_sum / on_sum if on_sum > 0 else 1.0,
            llr=llr,
            code_ll=code_ll,
            dm=dm,
            ds=ds,
            chain_z=chain_z,
            absent=absent,
            n_mark=n_mark,
            mark_env=env_m / n_mark if n_mark else 0.0,
            space_env=env_s / (7 - n_mark) if n_mark < 7 else 0.0,
        )

    def _windows(self, t0: int) -> tuple[C64, C64]:
        """Each tone's sum over the 8 bit windows of a frame at t0, turned by its mixer
        phase at the window start: the signal's phase there, whatever the mixer did."""
        ends = t0 + self.offs
        dm: C64 = self.dm.take(ends)
        ds: C64 = self.ds.take(ends)
        return dm, ds

    @property
    def coherent_ready(self) -> bool:
        """Both tone frequencies learnt from the phase of enough bits, and the signal
        found to hold its phase (a frequency off by a few hertz turns the phase of a
        frame's last windows by radians: read coherently then, a frame reads worse)."""
        return min(self._pairs_n) >= PAIRS_MIN and self.coherence >= COHERENCE_MIN

    def _chains(self) -> C128:
        """Per code, the weights that add up its mark windows ([0]) and its space windows
        ([1]) as one signal each: e^{-j theta}, theta the phase the code
        predicts at each window relative to the first (continuous phase at the learnt tone
        frequencies). Recomputed only when those frequencies moved enough to matter."""
        wm, ws = self._cached_w
        span = 8.0 * self.nbf
        # 0.05 rad at the frame's end costs at most 0.1 % of its coherent sum.
        if not (abs(wm - self.w_m) * span < 0.05 and abs(ws - self.w_s) * span < 0.05):
            # Only the distinct (samples of mark, samples of space) pairs are turned, into
            # the first entries of _turns (its last stays 0), and laid out from there.
            turns = self._turns
            np.exp(-1j * (self.w_m * self._uniq_m + self.w_s * self._uniq_s), out=turns[:-1])
            self._chain = turns.take(self._chain_map)
            self._cached_w = (self.w_m, self.w_s)
        return self._chain

    def coherent(self, dm: C64, ds: C64, noise: float) -> F64:
        """Log-likelihood of each code for a frame read as one continuous-phase signal.

        A TTY's FSK keeps its phase from bit to bit, so under a given code the phase at
        every window follows from the tone frequencies and the code's own bits: the mark
        windows add up coherently, and so do the space windows (the phase between the two
        tones depends on where the bit edges fall within a sample, so it is left free).
        A wrong bit sends the phase of every later window off by the tone spacing times a
        bit (0.8 turns at 45.45 baud), which is what makes this far stronger than deciding
        each bit on its own. GLRT over the two free phases, in nats.
        """
        return self._coherent(dm, ds, noise)[0]

    def _coherent(self, dm: C64, ds: C64, noise: float) -> tuple[F64, F64, F64]:
        """`coherent`, and the sizes of each code's mark and space sums."""
        return self._coherent_both(np.stack((dm, ds))[:, :, None], noise)

    def _coherent_both(self, both: C64, noise: float) -> tuple[F64, F64, F64]:
        """`_coherent` with the windows as one (2, 8, 1) array, mark then space."""
        # Both tones in one stacked product (the same dot products as one by one).
        z = np.abs(self._chains() @ both)
        zm: F64 = z[0, :, 0]
        zs: F64 = z[1, :, 0]
        gm, gs = self.amp_m, self.amp_s
        if noise <= 0 or gm <= 0 or gs <= 0:
            return np.zeros(32), zm, zs
        k = 1.0 / noise
        # (2 gm zm + 2 gs zs - n_mark (gm^2 - gs^2) - 8 gs^2) / noise, in three passes.
        out: F64 = zm * (2.0 * gm * k)
        out += zs * (2.0 * gs * k)
        out -= self._n_mark * ((gm * gm - gs * gs) * k) + 8.0 * gs * gs * k
        return out, zm, zs

    def learn_chain(self, frame: Frame) -> None:
        """Refine the tone frequencies from the phase steps between like bits of a frame
        judged to be signal, and how coherent the signal is."""
        code = frame.code
        mark = self._code_mark[code]
        dm, ds = frame.dm.tolist(), frame.ds.tolist()
        d = [dm[i] if mark[i] else ds[i] for i in range(8)]
        sums = [0j, 0j]
        counts = [0, 0]
        for u, tone in self._like[code]:
            sums[tone] += d[u + 1] * d[u].conjugate() * self._ref_step[tone][u]
            counts[tone] += 1
        for tone in (0, 1):
            if counts[tone]:
                self._pair[tone] = PAIR_MEMORY * self._pair[tone] + sums[tone]
                self._pairs_n[tone] += counts[tone]
        nb = float(self.nb)
        self.w_m = self._w_ref[0] + math.atan2(self._pair[0].imag, self._pair[0].real) / nb
        self.w_s = self._w_ref[1] + math.atan2(self._pair[1].imag, self._pair[1].real) / nb
        z = frame.chain_z
        if z is None:
            chain = self._chains()
            z = abs(complex(chain[0, code] @ frame.dm)) + abs(complex(chain[1, code] @ frame.ds))
        total = sum(map(abs, d))
        if total > 0:
            self._coh_n += 1
            rate = max(0.15, 1.0 / self._coh_n)  # a plain mean over the first frames
            self.coherence += rate * (z / total - self.coherence)

    def learn(self, frame: Frame) -> None:
        """Update the threshold-correction amplitudes from a frame judged to be signal."""
        self.learn_chain(frame)
        beta = 0.15
        if frame.n_mark:
            v = frame.mark_env
            self.amp_m = v if self.amp_m <= 0 else (1 - beta) * self.amp_m + beta * v
        if frame.n_mark < 7:
            v = frame.space_env
            self.amp_s = v if self.amp_s <= 0 else (1 - beta) * self.amp_s + beta * v
