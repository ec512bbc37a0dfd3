"""The caller's shift convention: both kinds of sender, read right without being told which.

A sender that unshifts on space (minimodem, RTTY software) sends no LTRS after a space and
FIGS again before figures; one that keeps the shift (TIA-825-A) sends no FIGS after a space
in figures and LTRS before letters. The decoder shows the more plausible reading until a
redundant shift gives the convention away, then reads the span again.
"""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from gateway.dsp.tty import (
    TtyChar,
    TtyDecoder,
    TtyEncoder,
    TtyEvent,
    TtyRetract,
    final_text,
)
from gateway.dsp.tty_baudot import FIGS, LTRS, SPACE, BaudotWriter, ShiftConvention, ShiftReader
from hw_sim.phone_line import add_noise

FS = 8000
ADDRESSES = [
    "1234 MAIN ST APT 5B",
    "CALL 555 1212 NOW",
    "CALL 911 555 1212 HELLO",
    "UNIT 12 ETA 5 MIN GA",
]
Audio = npt.NDArray[np.float32]


def writer(convention: str) -> BaudotWriter:
    return BaudotWriter(
        shift_after_space=convention == "both", unshift_on_space=convention == "unshift_on_space"
    )


def convention_of(reader: ShiftReader) -> ShiftConvention:
    """The reader's convention read afresh: mypy keeps `reader.convention` narrowed to what an
    earlier assert found, across the calls that change it."""
    return reader.convention


def read(codes: list[int], shift: ShiftConvention = "auto") -> tuple[str, int]:
    """The final text and how many times characters were withdrawn."""
    reader = ShiftReader(shift=shift)
    text: list[str] = []
    retracts = 0
    for code in codes:
        n, new = reader.read(code)
        if n:
            retracts += 1
            del text[len(text) - n :]
        text.extend(c for c, _t, _code in new)
    return "".join(text), retracts


@pytest.mark.parametrize("text", ADDRESSES)
@pytest.mark.parametrize("convention", ["unshift_on_space", "keep", "both"])
def test_auto_reads_either_sender(text: str, convention: str) -> None:
    assert read(writer(convention).codes(text))[0] == text


def test_each_fixed_convention_misreads_the_other_sender() -> None:
    unshifting = writer("unshift_on_space").codes("CALL 911 555 1212 HELLO")
    keeping = writer("keep").codes("CALL 555 1212 NOW")
    assert read(unshifting, "keep")[0] == "CALL 911 555 1212 #3))9"
    assert read(unshifting, "unshift_on_space")[0] == "CALL 911 555 1212 HELLO"
    assert read(keeping, "unshift_on_space")[0] == "CALL 555 QWQW NOW"
    assert read(keeping, "keep")[0] == "CALL 555 1212 NOW"


def test_a_redundant_shift_after_a_space_gives_the_convention_away() -> None:
    reader = ShiftReader()
    for code in writer("unshift_on_space").codes("12 34"):  # FIGS again after the space
        reader.read(code)
    assert reader.convention == "unshift_on_space"
    reader = ShiftReader()
    for code in writer("keep").codes("12 AB"):  # LTRS after the space in figures
        reader.read(code)
    assert reader.convention == "keep"
    # A sender that sends both (ours) gives no net evidence, and needs none.
    reader = ShiftReader()
    for code in writer("both").codes("12 34 AB"):
        reader.read(code)
    assert reader.convention == "auto"


def test_the_ambiguous_span_is_read_again_when_the_evidence_comes() -> None:
    # "TOP" after "12 " reads as plausible figures ("590") until FIGS is sent again before
    # "55": only an unshifting sender needs that, so "TOP" was letters.
    codes = writer("unshift_on_space").codes("UNIT 12 TOP 55")
    text, retracts = read(codes)
    assert text == "UNIT 12 TOP 55"
    assert retracts >= 1
    # No revision reaches back past a line end: that line was published as it read then.
    reader = ShiftReader()
    shown: list[str] = []
    for code in writer("unshift_on_space").codes("UNIT 12 TOP\n 55"):
        n, new = reader.read(code)
        line_start = "".join(shown).rfind("\n") + 1
        assert n <= len(shown) - line_start
        del shown[len(shown) - n :]
        shown.extend(c for c, _t, _code in new)
    assert "".join(shown) == "UNIT 12 590\r\n 55"
    assert reader.convention == "unshift_on_space"


def test_the_convention_learnt_holds_for_the_next_lines_of_the_call() -> None:
    reader = ShiftReader()
    for code in writer("keep").codes("12 AB\r\n"):
        reader.read(code)
    assert reader.convention == "keep"
    text: list[str] = []
    for code in [FIGS, 0x17, SPACE, 0x13]:  # "1 2", FIGS not sent again: keep reads "2"
        n, new = reader.read(code)
        del text[len(text) - n :]
        text.extend(c for c, _t, _code in new)
    assert "".join(text) == "1 2"
    reader.forget()  # a new caller
    assert convention_of(reader) == "auto"


def test_codes_decided_with_the_prior_of_the_likelier_reading() -> None:
    reader = ShiftReader(shift="unshift_on_space")
    for code in (FIGS, 0x17, SPACE):
        reader.read(code)
    # After the space an unshifting reader is in letters: a FIGS is not unusual there.
    assert reader.decide([9.0, 9.0, -9.0, 9.0, 9.0]) == FIGS
    assert not reader.figures
    keeping = ShiftReader(shift="keep")
    for code in (FIGS, 0x17, SPACE):
        keeping.read(code)
    assert keeping.figures
    assert keeping.decide([9.0, 9.0, 9.0, 9.0, -0.5]) == LTRS


def test_refuses_an_unknown_convention() -> None:
    with pytest.raises(ValueError, match="shift"):
        ShiftReader(shift="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shift"):
        TtyDecoder(shift="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="convention"):
        TtyEncoder(convention="sometimes")  # type: ignore[arg-type]


# -- through the modem -------------------------------------------------------------------


def noisy(x: Audio, snr_db: float, seed: int) -> Audio:
    pad = np.zeros(FS // 2, np.float32)
    p = float(np.mean(x.astype(np.float64) ** 2))
    return add_noise(
        np.concatenate([pad, x, pad]),
        snr_db,
        sample_rate=FS,
        signal_power=p,
        rng=np.random.default_rng(seed),
    )


def decode(x: Audio, **kwargs: object) -> list[TtyEvent]:
    dec = TtyDecoder(**kwargs)  # type: ignore[arg-type]
    return dec.feed(x) + dec.flush()


def minimodem_tx(tmp_path: Path, text: str) -> Audio:
    path = tmp_path / "mm.wav"
    subprocess.run(
        ["minimodem", "--tx", "tdd", "-R", str(FS), "-f", str(path)],
        input=text.encode(),
        check=True,
        timeout=60,
    )
    with wave.open(str(path)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return (pcm / 32768.0 * 0.5).astype(np.float32)


LINE = "CALL 555 1212 NOW AT 1234 MAIN ST APT 5B"


@pytest.mark.skipif(shutil.which("minimodem") is None, reason="minimodem not installed")
@pytest.mark.parametrize("seed", [1, 2])
def test_minimodem_an_unshifting_sender_reads_right_by_default(tmp_path: Path, seed: int) -> None:
    x = noisy(minimodem_tx(tmp_path, LINE), 0.0, seed)
    assert final_text(decode(x)) == LINE
    assert final_text(decode(x, shift="keep")) != LINE


@pytest.mark.parametrize("seed", [1, 2])
def test_a_keep_shift_sender_reads_right_by_default(seed: int) -> None:
    enc = TtyEncoder(convention="keep", amplitude=0.5)
    x = noisy(enc.encode(LINE), 0.0, seed)
    assert final_text(decode(x)) == LINE
    assert final_text(decode(x, shift="unshift_on_space")) != LINE
    assert final_text(decode(x, unshift_on_space=False)) == LINE  # the old switch


def test_revised_characters_say_so_and_keep_their_times() -> None:
    text = "UNIT 12 TOP 55"
    enc = TtyEncoder(convention="unshift_on_space", amplitude=0.5)
    events = decode(noisy(enc.encode(text), 10.0, 3))
    assert final_text(events) == text
    retracts = [i for i, e in enumerate(events) if isinstance(e, TtyRetract)]
    assert retracts, "the span after '12 ' was read again"
    after = events[retracts[-1] + 1 :]
    revised = [e for e in after if isinstance(e, TtyChar) and e.revised]
    assert [e.char for e in revised][:3] == ["T", "O", "P"]
    times = [e.time for e in after if isinstance(e, TtyChar)]
    assert times == sorted(times) and times[0] < events[retracts[-1]].time


def test_shift_errors_none_above_0_db_for_both_senders() -> None:
    """The issue's bar: text with numbers and addresses, either convention, from 0 dB up."""
    for convention in ("unshift_on_space", "keep"):
        enc = TtyEncoder(convention=convention, amplitude=0.5)
        for k, line in enumerate(ADDRESSES):
            for snr in (0.0, 6.0):
                got = final_text(decode(noisy(enc.encode(line), snr, 100 + k)))
                assert got == line, (convention, snr, line, got)
