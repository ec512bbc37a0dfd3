"""5-tone selective calling (CCIR, ZVEI1, EEA): a streaming decoder and an encoder.

A selcall is a run of single tones sent back to back, one per digit, each of the
standard's tone length (CCIR 100 ms, ZVEI1 70 ms, EEA 40 ms); a digit equal to the one
before it is sent as the repeat tone (E) instead, so that every tone differs from the last.
The tables give the tones of 0-9 and A-F in that order; E is the repeat tone in all three.

Pure numpy, causal, any rate from MIN_RATE; any split of the input into blocks gives the
same events (every figure is computed on hops counted from the stream start).

Detection: the input is cut in hops of HOP_S; each hop's sums under the standard's 16
mixers come from one matrix product and a DFT bin per tone is the sum over the hops of a
window (20 ms, 50 Hz bins; the closest tones of CCIR and EEA are 61 Hz apart). A hop is a
candidate for tone k when, in its window:

- tone k is the strongest of the 16 by `min_margin_db`;
- it is at least `min_level_dbfs` and stands `min_snr_db` over the power per bin of the
  rest of the window's energy, and holds `min_tone_fraction` of that energy.

A tone is a run of candidate hops for one k (dropouts up to DROPOUT_HOPS bridged); it
counts when it lasts between `min_length` and `max_length` of the standard's tone length
(the first tone may be held up to `max_first_s`: some senders stretch it to wake scanning
radios) and its frequency, measured from the phase advance of its bin, is within
`max_offset`. Tones with gaps under `max_gap` of a tone length form one call; a call of at
least `min_digits` tones is given when the next gap passes or at flush. A run of the same
tone twice in a call is not a selcall (the sender would have sent the repeat tone).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from gateway.dsp.bins import WindowedBins, raised_cosine_edges

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
C128 = npt.NDArray[np.complex128]

StandardName = Literal["ccir", "zvei1", "eea"]
SYMBOLS: Final = "0123456789ABCDEF"
REPEAT: Final = "E"


@dataclass(frozen=True, slots=True)
class Standard:
    name: StandardName
    tones_hz: tuple[float, ...]  # of SYMBOLS, in order
    tone_s: float


# fmt: off
STANDARDS: Final[dict[str, Standard]] = {
    s.name: s
    for s in (
        Standard(
            "ccir",
            # 0     1     2     3     4     5     6     7     8     9
            (1981, 1124, 1197, 1275, 1358, 1446, 1540, 1640, 1747, 1860,
             2400, 930, 2247, 991, 2110, 1055),  # A-F
            0.100,
        ),
        Standard(
            "zvei1",
            (2400, 1060, 1160, 1270, 1400, 1530, 1670, 1830, 2000, 2200,
             2800, 810, 970, 885, 2600, 680),
            0.070,
        ),
        Standard(
            "eea",
            (1981, 1124, 1197, 1275, 1358, 1446, 1540, 1640, 1747, 1860,
             1055, 930, 2400, 991, 2110, 2247),
            0.040,
        ),
    )
}
"""The tone tables (Hz) of 0-9 and A-F, E the repeat tone, and each standard's tone length."""
# fmt: on


def _check_standard(standard: str) -> None:
    if standard not in STANDARDS:
        known = ", ".join(STANDARDS)
        raise ValueError(f"unknown selcall standard {standard!r} (one of {known})")


SUB_BINS: Final = (-0.012, 0.0, 0.012)
"""Each tone is looked for in three bins, at these offsets: a sender 1.5 % off (42 Hz at
2800 Hz, most of a 50 Hz bin) still lands within 0.3 bins of one of them."""
HOP_S: Final = 0.005
WINDOW_HOPS: Final = 4  # 20 ms windows: 50 Hz bins
DROPOUT_HOPS: Final = 2  # a candidate lost for up to 10 ms is the same tone
MIN_RATE: Final = 6000


@dataclass(frozen=True, slots=True)
class SelcallSettings:
    """What a selcall receiver accepts (the defaults suit the three standards)."""

    min_length: float = 0.5  # of the standard's tone length
    max_length: float = 1.6
    max_first_s: float = 1.2  # the first tone, stretched to wake scanning radios
    max_gap: float = 0.6  # of a tone length, between two tones of one call
    max_offset: float = 0.02  # of the nominal frequency (neighbours are 6 % apart and more)
    # Tuned on 16 minutes of espeak-ng speech (bench seeds 17 and 5): no call of 4 or 5
    # tones. A 4 dB margin let a voice's harmonics make one (EEA "BDBDB", 930/991 Hz);
    # stricter still (0.25, 6 dB, 9 dB) costs 2 dB in noise.
    min_tone_fraction: float = 0.12  # of the window's energy in the tone
    min_margin_db: float = 4.5  # over the strongest other tone of the table
    min_snr_db: float = 5.0  # over the power per bin of the rest
    min_level_dbfs: float = -45.0  # as a sine of that peak
    min_digits: int = 5

    def __post_init__(self) -> None:
        for name in ("min_length", "max_length", "max_first_s", "max_gap", "min_margin_db"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if not self.min_length < 1.0 < self.max_length:
            raise ValueError("min_length must be under 1 and max_length over 1 (tone lengths)")
        if not 0.0 < self.min_tone_fraction <= 1.0:
            raise ValueError("min_tone_fraction must be in (0, 1]")
        if not 0.0 < self.max_offset < 0.03:
            raise ValueError("max_offset must be in (0, 0.03): the closest tones are 6 % apart")
        if isinstance(self.min_digits, bool) or not 1 <= self.min_digits <= 32:
            raise ValueError("min_digits must be an integer from 1 to 32")


@dataclass(frozen=True, slots=True)
class SelcallTone:
    """One tone of a call, as heard: `symbol` is the table's (E for a repeat)."""

    start: float
    end: float
    symbol: str
    hz: float
    level_dbfs: float


@dataclass(frozen=True, slots=True)
class SelcallCall:
    """A call: its digits with repeats resolved (E becomes the digit before it)."""

    start: float
    end: float
    standard: StandardName
    digits: str
    tones: str  # as sent, E included


@dataclass(slots=True)
class _Run:
    tone: int
    first: int  # hop indices of the first and latest candidate hops
    last: int
    hops: list[npt.NDArray[np.int64]] = field(default_factory=list)
    z: list[C128] = field(default_factory=list)
    p: list[F64] = field(default_factory=list)
    bins: list[npt.NDArray[np.int64]] = field(default_factory=list)


class SelcallDecoder:
    """Streaming 5-tone decoder: feed() mono float blocks, flush() at the end.

    `standards`: one name or several; several share one analysis of the union of their
    tones (CCIR and EEA have the same 16 frequencies), each is then read on its own."""

    def __init__(
        self,
        sample_rate: int,
        standards: str | Sequence[str] = "ccir",
        settings: SelcallSettings | None = None,
    ) -> None:
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int):
            raise ValueError(f"sample_rate must be an integer, got {sample_rate!r}")
        if sample_rate < MIN_RATE:
            raise ValueError(f"sample_rate must be at least {MIN_RATE} Hz, got {sample_rate}")
        names = [standards] if isinstance(standards, str) else list(dict.fromkeys(standards))
        if not names:
            raise ValueError("at least one selcall standard is needed")
        for name in names:
            _check_standard(name)
        self.rate = sample_rate
        self.settings = settings or SelcallSettings()
        hop = round(HOP_S * sample_rate)

        def near(hz: float) -> list[float]:
            return [float(np.rint(hz * (1.0 + d))) for d in SUB_BINS]

        union = sorted({f for name in names for hz in STANDARDS[name].tones_hz for f in near(hz)})
        self._bins = WindowedBins(sample_rate, hop, np.array(union, np.float64), WINDOW_HOPS)
        s = self.settings
        self._window = WINDOW_HOPS * hop
        self._snr = 10.0 ** (s.min_snr_db / 10.0)
        self._margin = 10.0 ** (s.min_margin_db / 10.0)
        self._min_power = (10.0 ** (s.min_level_dbfs / 20.0) * self._window / 2.0) ** 2
        self._receivers = [
            _Receiver(
                STANDARDS[name],
                np.array([[union.index(f) for f in near(hz)] for hz in STANDARDS[name].tones_hz]),
                self._bins,
                self.settings,
                np.array(union, np.float64),
            )
            for name in names
        ]
        # Each standard's table as columns of the shared bins: (standards, 16, sub-bins).
        self._table_columns = np.stack([r.columns for r in self._receivers])

    def feed(self, samples: npt.ArrayLike) -> list[SelcallTone | SelcallCall]:
        z, energy = self._bins.feed(samples)
        if not len(z):
            return []
        power = z.real * z.real + z.imag * z.imag
        tone, column = self._candidates(power, energy)
        events: list[SelcallTone | SelcallCall] = []
        for r, receiver in enumerate(self._receivers):
            events.extend(receiver.decide(tone[:, r], column[:, r], z, power))
        return events

    def _candidates(
        self, power: F64, e: F64
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Per hop and standard, the index of the table's tone the window holds (or -1),
        and the bin that holds it most."""
        sub = power[:, self._table_columns]  # (hops, standards, 16, sub-bins)
        strongest = np.argmax(sub, axis=3)
        p = np.max(sub, axis=3)  # each tone's power: its strongest bin
        best = np.argmax(p, axis=2)
        n_std = self._table_columns.shape[0]
        column = self._table_columns[
            np.arange(n_std)[None, :],
            best,
            np.take_along_axis(strongest, best[:, :, None], 2)[:, :, 0],
        ]
        ranked = np.sort(p, axis=2)
        p_best, p_second = ranked[:, :, -1], ranked[:, :, -2]
        tone_e = p_best * (2.0 / self._window)  # the tone's energy in the window
        e = e[:, None]
        rest = np.maximum(e - tone_e, 1e-20)
        ok = (
            (p_best >= self._min_power)
            & (tone_e >= self.settings.min_tone_fraction * e)
            & (p_best >= self._snr * rest)
            & (p_best >= self._margin * p_second)
        )
        return np.where(ok, best, -1), column

    def flush(self) -> list[SelcallTone | SelcallCall]:
        """End of stream: a tone in progress ends here, and the call with it."""
        events: list[SelcallTone | SelcallCall] = []
        for receiver in self._receivers:
            events.extend(receiver.flush())
        return events


class _Receiver:
    """One standard's reading of the shared bins: its candidate tones, runs and calls."""

    def __init__(
        self,
        standard: Standard,
        columns: npt.NDArray[np.int64],
        bins: WindowedBins,
        s: SelcallSettings,
        bin_hz: F64,
    ) -> None:
        self.standard = standard
        self.settings = s
        self.columns = columns  # (16, sub-bins): the bins of each tone of the table
        self._bin_hz = bin_hz
        self._bins = bins
        self._freqs = np.array(standard.tones_hz, dtype=np.float64)
        self.rate = bins.rate
        self._hop = bins.hop
        self._window = WINDOW_HOPS * self._hop
        hop_s = self._hop / self.rate
        tone_hops = standard.tone_s / hop_s
        self._min_hops = max(2, math.floor(s.min_length * tone_hops))
        self._max_hops = math.ceil(s.max_length * tone_hops)
        self._max_first_hops = max(self._max_hops, math.ceil(s.max_first_s / hop_s))
        self._gap_hops = max(DROPOUT_HOPS + 1, math.ceil(s.max_gap * tone_hops))
        self._hops_done = 0  # hop k's window is chunks k .. k + WINDOW_HOPS - 1
        self._run: _Run | None = None
        self._call: list[SelcallTone] = []
        self._call_last = 0  # hop of the call's last tone's last candidate hop
        self._broken = False  # the call in progress holds a tone that is no selcall's

    def flush(self) -> list[SelcallTone | SelcallCall]:
        events: list[SelcallTone | SelcallCall] = []
        if self._run is not None:
            events.extend(self._end_run())
        events.extend(self._end_call())
        return events

    # ------------------------------------------------------------------ analysis
    def decide(
        self, tone: npt.NDArray[np.int64], column: npt.NDArray[np.int64], z: C128, power: F64
    ) -> list[SelcallTone | SelcallCall]:
        """This standard's candidate tone per hop (-1: none), and the shared bins."""
        events: list[SelcallTone | SelcallCall] = []
        first_hop = self._hops_done
        self._hops_done += len(tone)
        if tone.max() < 0 and self._run is None and not self._call:
            return events  # nothing heard, nothing pending: the usual case
        heard = np.flatnonzero(tone >= 0)
        if len(heard):
            cut = np.flatnonzero((np.diff(tone[heard]) != 0) | (np.diff(heard) > DROPOUT_HOPS + 1))
            for seg in np.split(heard, cut + 1):
                k = int(tone[seg[0]])
                cols = column[seg]
                events.extend(self._heard(first_hop + seg, k, z[seg, cols], power[seg, cols], cols))
        if self._run is not None or self._call:
            events.extend(self._quiet_until(self._hops_done - 1))
        return events

    def _heard(
        self,
        hops: npt.NDArray[np.int64],
        tone: int,
        z: C128,
        power: F64,
        bins: npt.NDArray[np.int64],
    ) -> list[SelcallTone | SelcallCall]:
        """Hops (consecutive but for dropouts) at which `tone` was the candidate; its bins."""
        events: list[SelcallTone | SelcallCall] = []
        run = self._run
        first = int(hops[0])
        if run is None or run.tone != tone or first - run.last > DROPOUT_HOPS + 1:
            events.extend(self._quiet_until(first - 1))
            if self._run is not None:  # another tone straight after: this one ends here
                events.extend(self._end_run())
            run = self._run = _Run(tone=tone, first=first, last=first)
        run.last = int(hops[-1])
        run.hops.append(hops)
        run.z.append(z)
        run.p.append(power)
        run.bins.append(bins)
        return events

    def _quiet_until(self, hop: int) -> list[SelcallTone | SelcallCall]:
        events: list[SelcallTone | SelcallCall] = []
        if self._run is not None and hop - self._run.last > DROPOUT_HOPS + 1:
            events.extend(self._end_run())
        if self._run is None and self._call and hop - self._call_last >= self._gap_hops:
            events.extend(self._end_call())
        return events

    def _end_run(self) -> list[SelcallTone | SelcallCall]:
        run, self._run = self._run, None
        if run is None:
            return []
        events: list[SelcallTone | SelcallCall] = []
        if self._call and run.first - self._call_last >= self._gap_hops:
            events.extend(self._end_call())
        if run.last - run.first + 2 < self._min_hops:
            return events  # a blip (noise, or the edge between two tones): not a tone
        tone = self._tone(run, first_of_call=not self._call)
        if tone is None:
            # Not a tone of a call (too short, too long, off frequency): what came before
            # it is a call only if it was one already.
            events.extend(self._end_call())
            return events
        if self._call and self._call[-1].symbol == tone.symbol:
            self._broken = True  # a selcall sender never sends one tone twice running
        self._call.append(tone)
        self._call_last = run.last
        return events

    def _tone(self, run: _Run, *, first_of_call: bool) -> SelcallTone | None:
        # A window is a candidate while the tone fills most of it: about as many hops as the
        # tone lasts, one fewer where the neighbour is another tone.
        span = run.last - run.first + 2
        longest = self._max_first_hops if first_of_call else self._max_hops
        if not self._min_hops <= span <= longest:
            return None
        nominal = float(self._freqs[run.tone])
        hops, z, bins = np.concatenate(run.hops), np.concatenate(run.z), np.concatenate(run.bins)
        hz = self._bins.measure_in_main_bin(hops, z, bins, self._bin_hz)
        if abs(hz / nominal - 1.0) > self.settings.max_offset:
            return None
        amp = 2.0 * math.sqrt(float(np.median(np.concatenate(run.p)))) / self._window
        start = (run.first + WINDOW_HOPS / 2) * self._hop / self.rate
        end = (run.last + 1 + WINDOW_HOPS / 2) * self._hop / self.rate
        return SelcallTone(
            start=round(start, 4),
            end=round(end, 4),
            symbol=SYMBOLS[run.tone],
            hz=round(hz, 1),
            level_dbfs=round(20.0 * math.log10(max(amp, 1e-9)), 1),
        )

    def _end_call(self) -> list[SelcallTone | SelcallCall]:
        tones, self._call = self._call, []
        broken, self._broken = self._broken, False
        if broken or len(tones) < self.settings.min_digits:
            return []
        symbols = "".join(t.symbol for t in tones)
        if symbols[0] == REPEAT:
            return []  # a repeat of nothing
        digits = [symbols[0]]
        for symbol in symbols[1:]:
            digits.append(digits[-1] if symbol == REPEAT else symbol)
        call = SelcallCall(
            start=tones[0].start,
            end=tones[-1].end,
            standard=self.standard.name,
            digits="".join(digits),
            tones=symbols,
        )
        return [*tones, call]


def selcall_tones(digits: str) -> str:
    """The tones a sender sends for `digits`: a digit equal to the one before is E."""
    bad = [d for d in digits.upper() if d not in SYMBOLS or d == REPEAT]
    if bad:
        raise ValueError(f"not selcall digits: {''.join(bad)!r} (0-9, A-D, F; E is the repeat)")
    out: list[str] = []
    for i, d in enumerate(digits.upper()):
        out.append(REPEAT if i and d == digits.upper()[i - 1] and out[-1] != REPEAT else d)
    return "".join(out)


def selcall_signal(
    digits: str,
    sample_rate: int,
    *,
    standard: str = "ccir",
    level_dbfs: float = -10.0,
    first_tone_s: float | None = None,
    tone_s: float | None = None,
    offset: float = 0.0,
) -> F32:
    """A call as audio: one tone per digit (repeats as E), back to back, phase-continuous.

    `first_tone_s` stretches the first tone; `tone_s` overrides the standard's length;
    `offset` is a relative frequency error of every tone. 2 ms raised-cosine ends."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate < MIN_RATE:
        raise ValueError(f"sample_rate must be an integer >= {MIN_RATE}, got {sample_rate!r}")
    _check_standard(standard)
    std = STANDARDS[standard]
    length = std.tone_s if tone_s is None else tone_s
    if not 0.0 < length <= 2.0 or (first_tone_s is not None and not 0.0 < first_tone_s <= 5.0):
        raise ValueError("tone lengths must be in (0, 2] s (the first up to 5 s)")
    tones = selcall_tones(digits)
    # Tone edges on the absolute sample axis, so a call of many tones does not drift.
    lengths = [first_tone_s if i == 0 and first_tone_s else length for i in range(len(tones))]
    edges = np.rint(np.concatenate(([0.0], np.cumsum(lengths))) * sample_rate).astype(np.int64)
    hz = np.repeat([std.tones_hz[SYMBOLS.index(t)] * (1.0 + offset) for t in tones], np.diff(edges))
    phase = 2.0 * np.pi * np.cumsum(hz) / sample_rate
    out: F64 = 10.0 ** (level_dbfs / 20.0) * np.sin(phase)
    return raised_cosine_edges(out, sample_rate).astype(np.float32)
