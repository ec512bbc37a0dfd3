"""Two-tone sequential paging (Motorola Quick Call II and alike): a streaming decoder of the
pages configured, and an encoder.

A page is tone A then tone B with no gap, 1 s and 3 s in Quick Call II ("1/3" timing); an
all-call is one long tone (8 s). Stacked pages come about a second apart. Pagers are set
up with their tones in Hz; so is this decoder: it listens for the configured tones only.

Pure numpy, causal; any split of the input into blocks gives the same events.

Detection: hops of HOP_S, DFT bins over a window of WINDOW_HOPS hops (100 ms: 10 Hz bins;
paging tones can be 2.7 % apart, 9 Hz at 320 Hz, and a neighbour 0.9 bins off is 17 dB
down). Each configured tone has bins across its tolerance, at most BIN_STEP_HZ apart, so
that a sender off by the tolerance is still in one. A hop is a candidate for the tone of
its strongest bin when that bin holds `min_tone_fraction` of the window's energy and
stands `min_snr_db` over the power per bin of the rest. A run of
candidate hops for one tone (dropouts up to DROPOUT_HOPS bridged) is a tone, its
frequency measured from the phase advance of its bin; it must be within `tolerance` of
the configured frequency. A page is heard when its A tone lasted at least `min_length` of
its configured length (and at most `max_a_length` of it), and its B tone, starting within
MAX_GAP_S of A's end, lasted at least `min_length` of B's. A long tone is heard once it
has lasted `min_length` of its length, without waiting for it to end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from gateway.dsp.bins import WindowedBins, raised_cosine_edges

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
C128 = npt.NDArray[np.complex128]

HOP_S: Final = 0.025
WINDOW_HOPS: Final = 4  # 100 ms
BIN_STEP_HZ: Final = 6.0
DROPOUT_HOPS: Final = 4  # a fade of up to 100 ms is the same tone
MAX_GAP_S: Final = 0.3  # from A's end to B's start (Quick Call II sends no gap)
MIN_RATE: Final = 6000
MIN_HZ: Final = 200.0
MAX_HZ: Final = 3000.0


def default_a_s(b_hz: float | None) -> float:
    """Tone A's length when none is given: 1 s before a B tone, 8 s as a long tone."""
    return 1.0 if b_hz is not None else 8.0


@dataclass(frozen=True, slots=True)
class Page:
    """A page to listen for: tone A then tone B; b_hz None is a long tone (all-call)."""

    name: str
    a_hz: float
    b_hz: float | None = None
    a_s: float = 1.0
    b_s: float = 3.0

    def __post_init__(self) -> None:
        for what, hz in (("a_hz", self.a_hz), ("b_hz", self.b_hz)):
            if hz is not None and not MIN_HZ <= hz <= MAX_HZ:
                raise ValueError(f"page {self.name!r}: {what} must be {MIN_HZ:g}-{MAX_HZ:g} Hz")
        if not 0.1 <= self.a_s <= 30.0 or not 0.1 <= self.b_s <= 30.0:
            raise ValueError(f"page {self.name!r}: tone lengths must be 0.1-30 s")
        if self.b_hz is not None and abs(self.b_hz / self.a_hz - 1.0) < 0.01:
            raise ValueError(f"page {self.name!r}: A and B must differ by 1 % at least")

    @classmethod
    def long_tone(cls, name: str, hz: float, seconds: float = 8.0) -> Page:
        return cls(name=name, a_hz=hz, b_hz=None, a_s=seconds)


@dataclass(frozen=True, slots=True)
class TwoToneSettings:
    tolerance: float = 0.015  # of the configured frequency (pagers: 1-2 %)
    min_length: float = 0.75  # of a tone's configured length
    max_a_length: float = 1.6  # A held longer is not this page's A
    min_tone_fraction: float = 0.1
    min_snr_db: float = 10.0
    min_level_dbfs: float = -45.0

    def __post_init__(self) -> None:
        if not 0.002 <= self.tolerance <= 0.05:
            raise ValueError("tolerance must be 0.2-5 % (as a fraction: 0.002-0.05)")
        if not 0.2 <= self.min_length < 1.0 < self.max_a_length:
            raise ValueError("min_length must be 0.2 to under 1, max_a_length over 1")
        if not 0.0 < self.min_tone_fraction <= 1.0:
            raise ValueError("min_tone_fraction must be in (0, 1]")


@dataclass(frozen=True, slots=True)
class HeardTone:
    """A tone as heard: its start and end (stream seconds) and measured frequency."""

    start: float
    end: float
    hz: float
    level_dbfs: float


@dataclass(frozen=True, slots=True)
class PageDetected:
    """A configured page heard: tones as measured, their lengths."""

    start: float
    end: float
    name: str
    a_hz: float
    b_hz: float | None
    a_s: float
    b_s: float | None


@dataclass(slots=True)
class _Run:
    tone: int
    first: int
    last: int
    hops: list[npt.NDArray[np.int64]] = field(default_factory=list)
    z: list[C128] = field(default_factory=list)
    p: list[F64] = field(default_factory=list)
    bins: list[npt.NDArray[np.int64]] = field(default_factory=list)
    long_told: set[str] = field(default_factory=set)  # long tones already reported


class TwoToneDecoder:
    """Streaming decoder of the configured pages: feed() mono float blocks, flush() at the end."""

    def __init__(
        self, sample_rate: int, pages: list[Page], settings: TwoToneSettings | None = None
    ) -> None:
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int):
            raise ValueError(f"sample_rate must be an integer, got {sample_rate!r}")
        if sample_rate < MIN_RATE:
            raise ValueError(f"sample_rate must be at least {MIN_RATE} Hz, got {sample_rate}")
        if not pages:
            raise ValueError("no pages to listen for")
        names = [p.name for p in pages]
        if len(set(names)) != len(names):
            raise ValueError("two pages have the same name")
        self.rate = sample_rate
        self.pages = list(pages)
        self.settings = s = settings or TwoToneSettings()
        tones = sorted({round(f, 1) for p in pages for f in (p.a_hz, p.b_hz) if f is not None})
        self._tones = np.array(tones)
        self._hop = round(HOP_S * sample_rate)
        self._window = WINDOW_HOPS * self._hop
        # Bins across each tone's tolerance, in whole Hz (the bins count their phase
        # exactly); the frequency is measured from the phase, whichever bin holds it.
        wanted: set[float] = set()
        for hz in tones:
            span = s.tolerance * hz
            count = 1 + 2 * math.ceil(span / BIN_STEP_HZ)
            wanted.update(float(np.rint(f)) for f in np.linspace(hz - span, hz + span, count))
        self._bin_hz = np.array(sorted(wanted))
        # Where two tones' tolerances overlap (339.6 and 349.0 Hz at 1.5 %), a bin is the
        # nearer tone's: a sender 1 % high on 339.6 Hz is that tone, not 349 Hz too low.
        self._owner = np.abs(self._bin_hz[:, None] - self._tones[None, :]).argmin(axis=1)
        self._bins = WindowedBins(sample_rate, self._hop, self._bin_hz, WINDOW_HOPS)
        self._snr = 10.0 ** (s.min_snr_db / 10.0)
        self._min_power = (10.0 ** (s.min_level_dbfs / 20.0) * self._window / 2.0) ** 2
        self._hops_done = 0
        self._run: _Run | None = None
        self._last: tuple[HeardTone, int] | None = None  # the last tone that ended, its index
        self._hop_s = self._hop / sample_rate
        lengths = [p.a_s for p in pages] + [p.b_s for p in pages if p.b_hz is not None]
        # A tone is heard from about WINDOW_HOPS / 2 hops before its first candidate hop
        # to as many after its last: a run is that much shorter than the tone.
        self._shortest_s = s.min_length * min(lengths) - (WINDOW_HOPS + 1) * self._hop_s

    def feed(self, samples: npt.ArrayLike) -> list[PageDetected]:
        z, energy = self._bins.feed(samples)
        if not len(z):
            return []
        power = z.real * z.real + z.imag * z.imag
        best = np.argmax(power, axis=1)
        rows = np.arange(len(power))
        p_best = power[rows, best]
        tone_e = p_best * (2.0 / self._window)
        rest = np.maximum(energy - tone_e, 1e-20)
        ok = (
            (p_best >= self._min_power)
            & (tone_e >= self.settings.min_tone_fraction * energy)
            & (p_best >= self._snr * rest)
        )
        tone = np.where(ok, self._owner[best], -1)
        first_hop = self._hops_done
        self._hops_done += len(z)
        events: list[PageDetected] = []
        heard = np.flatnonzero(tone >= 0)
        if len(heard):
            cut = np.flatnonzero((np.diff(tone[heard]) != 0) | (np.diff(heard) > DROPOUT_HOPS + 1))
            for seg in np.split(heard, cut + 1):
                k = int(tone[seg[0]])
                b = best[seg]  # each hop's strongest bin of that tone
                events.extend(self._heard(first_hop + seg, k, z[seg, b], power[seg, b], b))
        if self._run is not None and self._hops_done - 1 - self._run.last > DROPOUT_HOPS + 1:
            events.extend(self._end_run())
        return events

    def flush(self) -> list[PageDetected]:
        return self._end_run() if self._run is not None else []

    # ------------------------------------------------------------------ runs
    def _heard(
        self,
        hops: npt.NDArray[np.int64],
        tone: int,
        z: C128,
        power: F64,
        bins: npt.NDArray[np.int64],
    ) -> list[PageDetected]:
        events: list[PageDetected] = []
        run = self._run
        first = int(hops[0])
        if run is None or run.tone != tone or first - run.last > DROPOUT_HOPS + 1:
            if run is not None:
                events.extend(self._end_run())
            run = self._run = _Run(tone=tone, first=first, last=first)
        run.last = int(hops[-1])
        run.hops.append(hops)
        run.z.append(z)
        run.p.append(power)
        run.bins.append(bins)
        events.extend(self._long_tones(run))
        return events

    def _measured(self, run: _Run, until: int | None = None) -> HeardTone | None:
        """The run (up to hop `until`) as a tone, if its frequency is near its configured
        tone's."""
        hops = np.concatenate(run.hops)
        keep = np.ones(len(hops), bool) if until is None else hops <= until
        nominal = float(self._tones[run.tone])
        bins, z = np.concatenate(run.bins)[keep], np.concatenate(run.z)[keep]
        hz = self._bins.measure_in_main_bin(hops[keep], z, bins, self._bin_hz)
        if abs(hz / nominal - 1.0) > self.settings.tolerance:
            return None
        amp = 2.0 * math.sqrt(float(np.median(np.concatenate(run.p)[keep]))) / self._window
        last = run.last if until is None else until
        # A window is a candidate while the tone fills most of it.
        start = (run.first + WINDOW_HOPS / 2) * self._hop_s
        end = (last + 1 + WINDOW_HOPS / 2) * self._hop_s
        return HeardTone(
            start=round(start, 3),
            end=round(end, 3),
            hz=round(hz, 1),
            level_dbfs=round(20.0 * math.log10(max(amp, 1e-9)), 1),
        )

    def _long_tones(self, run: _Run) -> list[PageDetected]:
        """A long tone is told as soon as it has lasted long enough (an all-call), as of
        the hop where it had: the same event however the input came in blocks."""
        nominal = float(self._tones[run.tone])
        events = []
        for page in self.pages:
            if page.b_hz is not None or page.name in run.long_told:
                continue
            if round(page.a_hz, 1) != nominal:
                continue
            due = run.first + math.ceil(self.settings.min_length * page.a_s / self._hop_s) - 1
            if run.last < due:
                continue
            run.long_told.add(page.name)
            heard = self._measured(run, until=due)
            if heard is None:
                continue
            events.append(
                PageDetected(
                    start=heard.start,
                    end=heard.end,
                    name=page.name,
                    a_hz=heard.hz,
                    b_hz=None,
                    a_s=round(heard.end - heard.start, 2),
                    b_s=None,
                )
            )
        return events

    def _end_run(self) -> list[PageDetected]:
        run, self._run = self._run, None
        if run is None:
            return []
        # Shorter than any configured tone may be (speech makes many such runs): neither
        # an A nor a B, so no measurement is needed to know it ends what came before.
        too_short = (run.last - run.first + 1) * self._hop_s < self._shortest_s
        heard = None if too_short else self._measured(run)
        if heard is None:
            self._last = None
            return []
        events: list[PageDetected] = []
        if self._last is not None:
            a, a_tone = self._last
            nominal_a, nominal_b = float(self._tones[a_tone]), float(self._tones[run.tone])
            gap = heard.start - a.end
            a_len, b_len = a.end - a.start, heard.end - heard.start
            s = self.settings
            for page in self.pages:
                if (
                    page.b_hz is not None
                    and round(page.a_hz, 1) == nominal_a
                    and round(page.b_hz, 1) == nominal_b
                    and gap <= MAX_GAP_S
                    and s.min_length * page.a_s <= a_len <= s.max_a_length * page.a_s
                    and b_len >= s.min_length * page.b_s
                ):
                    events.append(
                        PageDetected(
                            start=a.start,
                            end=heard.end,
                            name=page.name,
                            a_hz=a.hz,
                            b_hz=heard.hz,
                            a_s=round(a_len, 2),
                            b_s=round(b_len, 2),
                        )
                    )
        self._last = (heard, run.tone)
        return events


def page_signal(
    a_hz: float,
    b_hz: float | None,
    sample_rate: int,
    *,
    a_s: float = 1.0,
    b_s: float = 3.0,
    level_dbfs: float = -10.0,
    offset: float = 0.0,
) -> F32:
    """A page as audio: tone A for a_s then tone B for b_s, no gap, phase-continuous; b_hz
    None gives a long tone of a_s. `offset`: a relative frequency error of both."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate < MIN_RATE:
        raise ValueError(f"sample_rate must be an integer >= {MIN_RATE}, got {sample_rate!r}")
    tones = [(a_hz, a_s)] + ([(b_hz, b_s)] if b_hz is not None else [])
    for hz, seconds in tones:
        if not MIN_HZ <= hz <= MAX_HZ or not 0.05 <= seconds <= 30.0:
            raise ValueError(f"tones must be {MIN_HZ:g}-{MAX_HZ:g} Hz and 0.05-30 s long")
    lengths = [round(seconds * sample_rate) for _, seconds in tones]
    per_sample = np.repeat([f * (1.0 + offset) for f, _ in tones], lengths)
    phase = 2.0 * np.pi * np.cumsum(per_sample) / sample_rate
    out: F64 = 10.0 ** (level_dbfs / 20.0) * np.sin(phase)
    return raised_cosine_edges(out, sample_rate).astype(np.float32)
