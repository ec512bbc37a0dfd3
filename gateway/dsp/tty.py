"""TTY/TDD (Baudot, TIA-825-A / V.18 Annex A) modem: streaming decoder and encoder.

Decoder: `TtyDecoder(sample_rate=8000).feed(samples)` returns the events found in that block:
`TtyDetected` once a TTY is recognised, `TtyChar` for every character (its `time` is the end
of its first stop bit, in seconds of stream time), `TtyRetract` when characters given are
read again (then their new reading follows, `revised`), `TtyEnded` once the TTY has given no
sign (no character, no idle mark) for `end_after_s`. 45.45 and 50 baud are told apart
automatically; any stop length and idle mark; tones up to 5 % off nominal are tracked. Any
split of the input into blocks gives the same events. `final_text(events)` is the text they
spell. See gateway.dsp.tty_demod for the signal path.

The caller's shift convention (unshift on space or keep the shift) is found from the signal
(gateway.dsp.tty_baudot.ShiftReader): the ambiguous text after a space typed in figures is
read again when a redundant shift shows the convention, never past a CR or LF.

No text is released until a detection gate passes: `detect_chars` frames in a run with
start and stop bits right, tone energy well above the noise and little in the other tone,
both tone frequencies clearly measured and holding still (a voice's harmonics glide). The
burst is then read again from its start at both rates, with the tone frequencies and
levels measured so far, and both rates' bit grids are fitted to every character start
found: the rate whose grid captures more of the tones (its bit edges where the line's
are) is kept, if the evidence is clear, else after up to RATE_MORE_CHARS more characters,
and its characters are released at once: the gate costs latency (under a second), not
characters. The burst is read from where its carrier starts (_onset), not from where the
hop presence first saw it, so a short lead-in (minimodem's is two bits) loses nothing. The
rate is fitted again every VERIFY_STEP characters over the first VERIFY_S: if the other
rate fits clearly better, the burst is read again at it (TtyRetract, TtyDetected again).
Within `session_s` of a TTY's end, `redetect_chars` frames at its rate suffice.

Encoder: `TtyEncoder(sample_rate=8000, baud=45.45).encode("HELLO GA")` returns float32
audio: mark lead-in, phase-continuous FSK characters, mark hold.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from gateway.dsp.tty_baudot import (
    SHIFT_CONVENTIONS,
    BaudotWriter,
    FiguresTable,
    ShiftConvention,
    ShiftReader,
)
from gateway.dsp.tty_demod import (
    BAUD_45,
    BAUD_50,
    HOP,
    MARK_HZ,
    MIN_NOISE,
    SPACE_HZ,
    Frame,
    FrontEnd,
    Tracker,
)

__all__ = [
    "BAUD_45",
    "BAUD_50",
    "TtyChar",
    "TtyDecoder",
    "TtyDetected",
    "TtyEncoder",
    "TtyEnded",
    "TtyEvent",
    "TtyRetract",
    "final_text",
]

log = logging.getLogger(__name__)

# Gate: what a frame must look like to count towards detection.
GATE_SNR: Final = 6.0  # mean on-tone bit energy / noise of a bit window (7.8 dB)
GATE_LEAK: Final = 0.3  # off-tone / on-tone energy over the frame
GATE_MAX_GAP_S: Final = 1.5  # idle between two frames of one run
GATE_FREQ_SPREAD_HZ: Final = 25.0  # tone frequency wander allowed over a run (see _steady_tones)
# Once detected: what a frame must look like to be printed at all.
ACTIVE_SNR: Final = 3.0
ACTIVE_LEAK: Final = 0.7
ACTIVE_MIN_LEVEL: Final = 20.0  # above this level every bit window must hold some tone
ACTIVE_REL: Final = 0.2  # and a frame at least this fraction of the TTY's usual energy
RATE_NATS: Final = 25.0  # rate evidence (log-likelihood ratio) below this: read more characters
RATE_MORE_CHARS: Final = 10  # at most this many more before deciding anyway
RATE_WAIT_S: Final = 2.0  # or this long (about 11 characters), if the burst ends sooner
# After detection the rate is checked again every VERIFY_STEP characters for VERIFY_S: at
# -8 dB a few characters can mislead the grid fit, a few tens do not.
VERIFY_STEP: Final = 5
VERIFY_S: Final = 8.0
VERIFY_DONE_NATS: Final = 80.0  # evidence for the rate chosen that ends the check
RATE_SWITCH_NATS: Final = 25.0  # evidence against it that reads the burst again at the other
REDECODE_BACK_S: Final = 3.0  # how far before the gate run a burst may have started
_CHUNK_S: Final = 4.0  # longest block handed to the front end at once
_IDLE_STEP_S: Final = 0.25  # how far the idle trackers read at a time
_MIN_BLOCK_S: Final = 0.064  # shortest (smaller blocks are gathered up to this)


@dataclass(frozen=True, slots=True)
class TtyDetected:
    """A TTY was recognised (the characters that proved it follow as TtyChar events)."""

    time: float
    baud: float
    mark_hz: float
    space_hz: float


@dataclass(frozen=True, slots=True)
class TtyChar:
    """One decoded character (shift codes and NUL produce none)."""

    time: float  # end of the character's first stop bit, seconds of stream time
    char: str
    code: int  # the 5-bit Baudot code
    revised: bool = False  # read again after a TtyRetract (the sender's shift convention)


@dataclass(frozen=True, slots=True)
class TtyRetract:
    """The last `count` characters given are withdrawn; their new reading follows.

    Happens when the sender's shift convention (unshift on space or not) shows, or its
    evidence turns, and text typed after a space in figures reads differently. Never
    reaches back past a CR or LF, nor into an earlier TTY session.
    """

    time: float
    count: int


@dataclass(frozen=True, slots=True)
class TtyEnded:
    """The TTY tones stopped for `end_after_s`."""

    time: float


TtyEvent = TtyDetected | TtyChar | TtyRetract | TtyEnded


class _State(Enum):
    IDLE = "idle"
    ACTIVE = "active"


@dataclass(frozen=True, slots=True)
class _Doubt:
    """A burst whose rate was too close to call when its gate passed."""

    p0: int  # where the burst began
    anchors: int  # character starts it had then
    until: int  # decide anyway with the data up to here


@dataclass(slots=True)
class _Verify:
    """The rate chosen at detection, checked again as more characters come."""

    p0: int  # where the burst began
    anchors: list[int]  # character starts read since
    next_check: int  # check again once this many
    evidence: float  # the shift-convention evidence before the burst
    mark_hz: float
    space_hz: float
    line_done: bool = False  # a CR or LF was printed: what came before it stands


@dataclass(slots=True)
class _Run:
    frames: list[Frame]
    bad: int = 0


def final_text(events: Iterable[TtyEvent]) -> str:
    """The text the events spell, withdrawn characters (TtyRetract) taken out."""
    out: list[str] = []
    for e in events:
        if isinstance(e, TtyChar):
            out.append(e.char)
        elif isinstance(e, TtyRetract):
            del out[len(out) - e.count :]
    return "".join(out)


def _merge(starts: list[int], within: int) -> list[int]:
    """Sorted character starts with near-duplicates (two readings of one start) merged."""
    out: list[int] = []
    for a in starts:
        if not out or a - out[-1] > within:
            out.append(a)
    return out


def _as_samples(samples: npt.ArrayLike) -> npt.NDArray[np.float32]:
    x = np.asarray(samples)
    if x.ndim != 1:
        raise ValueError(f"expected a 1-D block of mono samples, got shape {x.shape}")
    if x.dtype.kind not in "fiu":
        raise ValueError(f"expected numeric samples, got dtype {x.dtype}")
    x = x.astype(np.float32, copy=False)
    if not np.all(np.isfinite(x)):
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    return x


class TtyDecoder:
    """Streaming TTY/TDD decoder for one audio channel."""

    def __init__(
        self,
        *,
        sample_rate: int = 8000,
        shift: ShiftConvention = "auto",
        unshift_on_space: bool | None = None,
        figures: FiguresTable = "us",
        detect_chars: int = 4,
        redetect_chars: int = 2,
        session_s: float = 30.0,
        end_after_s: float = 1.0,
        baud: float | None = None,
    ) -> None:
        """`shift`: the callers' shift convention, "auto" to find it from the signal.
        `unshift_on_space`: the old switch for it (true: "unshift_on_space", false: "keep").
        `baud`: 45.45 or 50 to read only that rate; by default both, told apart."""
        if not 6000 <= sample_rate <= 192000:
            raise ValueError("sample_rate must be between 6000 and 192000 Hz")
        if baud is not None and not (abs(baud - BAUD_45) < 0.01 or abs(baud - BAUD_50) < 1e-9):
            raise ValueError("baud must be 45.45 or 50")
        if not 1 <= redetect_chars <= detect_chars <= 16:
            raise ValueError("need 1 <= redetect_chars <= detect_chars <= 16")
        if not 0.2 <= end_after_s <= 60:
            raise ValueError("end_after_s must be between 0.2 and 60 s")
        if not 0 <= session_s <= 3600:
            raise ValueError("session_s must be between 0 and 3600 s")
        if shift not in SHIFT_CONVENTIONS:
            raise ValueError(f"shift must be one of {list(SHIFT_CONVENTIONS)}, not {shift!r}")
        if unshift_on_space is not None:  # the old switch: a fixed convention
            shift = "unshift_on_space" if unshift_on_space else "keep"
        self.sample_rate = sample_rate
        self._reader = ShiftReader(shift=shift, figures=figures)
        self._detect_chars = detect_chars
        self._redetect_chars = redetect_chars
        self._session_s = session_s
        self._end_after_s = end_after_s
        self._fe = FrontEnd(sample_rate)
        rates = [BAUD_45, BAUD_50] if baud is None else [BAUD_45 if baud < 48 else BAUD_50]
        self._trackers = [Tracker(self._fe, rate) for rate in rates]
        self._state = _State.IDLE
        self._locked: Tracker | None = None
        self._runs: dict[int, _Run] = {i: _Run([]) for i in range(len(self._trackers))}
        self._idle_from = 0
        self._idle_upto = 0  # how far the idle trackers have been run
        self._alive = 0  # latest sign of the detected TTY: a character's end or idle mark
        self._session_baud: float | None = None
        self._session_until = -1
        self._level = 0.0  # typical frame energy over noise of the detected TTY
        self._doubt: _Doubt | None = None
        self._held: Frame | None = None  # a frame with bad framing, until the next one
        self._verify: _Verify | None = None
        self._shown = 0  # characters given since detection (less those withdrawn)
        self._pending: list[npt.NDArray[np.float32]] = []
        self._pending_n = 0

    @property
    def active(self) -> bool:
        """Whether a TTY is currently detected."""
        return self._state is _State.ACTIVE

    @property
    def baud(self) -> float | None:
        """The baud rate of the detected TTY, if any."""
        return self._locked.baud if self._locked is not None else None

    def feed(self, samples: npt.ArrayLike) -> list[TtyEvent]:
        """Decode one block of mono samples (float in [-1, 1]); return the new events."""
        x = _as_samples(samples)
        if len(x) == 0:
            return []
        # Tiny blocks (a sound card's 10-20 ms) are gathered to _MIN_BLOCK_S first: the
        # work per call is mostly fixed cost. Costs at most that much latency.
        if self._pending_n + len(x) < int(_MIN_BLOCK_S * self.sample_rate):
            self._pending.append(x.copy())
            self._pending_n += len(x)
            return []
        if self._pending:
            x = np.concatenate([*self._pending, x])
            self._pending, self._pending_n = [], 0
        events: list[TtyEvent] = []
        # Long blocks go in pieces: the front end keeps HISTORY_S of decimated history.
        step = int(_CHUNK_S * self.sample_rate)
        for i in range(0, len(x), step):
            self._fe.process(x[i : i + step])
            events.extend(self._advance())
        return events

    def flush(self) -> list[TtyEvent]:
        """End of input: decode what is pending and close an active TTY session.

        Feeds end_after_s + 0.6 s of silence, so stream time moves on by that much.
        """
        pad = np.zeros(int(self.sample_rate * (self._end_after_s + 0.6)), dtype=np.float32)
        return self.feed(pad)

    # -- state machine ----------------------------------------------------------------

    def _advance(self) -> list[TtyEvent]:
        events: list[TtyEvent] = []
        fe = self._fe
        while True:
            avail = fe.avail
            if self._state is _State.ACTIVE:
                tracker = self._locked
                assert tracker is not None
                end = self._find_end(avail)
                limit = avail if end is None else min(avail, end)
                alive = self._alive
                verify = self._verify
                for frame in tracker.run(limit, masked=False):
                    if verify is not None and frame.valid:
                        verify.anchors.append(frame.start)
                    self._take(frame, events)
                if verify is not None:
                    self._check_rate(limit, events)
                if self._alive > alive:
                    continue  # a character moved the end further out
                if end is None:
                    return events
                self._release(events)
                self._reader.commit()  # the line is over: its reading is final
                events.append(TtyEnded(time=fe.time_of(end)))
                log.info("TTY ended at %.2f s", fe.time_of(end))
                self._session_baud = tracker.baud
                self._session_until = end + int(self._session_s * fe.fs2)
                self._go_idle(end)
                continue
            # Without a TTY, read on in steps: the trackers would otherwise read every frame
            # of a long block (both rates) before the gate sees the first, and all after a
            # detection is read again. The same as smaller blocks, which decode the same.
            limit = min(avail, self._idle_upto + int(_IDLE_STEP_S * fe.fs2))
            detected = self._idle_step(limit, events)
            self._idle_upto = limit
            if not detected and limit >= avail:
                return events

    def _check_rate(self, limit: int, events: list[TtyEvent]) -> None:
        """Fit both rates to the character starts read since detection; if the other rate
        fits clearly better, read the burst again at it (withdrawing what was shown, unless
        a line was completed meanwhile: then from here on)."""
        v = self._verify
        locked = self._locked
        assert v is not None and locked is not None
        fe = self._fe
        if len(v.anchors) < v.next_check:
            return
        v.next_check = len(v.anchors) + VERIFY_STEP
        within = min(t.nb for t in self._trackers) // 2
        anchors = _merge(sorted(v.anchors), within)
        best, nats = self._rate_choice(anchors, within, limit)
        index = self._trackers.index(locked)
        for_locked = nats if index == 0 else -nats
        if for_locked >= VERIFY_DONE_NATS or anchors[-1] - v.p0 > VERIFY_S * fe.fs2:
            self._verify = None
            return
        if for_locked > -RATE_SWITCH_NATS or best == index:
            return
        self._verify = None
        tr = self._trackers[best]
        log.info("TTY rate revised to %.2f baud (%.0f nats)", tr.baud, -for_locked)
        start = v.p0
        if v.line_done:
            start = anchors[-1] + locked.frame_len  # what was printed stands
        tr.reset(start)
        tr.amp_m, tr.amp_s = locked.amp_m, locked.amp_s
        tr.set_timing_amplitudes(tr.amp_m, tr.amp_s)
        tr.reset_chain(v.mark_hz, v.space_hz)
        frames = tr.run(limit, masked=False)
        self._held = None
        if not v.line_done:
            if self._shown:
                events.append(TtyRetract(time=fe.time_of(limit), count=self._shown))
            self._shown = 0
            self._reader.evidence = v.evidence
            self._reader.reset()
            self._reader.commit()
        self._locked = tr
        events.append(
            TtyDetected(
                time=fe.time_of(limit), baud=tr.baud, mark_hz=v.mark_hz, space_hz=v.space_hz
            )
        )
        for frame in frames:
            self._take(frame, events)

    def _go_idle(self, position: int) -> None:
        self._verify = None
        self._state = _State.IDLE
        self._locked = None
        self._idle_from = position
        self._idle_upto = position
        self._doubt = None
        for i, tr in enumerate(self._trackers):
            tr.forget_before(position)
            tr.reset(position)
            self._runs[i] = _Run([])

    def _idle_step(self, avail: int, events: list[TtyEvent]) -> bool:
        """Run both trackers; True if a TTY was detected (the state is then ACTIVE)."""
        new: list[tuple[int, int, Frame]] = []
        for i, tr in enumerate(self._trackers):
            for f in tr.run(avail, masked=True):
                new.append((f.decided, i, f))
        new.sort(key=lambda item: (item[0], item[1]))
        doubt = self._doubt
        for decided, i, f in new:
            if doubt is not None and decided > doubt.until:
                break  # the wait ran out first, whatever the block size
            if self._gate(i, f):
                # Detected, or the rate is still in doubt and both trackers were set back
                # to read on from this frame: either way, go round again.
                first = self._runs[i].frames[0].start
                self._detect(self._presence_start(first), decided, events, gate=i)
                return True
        if doubt is not None and avail >= doubt.until:
            # The rate stayed in doubt and no more characters settled it: the burst may
            # be over, so decide on what there is rather than drop its characters.
            self._detect(doubt.p0, doubt.until, events, force=True)
            return True
        return False

    def _gate(self, i: int, f: Frame) -> bool:
        """Count a frame towards detection; True once enough good ones came in a row.

        Good: start and stop bits right, tone energy well above the noise, little energy
        in the other tone. One bad frame is forgiven inside a run, a second ends it. Which
        rate is right is settled in _detect, reading the burst again at both.
        """
        tr = self._trackers[i]
        run = self._runs[i]
        good = f.valid and f.snr >= GATE_SNR and f.leak <= GATE_LEAK and f.start >= self._idle_from
        if run.frames and f.start - run.frames[-1].end > GATE_MAX_GAP_S * self._fe.fs2:
            run.frames.clear()
            run.bad = 0
        if good:
            run.frames.append(f)
        elif run.frames:
            run.bad += 1
            if run.bad > 1:
                run.frames.clear()
                run.bad = 0
        need = self._detect_chars
        if self._session_baud == tr.baud and f.start < self._session_until:
            need = self._redetect_chars
        if len(run.frames) < need:
            return False
        return self._steady_tones(run.frames[-need].start, f.decided)

    def _steady_tones(self, start: int, decided: int) -> bool:
        """Both tones clearly measured when deciding, at frequencies that held still.

        A TTY's oscillator does not move; the harmonics of a voice glide with its pitch.
        The measurement itself wanders by up to about 20 Hz with the bit pattern (short
        keyed bursts of a tone make a skewed spectral peak), hence GATE_FREQ_SPREAD_HZ.
        """
        fe = self._fe
        h0 = max(start // HOP + 1, fe.p_mark.base)
        h1 = min(decided // HOP + 1, fe.p_mark.end)
        if h1 <= h0 or not bool(fe.p_tones.a[h1 - 1 - fe.p_tones.base]):
            return False
        # Only hops where both tones were measured: elsewhere the frequencies are held
        # over from before the burst (noise, or a guess), which is no sign of a glide.
        measured = fe.p_tones.get(h0, h1).astype(bool)
        for buf in (fe.p_mark, fe.p_space):
            f = buf.get(h0, h1)[measured]
            if float(f.max() - f.min()) > GATE_FREQ_SPREAD_HZ:
                return False
        return True

    def _detect(
        self,
        p0: int,
        decided: int,
        events: list[TtyEvent],
        force: bool = False,
        gate: int | None = None,
    ) -> None:
        """A gate passed: read the burst again from its start at both rates, keep the better.

        `force`: a doubtful rate's wait ran out; decide on the data up to `decided`.
        `gate`: the tracker whose gate run passed; `p0` is then a first guess at the burst
        start from hop presence, refined to the carrier's start (_onset) once the running
        sums hold the tone frequencies measured (before, a mixer may be far off the tone
        it has not seen yet).

        Both readings start at the burst start (so both are in step with the characters,
        which a hunt started mid-stream need not be) and use the tone frequencies measured
        so far. The rate is chosen by fitting both rates' bit grids to the character
        starts found (_rate_choice); the reading at that rate is kept.
        """
        fe = self._fe
        hop = min(max(decided // HOP, fe.p_mark.base), fe.p_mark.end - 1)
        mark_hz = float(fe.p_mark.a[hop - fe.p_mark.base])
        space_hz = float(fe.p_space.a[hop - fe.p_space.base])
        start = p0 - 2 * max(tr.nb for tr in self._trackers) - 2
        fe.recompute(start, decided, mark_hz, space_hz)
        for tr in self._trackers:
            tr.invalidate(start)
            tr.reset_chain(mark_hz, space_hz)
        if gate is not None:
            p0 = self._onset(gate, p0, self._runs[gate].frames[0].start)
        readings: list[list[Frame]] = []
        for tr in self._trackers:
            tr.invalidate(start)
            tr.reset(p0)  # also forgets levels learnt from frames read out of step
            readings.append(tr.run(decided, masked=False))
        # Character starts found at either rate; one reading of a start may be a few
        # samples off the other's, so near-duplicates merge and each fit searches as far.
        within = min(t.nb for t in self._trackers) // 2
        anchors = _merge(sorted(f.start for frames in readings for f in frames if f.valid), within)
        best, nats = self._rate_choice(anchors, within, decided)
        if abs(nats) < RATE_NATS and not force:
            # Too close to call on a few noisy characters: wait for the next ones (the
            # trackers have read up to here and go on from there), up to RATE_MORE_CHARS
            # of them or RATE_WAIT_S, then decide anyway.
            doubt = self._doubt  # one pending is this burst's: its wait bounds all others
            if doubt is None:
                until = decided + int(RATE_WAIT_S * fe.fs2)
                doubt = self._doubt = _Doubt(p0=p0, anchors=len(anchors), until=until)
            if len(anchors) < doubt.anchors + RATE_MORE_CHARS:
                return
        self._doubt = None
        tr, frames = self._trackers[best], readings[best]
        # Second pass at the chosen rate with the tone levels of this TTY, so a line that
        # attenuates one tone more than the other reads its first characters right too.
        marks = [f.mark_env for f in frames if f.valid and f.snr >= GATE_SNR]
        spaces = [f.space_env for f in frames if f.valid and f.snr >= GATE_SNR]
        if marks and spaces:
            tr.reset(p0)
            # statistics.median: np.median's value for a few floats, without its overhead
            tr.amp_m = float(statistics.median(marks))
            tr.amp_s = float(statistics.median(spaces))
            tr.set_timing_amplitudes(tr.amp_m, tr.amp_s)
            frames = tr.run(decided, masked=False)
        self._state = _State.ACTIVE
        self._locked = tr
        self._alive = decided
        if self._session_baud is not None and decided < self._session_until:
            self._reader.reset()  # the same caller again: its shift convention holds
        else:
            self._reader.forget()
        good = sorted(f.snr for f in frames if f.valid and f.snr >= GATE_SNR)
        self._level = good[len(good) // 2] if good else 0.0
        t = fe.time_of(decided)
        events.append(TtyDetected(time=t, baud=tr.baud, mark_hz=mark_hz, space_hz=space_hz))
        log.info(
            "TTY detected at %.2f s: %.2f baud, mark %.1f Hz, space %.1f Hz",
            t,
            tr.baud,
            mark_hz,
            space_hz,
        )
        self._held = None
        self._shown = 0
        self._verify = _Verify(
            p0=p0,
            anchors=[f.start for f in frames if f.valid],
            next_check=len(frames) + VERIFY_STEP,
            evidence=self._reader.evidence,
            mark_hz=mark_hz,
            space_hz=space_hz,
        )
        for frame in frames:
            self._take(frame, events)

    def _rate_choice(self, anchors: list[int], search: int, limit: int) -> tuple[int, float]:
        """Which tracker's rate fits the character starts found: (index, evidence in nats).

        Both rates' bit grids are fitted within `search` samples of each start
        (Tracker.rate_fit): the mean tone amplitude each captures per sample. Over a
        common span of S samples the log-likelihood of the better grid exceeds the
        other's by about 2 A S d / noise, with A the captured amplitude, d the difference
        of the two fits and noise the per-sample noise variance; summed over the starts
        both fits could use. Positive favours index 0.

        This looks at the bit edges inside each character, which do not depend on the
        stop length or the idle between characters: an edge k bits after the start edge
        is 2k ms later at 45.45 baud than at 50, and every character has at least two
        edges (the start edge and a return to mark by the stop bit) that the other rate's
        grid cannot both match. The weakest is LTRS at 45.45 baud (start bit, then all
        mark): 50 baud windows fit inside its bits but for its start bit being 2 ms
        longer, a few nats per character at -3 dB. On 144 varied messages (every stop
        length, tones 5 % off) it is right every time down to -6 dB; the median
        evidence at -3 dB is about 50 nats.
        """
        fe = self._fe
        if len(self._trackers) == 1:
            return 0, math.inf  # one rate given: nothing to choose
        fits = [t.rate_fit(anchors, search, limit) for t in self._trackers]
        span = 4.0 * sum(t.nbf for t in self._trackers)  # 8 bit times, the mean of both
        nats = 0.0
        for a, f0, f1 in zip(anchors, fits[0], fits[1], strict=True):
            if not (np.isfinite(f0) and np.isfinite(f1)):
                continue
            hop = min(max(a // HOP, fe.p_noise.base), fe.p_noise.end - 1)
            noise = max(float(fe.p_noise.a[hop - fe.p_noise.base]), MIN_NOISE)
            nats += 2.0 * max(f0, f1) * span * (f0 - f1) / noise
        return (0 if nats >= 0 else 1), nats

    def _onset(self, i: int, lo: int, first: int) -> int:
        """Where the carrier before `first` starts: the end of the last stretch of two bit
        times without tone at the gate run's level (within a burst, only a bit window
        straddling a transition dips, and briefly). `lo` if there is none after it."""
        tr = self._trackers[i]
        frames = self._runs[i].frames
        amp_m = float(statistics.median([f.mark_env for f in frames]))
        amp_s = float(statistics.median([f.space_env for f in frames if f.n_mark < 7] or [amp_m]))
        if amp_m <= 0 or amp_s <= 0:
            return lo
        tr.refresh()
        nb = tr.nb
        a, b = max(lo + nb - 1, tr.rm.base), min(first + nb, tr.rm.end)
        if b - a < 2 * nb:
            return lo
        quiet = (tr.rm.get(a, b) < 0.5 * amp_m) & (tr.rs.get(a, b) < 0.5 * amp_s)
        # Runs of quiet window ends: the last one at least 2 bits long.
        edges = np.flatnonzero(np.diff(np.concatenate([[0], quiet.astype(np.int8), [0]])))
        starts, ends = edges[0::2], edges[1::2]
        long_runs = np.flatnonzero(ends - starts >= 2 * nb)
        if len(long_runs) == 0:
            return lo
        e = a + int(ends[long_runs[-1]]) - 1  # last quiet window end
        # That window holds less than half a bit of carrier: it starts after e - nb / 2.
        return max(lo, e - nb // 2 - nb // 4)

    def _presence_start(self, first: int) -> int:
        """Where the burst containing `first` began: after the last long absence of tones."""
        fe = self._fe
        lo = max(first - int(REDECODE_BACK_S * fe.fs2), self._idle_from, fe.cm.base + 64)
        if first <= lo:
            return lo
        h_lo, h_hi = max(lo // HOP, fe.p_present.base), min(first // HOP + 1, fe.p_present.end)
        pres = fe.p_present.get(h_lo, h_hi).astype(bool)
        # The last run of >= 6 absent hops (0.4 s) before `first` marks the burst start.
        absent = ~pres
        streak = 0
        start_hop = h_lo
        for j in range(len(absent) - 1, -1, -1):
            streak = streak + 1 if absent[j] else 0
            if streak >= 6:
                start_hop = h_lo + j + streak - 6  # presence lags a weak carrier's start
                break
        return max(lo, start_hop * HOP)

    def _find_end(self, avail: int) -> int | None:
        """Where the TTY has been silent for end_after_s (no character, no idle mark), if reached.

        Judged on the TTY's own evidence rather than on energy at its tone frequencies, so
        a caller who starts talking right after typing (voice carry-over) ends the session
        instead of keeping it open for the decoder to read the voice as characters.
        """
        fe = self._fe
        end_n = int(self._end_after_s * fe.fs2)
        alive = self._alive
        while True:
            end = alive + end_n
            j0 = max(alive // HOP + 1, fe.p_idle.base)
            j1 = min(end // HOP + 1, fe.p_idle.end)
            idle = np.flatnonzero(fe.p_idle.get(j0, j1)) if j1 > j0 else np.zeros(0, np.int64)
            if len(idle) == 0:
                break
            alive = max(alive, (j0 + int(idle[-1])) * HOP)
        self._alive = alive
        return end if end <= avail else None

    def _take(self, f: Frame, events: list[TtyEvent]) -> None:
        """A frame read while a TTY is detected: printed, or held if its framing is bad.

        A frame with a bad start or stop bit that the next frame overlaps was a misframe
        (the tracker hunts on half a bit later and finds the real character), most often
        at the carrier's start, where the lead-in may be two bits short: it is dropped.
        Of two overlapping bad frames the stronger stays held.
        """
        held, self._held = self._held, None
        if held is not None:
            if f.start >= held.end - self._locked_nb() // 2:
                self._print(held, events)
            elif not f.valid and f.snr <= held.snr:
                self._held = held  # the weaker of two overlapping bad frames goes
                return
        if f.valid:
            self._print(f, events)
        else:
            self._held = f

    def _release(self, events: list[TtyEvent]) -> None:
        """Print a held frame: nothing came after it."""
        if self._held is not None:
            held, self._held = self._held, None
            self._print(held, events)

    def _locked_nb(self) -> int:
        return self._locked.nb if self._locked is not None else self._trackers[0].nb

    def _print(self, f: Frame, events: list[TtyEvent]) -> None:
        """Print a frame read while a TTY is detected, unless it is not a character.

        Not a character: noise (too little tone energy, or both tones at once), or, for a
        frame with a bad start or stop bit, one that is weak for this TTY or has bits
        without carrier (a frame hanging over the end of the carrier). Frames with good
        framing keep the TTY alive and track its level.
        """
        if f.snr < ACTIVE_SNR or f.leak > ACTIVE_LEAK:
            return
        level = self._level
        if f.valid:
            self._level = f.snr if level <= 0 else level + 0.1 * (f.snr - level)
            self._alive = max(self._alive, f.end)
        elif (
            f.snr < ACTIVE_REL * level
            or f.absent >= 2
            or (level >= ACTIVE_MIN_LEVEL and f.min_snr < 0.25 * ACTIVE_REL * level)
        ):
            return
        if f.code_ll is not None:
            code = self._reader.decide_codes(f.code_ll)
        else:
            assert f.llr is not None  # a frame not read coherently has its bits' LLRs
            code = self._reader.decide(f.llr)
        retract, chars = self._reader.read(code, self._fe.time_of(f.end))
        if retract:
            events.append(TtyRetract(time=self._fe.time_of(f.end), count=retract))
        self._shown += len(chars) - retract
        if self._verify is not None and any(c in "\r\n" for c, _t, _c in chars):
            self._verify.line_done = True
        for char, t, c in chars:
            events.append(TtyChar(time=t, char=char, code=c, revised=retract > 0))


SenderConvention = Literal["both", "unshift_on_space", "keep"]


class TtyEncoder:
    """Text to TTY audio: mark lead-in, phase-continuous FSK characters, mark hold."""

    def __init__(
        self,
        *,
        sample_rate: int = 8000,
        baud: float = BAUD_45,
        stop_bits: float = 2.0,
        amplitude: float = 0.5,
        mark_hz: float = MARK_HZ,
        space_hz: float = SPACE_HZ,
        lead_in_s: float = 0.15,
        hold_s: float = 0.3,
        figures: FiguresTable = "us",
        shift_after_space: bool = True,
        convention: SenderConvention = "both",
    ) -> None:
        if not 6000 <= sample_rate <= 192000:
            raise ValueError("sample_rate must be between 6000 and 192000 Hz")
        if not (abs(baud - BAUD_45) < 0.01 or abs(baud - BAUD_50) < 1e-9):
            raise ValueError("baud must be 45.45 or 50")
        if not 1.0 <= stop_bits <= 2.0:
            raise ValueError("stop_bits must be between 1 and 2")
        if not 0.0 < amplitude <= 1.0:
            raise ValueError("amplitude must be in (0, 1]")
        for name, f in (("mark_hz", mark_hz), ("space_hz", space_hz)):
            if not 300.0 <= f < sample_rate / 2:
                raise ValueError(f"{name} must be between 300 Hz and the Nyquist frequency")
        if lead_in_s < 0 or hold_s < 0:
            raise ValueError("lead_in_s and hold_s must be >= 0")
        self.sample_rate = sample_rate
        self.baud = BAUD_45 if abs(baud - BAUD_45) < 0.01 else BAUD_50
        self.stop_bits = stop_bits
        self.amplitude = amplitude
        self.mark_hz = mark_hz
        self.space_hz = space_hz
        self.lead_in_s = lead_in_s
        self.hold_s = hold_s
        if convention not in ("both", "unshift_on_space", "keep"):
            raise ValueError("convention must be 'both', 'unshift_on_space' or 'keep'")
        # "both": shifts that read right on either kind of receiver (what we send). The
        # other two write as one kind of caller's TTY does, for tests and the simulator.
        self._writer = BaudotWriter(
            figures=figures,
            shift_after_space=shift_after_space and convention == "both",
            unshift_on_space=convention == "unshift_on_space",
        )

    def codes(self, text: str) -> list[int]:
        """The Baudot codes `encode` would send (shifts included)."""
        return self._writer.codes(text)

    def encode(self, text: str) -> npt.NDArray[np.float32]:
        """Audio for `text`; empty text still gives lead-in and hold (a carrier blip)."""
        return self.encode_codes(self.codes(text))

    def encode_codes(self, codes: list[int]) -> npt.NDArray[np.float32]:
        """Audio for raw 5-bit codes, framed with one start bit and `stop_bits` stop bits."""
        fs, bit = self.sample_rate, 1.0 / self.baud
        # (duration in bit times, is_mark) segments; boundaries rounded on the absolute
        # time axis so 1.5 stop bits do not drift.
        segs: list[tuple[float, bool]] = [(self.lead_in_s / bit, True)]
        for code in codes:
            if not 0 <= code < 32:
                raise ValueError(f"Baudot code out of range: {code}")
            segs.append((1.0, False))
            segs.extend((1.0, bool(code >> i & 1)) for i in range(5))
            segs.append((self.stop_bits, True))
        segs.append((self.hold_s / bit, True))
        dur = np.array([d for d, _ in segs]) * bit
        edges = np.rint(np.concatenate([[0.0], np.cumsum(dur)]) * fs).astype(np.int64)
        lengths = np.diff(edges)
        marks = np.array([m for _, m in segs])
        freq = np.repeat(np.where(marks, self.mark_hz, self.space_hz), lengths)
        phase = 2 * math.pi * np.cumsum(freq) / fs
        out = self.amplitude * np.sin(phase - phase[0] if len(phase) else phase)
        ramp = min(int(0.002 * fs), len(out) // 2)  # 2 ms raised-cosine on and off
        if ramp > 0:
            r = 0.5 - 0.5 * np.cos(np.pi * (np.arange(ramp) + 0.5) / ramp)
            out[:ramp] *= r
            out[-ramp:] *= r[::-1]
        return out.astype(np.float32)
