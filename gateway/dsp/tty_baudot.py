"""Baudot (ITA2 / US TTY) character code for the 5-bit text telephone.

Codes are the 5-bit values with the first data bit on the line as the least significant bit.

Figures tables: the US TTY column is the one US TTYs, US teleprinters ("USTTY") and
minimodem's `tdd` mode use. It differs from ITA2 (CCITT No. 2) at D ($ vs WRU), F (!),
G (&), H (#), J (' vs BELL), S (BELL vs '), V (; vs =) and Z (" vs +).
Note: ITU-T V.18 Annex A as implemented by spandsp (v18.c) and Asterisk (tdd.c) reads G as
'+' and H as '='; where tables disagree we follow the US TTY column, which is what a caller's
TTY prints and what minimodem sends.

Unshift on space: TIA-825-A / V.18 Annex A terminals keep the shift state across a space;
neither spandsp v18.c (decode_baudot) nor Asterisk tdd.c (tdd_decode_baudot) unshift on
space, while the RTTY convention (minimodem's transmitter, ITA2 teleprinters, TTYs set to
unshift) does. A caller's convention cannot be known in advance, so `ShiftReader` finds it
from the signal (see there); the transmitter re-sends FIGS after a space, which reads the
same on both kinds of receiver.
"""

from __future__ import annotations

import math
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

LTRS: Final = 0x1F
FIGS: Final = 0x1B
SPACE: Final = 0x04
CR: Final = 0x08
LF: Final = 0x02
NUL: Final = 0x00

FiguresTable = Literal["us", "ita2"]
ShiftConvention = Literal["auto", "unshift_on_space", "keep"]
SHIFT_CONVENTIONS: Final[tuple[str, ...]] = ("auto", "unshift_on_space", "keep")

# Index = 5-bit code. "" = no printable meaning (NUL, shifts).
_LETTERS: Final[tuple[str, ...]] = (
    "", "E", "\n", "A", " ", "S", "I", "U",
    "\r", "D", "R", "J", "N", "F", "C", "K",
    "T", "Z", "L", "W", "H", "Y", "P", "Q",
    "O", "B", "G", "", "M", "X", "V", "",
)  # fmt: skip
_FIGURES_US: Final[tuple[str, ...]] = (
    "", "3", "\n", "-", " ", "\a", "8", "7",
    "\r", "$", "4", "'", ",", "!", ":", "(",
    "5", '"', ")", "2", "#", "6", "0", "1",
    "9", "?", "&", "", ".", "/", ";", "",
)  # fmt: skip
_FIGURES_ITA2: Final[tuple[str, ...]] = (
    "", "3", "\n", "-", " ", "'", "8", "7",
    "\r", "", "4", "\a", ",", "", ":", "(",
    "5", "+", ")", "2", "", "6", "0", "1",
    "9", "?", "", "", ".", "/", "=", "",
)  # fmt: skip

_FIGURES: Final[dict[str, tuple[str, ...]]] = {"us": _FIGURES_US, "ita2": _FIGURES_ITA2}


def figures_table(name: str) -> tuple[str, ...]:
    """The figures column for `name` ("us" or "ita2")."""
    try:
        return _FIGURES[name]
    except KeyError:
        raise ValueError(f"figures table must be one of {sorted(_FIGURES)}, not {name!r}") from None


def _log_prior(shift_probs: dict[int, float]) -> npt.NDArray[np.float64]:
    """Log prior over the 32 codes: the given codes fixed, NUL rare, the rest uniform."""
    fixed = dict(shift_probs)
    fixed.setdefault(NUL, 0.001)
    rest = (1.0 - sum(fixed.values())) / (32 - len(fixed))
    out: npt.NDArray[np.float64] = np.log(np.array([fixed.get(c, rest) for c in range(32)]))
    return out


# Code priors by shift state, used to read a frame whose bits are uncertain. They encode
# the structure of TTY text (in figures a LTRS is soon due and a FIGS redundant; a
# transmission starts with a shift) weighted by what a wrong shift costs: a missed LTRS or
# a false FIGS turns the following words into figures up to the next shift, a missed FIGS
# garbles only one group of figures. Hence LTRS likely in figures, FIGS rare in letters.
_PRIOR_LETTERS: Final = _log_prior({LTRS: 0.01, FIGS: 0.01})
_PRIOR_FIGURES: Final = _log_prior({LTRS: 0.15, FIGS: 0.005})
_PRIOR_START: Final = _log_prior({LTRS: 0.3, FIGS: 0.2})
_CODE_BITS: Final = np.array([[1.0 if c >> i & 1 else -1.0 for i in range(5)] for c in range(32)])


class BaudotReader:
    """Turns received 5-bit codes into text, keeping the LTRS/FIGS state."""

    def __init__(self, *, figures: FiguresTable = "us", unshift_on_space: bool = False) -> None:
        self._figs_table = figures_table(figures)
        self._unshift_on_space = unshift_on_space
        self.figures = False

        self._fresh = True

    def reset(self) -> None:
        """Back to letters (a TTY starts every transmission in a known shift anyway)."""
        self.figures = False
        self._fresh = True

    def decide(self, llr: npt.ArrayLike) -> int:
        """The most probable code given the 5 data-bit LLRs (mark positive) and the shift state.

        With clear bits this is the hard decision; with an uncertain bit the shift structure
        of TTY text breaks the tie, which mostly saves a LTRS that noise turned into a
        figure (and with it the rest of the line).
        """
        prior = _PRIOR_START if self._fresh else _PRIOR_FIGURES if self.figures else _PRIOR_LETTERS
        score = prior + 0.5 * (_CODE_BITS @ np.asarray(llr, dtype=np.float64))
        return int(np.argmax(score))

    def read(self, code: int) -> str:
        """The text for one code: "" for shifts and NUL."""
        if not 0 <= code < 32:
            raise ValueError(f"Baudot code out of range: {code}")
        self._fresh = False
        if code == LTRS:
            self.figures = False
            return ""
        if code == FIGS:
            self.figures = True
            return ""
        char = (self._figs_table if self.figures else _LETTERS)[code]
        if code == SPACE and self._unshift_on_space:
            self.figures = False
        return char


class BaudotWriter:
    """Turns text into 5-bit codes with the shifts a receiver needs.

    - The first code of a transmission is always a shift (LTRS or FIGS), so a receiver left in
      the wrong case by an earlier call or a hit on the line starts right.
    - The current shift is sent again every `shift_repeat` characters (V.18 Annex A asks for
      one at least every 72), so a lost shift does not garble a whole line.
    - After a space, FIGS is sent again before a figure (`shift_after_space`), so receivers
      that unshift on space (RTTY style, minimodem) read the same as TTYs that do not.
    - `unshift_on_space`: write as a sender that unshifts on space does (minimodem, RTTY
      software): after a space the writer is in letters, so a figure after a space gets
      FIGS and a letter after a space gets no LTRS. Only an unshifting receiver reads it
      right; for tests and the simulator's callers.
    Lower case is folded to upper case, "\\n" becomes CR LF, a tab becomes a space, and
    characters with no Baudot code are dropped (`encodable()` tells which).
    """

    def __init__(
        self,
        *,
        figures: FiguresTable = "us",
        shift_after_space: bool = True,
        shift_repeat: int = 72,
        unshift_on_space: bool = False,
    ) -> None:
        if shift_repeat < 1:
            raise ValueError("shift_repeat must be >= 1")
        figs = figures_table(figures)
        self._letters: dict[str, int] = {c: i for i, c in enumerate(_LETTERS) if c}
        self._figs: dict[str, int] = {c: i for i, c in enumerate(figs) if c}
        self._shift_after_space = shift_after_space
        self._shift_repeat = shift_repeat
        self._unshift_on_space = unshift_on_space

    def encodable(self, char: str) -> bool:
        """Whether `char` (after case folding) has a code."""
        c = char.upper()
        return c in ("\n", "\t") or c in self._letters or c in self._figs

    def codes(self, text: str) -> list[int]:
        """The code sequence for `text`, starting with a shift."""
        out: list[int] = []
        shift: bool | None = None  # None: no shift sent yet; True: figures
        since_shift = 0
        after_space = False
        for raw in text.replace("\r\n", "\n"):
            for c in ("\r", "\n") if raw == "\n" else (" " if raw == "\t" else raw.upper(),):
                in_l, in_f = c in self._letters, c in self._figs
                if not (in_l or in_f):
                    continue
                # space, CR and LF exist in both cases: keep the current one
                want = bool(shift) if in_l and in_f else in_f
                need = (
                    shift is None
                    or want != shift
                    or since_shift >= self._shift_repeat
                    or (want and after_space and self._shift_after_space and not in_l)
                )
                if need:
                    out.append(FIGS if want else LTRS)
                    shift = want
                    since_shift = 0
                out.append(self._figs[c] if want and in_f else self._letters[c])
                since_shift += 1
                after_space = c == " "
                if after_space and self._unshift_on_space:
                    shift = False
        return out


# Plausibility of a character where the two shift readings differ (one in letters, the
# other in figures): English letter frequencies flattened towards uniform (callers type
# abbreviations and names), and in figures mostly digits. Only a tie-breaker until the
# sender's convention shows in its shifts.
_ENGLISH: Final = {
    "E": 12.7, "T": 9.1, "A": 8.2, "O": 7.5, "I": 7.0, "N": 6.7, "S": 6.3, "H": 6.1,
    "R": 6.0, "D": 4.3, "L": 4.0, "C": 2.8, "U": 2.8, "M": 2.4, "W": 2.4, "F": 2.2,
    "G": 2.0, "Y": 2.0, "P": 1.9, "B": 1.5, "V": 1.0, "K": 0.8, "J": 0.15, "X": 0.15,
    "Q": 0.1, "Z": 0.07,
}  # fmt: skip
_LP_LETTER: Final = {
    c: math.log(0.7 * f / sum(_ENGLISH.values()) + 0.3 / 26) for c, f in _ENGLISH.items()
}
_LP_DIGIT: Final = math.log(0.07)
_LP_PUNCT: Final = math.log(0.02)
_LP_ODD: Final = math.log(0.001)  # BELL, NUL, a code with no figure
EVIDENCE_NATS: Final = 8.0  # one redundant shift after a space, for the convention it shows
PLAUSIBILITY_CAP: Final = 6.0  # the most a reading's plausibility counts for
SWITCH_NATS: Final = 1.0  # how much likelier the other reading must be to be shown instead


def _plausibility(char: str, figures: bool) -> float:
    if not figures:
        return _LP_LETTER.get(char, _LP_ODD)
    if char.isdigit():
        return _LP_DIGIT
    return _LP_PUNCT if char and char != "\a" else _LP_ODD


class ShiftReader:
    """Codes to text under the sender's shift convention, found from the signal.

    Two readings run side by side: `U`, the sender unshifts on space (RTTY practice,
    minimodem), and `K`, it keeps the shift (TIA-825-A). They differ only after a space
    typed in figures, until the next shift. The convention shows in redundant shifts: a
    FIGS right after a space when the keep reading is still in figures is what an
    unshifting sender needs, and a LTRS there is what a keeping sender sends before
    letters (a redundant shift for the other reading either way). Until such evidence,
    the reading whose differing characters are the more plausible text (letters as
    letters, digits as figures) is shown; when evidence turns the choice, the differing
    span is read again: `read` then withdraws characters it gave before and gives the
    new reading. Nothing before the last CR or LF (or `commit`) is ever withdrawn.

    shift="unshift_on_space" or "keep" fixes the convention (one reading, no revisions).
    """

    def __init__(self, *, shift: ShiftConvention = "auto", figures: FiguresTable = "us") -> None:
        if shift not in SHIFT_CONVENTIONS:
            raise ValueError(f"shift must be one of {list(SHIFT_CONVENTIONS)}, not {shift!r}")
        self.shift: ShiftConvention = shift
        self._figs_table = figures_table(figures)
        self.evidence = 0.0  # nats for unshift-on-space (positive) over keep (negative)
        self._fig_u = self._fig_k = False
        self._fresh = True
        self._after_space = False
        self._pairs: list[tuple[str, str, float, int]] = []  # (U, K, time, code) since commit
        self._first_div: int | None = None
        self._plaus = 0.0  # log plausibility of the U reading over the K one, since commit
        self._chosen_u = shift == "unshift_on_space"

    @property
    def convention(self) -> ShiftConvention:
        """The convention the text is read with now ("auto" while there is no sign yet)."""
        if self.shift != "auto":
            return self.shift
        if self.evidence > 0:
            return "unshift_on_space"
        return "keep" if self.evidence < 0 else "auto"

    @property
    def figures(self) -> bool:
        """The shift state of the reading shown."""
        return self._fig_u if self._chosen_u else self._fig_k

    def reset(self) -> None:
        """A new transmission: back to letters (the convention learnt so far stays)."""
        self._fig_u = self._fig_k = False
        self._fresh = True
        self._after_space = False

    def forget(self) -> None:
        """A new caller: forget the convention learnt."""
        self.evidence = 0.0
        self.reset()
        self.commit()
        self._chosen_u = self.shift == "unshift_on_space"

    def commit(self) -> None:
        """What was read so far is final (the line was published)."""
        self._pairs.clear()
        self._first_div = None
        self._plaus = 0.0

    def _prior(self) -> npt.NDArray[np.float64]:
        if self._fresh:
            return _PRIOR_START
        fu, fk = self._fig_u, self._fig_k
        if self.shift == "unshift_on_space" or fu == fk:
            return _PRIOR_FIGURES if fu else _PRIOR_LETTERS
        if self.shift == "keep":
            return _PRIOR_FIGURES if fk else _PRIOR_LETTERS
        # The readings disagree on the shift: weigh each state by how likely its reading is.
        s = min(30.0, max(-30.0, self._score()))
        w_u = 1.0 / (1.0 + math.exp(-s))
        out: npt.NDArray[np.float64] = np.logaddexp(
            math.log(max(w_u, 1e-12)) + _PRIOR_LETTERS,
            math.log(max(1 - w_u, 1e-12)) + _PRIOR_FIGURES,
        )
        return out

    def decide(self, llr: npt.ArrayLike) -> int:
        """The most probable code given the 5 data-bit LLRs (mark positive) and the shift state."""
        return self.decide_codes(0.5 * (_CODE_BITS @ np.asarray(llr, dtype=np.float64)))

    def decide_codes(self, code_ll: npt.ArrayLike) -> int:
        """The most probable code given each code's log-likelihood and the shift state.

        With a clear frame this is the likeliest code; with an uncertain one the shift
        structure of TTY text breaks the tie (see _PRIOR_FIGURES).
        """
        return int(np.argmax(self._prior() + np.asarray(code_ll, dtype=np.float64)))

    def _score(self) -> float:
        # Plausibility only breaks ties: one redundant shift outweighs any span of text.
        return self.evidence + min(PLAUSIBILITY_CAP, max(-PLAUSIBILITY_CAP, self._plaus))

    def _choose(self) -> bool:
        if self.shift != "auto":
            return self.shift == "unshift_on_space"
        # The reading shown changes only when the other is clearly likelier, so that a few
        # characters of about even plausibility do not make it flicker.
        s = self._score()
        return s > -SWITCH_NATS if self._chosen_u else s > SWITCH_NATS

    def _shown(self, start: int, use_u: bool) -> list[tuple[str, float, int]]:
        pairs = self._pairs[start:]
        if use_u:
            return [(u, t, c) for u, _k, t, c in pairs if u]
        return [(k, t, c) for _u, k, t, c in pairs if k]

    def read(self, code: int, time: float = 0.0) -> tuple[int, list[tuple[str, float, int]]]:
        """Read one code (at `time`): how many characters given before are withdrawn, and
        the new characters (each with the time and code it was read from).

        Shifts and NUL give no character of their own, but a shift may change which
        reading is shown and so give a revision (characters read earlier, again).
        """
        if not 0 <= code < 32:
            raise ValueError(f"Baudot code out of range: {code}")
        self._fresh = False
        was_u = self._chosen_u
        if code in (LTRS, FIGS):
            if self._after_space and self._fig_k and not self._fig_u:
                # After a space typed in figures: FIGS is what an unshifting sender needs
                # and LTRS what a keeping sender needs; each is redundant for the other.
                self.evidence += EVIDENCE_NATS if code == FIGS else -EVIDENCE_NATS
            self._fig_u = self._fig_k = code == FIGS
            self._after_space = False
            new: list[tuple[str, float, int]] = []
        else:
            c_u = (self._figs_table if self._fig_u else _LETTERS)[code]
            c_k = (self._figs_table if self._fig_k else _LETTERS)[code]
            if c_u != c_k:
                if self._first_div is None:
                    self._first_div = len(self._pairs)
                self._plaus += _plausibility(c_u, self._fig_u) - _plausibility(c_k, self._fig_k)
            self._pairs.append((c_u, c_k, time, code))
            if code == SPACE:
                self._fig_u = False
            self._after_space = code == SPACE
            c = c_u if was_u else c_k
            new = [(c, time, code)] if c else []
        self._chosen_u = self._choose()
        retract = 0
        if self._chosen_u != was_u and self._first_div is not None:
            # The other reading is now the likelier: withdraw the differing span as shown
            # (without the character just read, not given yet) and give it again.
            start = self._first_div
            shown_before = self._shown(start, was_u)
            if new:
                shown_before = shown_before[: len(shown_before) - len(new)]
            retract = len(shown_before)
            new = self._shown(start, self._chosen_u)
        if code in (CR, LF):
            self.commit()
        return retract, new
