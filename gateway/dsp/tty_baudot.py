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
space, while the RTTY convention (and minimodem) does. The receiver therefore defaults to
*not* unshifting; the transmitter re-sends FIGS after a space, which reads the same on both
kinds of receiver.
"""

from __future__ import annotations

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
    Lower case is folded to upper case, "\\n" becomes CR LF, a tab becomes a space, and
    characters with no Baudot code are dropped (`encodable()` tells which).
    """

    def __init__(
        self,
        *,
        figures: FiguresTable = "us",
        shift_after_space: bool = True,
        shift_repeat: int = 72,
    ) -> None:
        if shift_repeat < 1:
            raise ValueError("shift_repeat must be >= 1")
        figs = figures_table(figures)
        self._letters: dict[str, int] = {c: i for i, c in enumerate(_LETTERS) if c}
        self._figs: dict[str, int] = {c: i for i, c in enumerate(figs) if c}
        self._shift_after_space = shift_after_space
        self._shift_repeat = shift_repeat

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
        return out
