"""The Baudot character code: tables, shift insertion on send, shift state on receive."""

from __future__ import annotations

import pytest

from gateway.dsp.tty_baudot import FIGS, LTRS, SPACE, BaudotReader, BaudotWriter


def read_all(codes: list[int], **kwargs: object) -> str:
    reader = BaudotReader(**kwargs)  # type: ignore[arg-type]
    return "".join(reader.read(c) for c in codes)


def test_round_trip_of_every_encodable_character() -> None:
    text = "ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 -?:$!&#'(),.\"/;\a"
    codes = BaudotWriter().codes(text)
    assert read_all(codes) == text


def test_us_figures_differ_from_ita2_where_tia825_says() -> None:
    # D F G H J S V Z in figures: US TTY vs ITA2 (CCITT No. 2)
    letters = "DFGHJSVZ"
    writer = BaudotWriter()
    codes = [writer.codes(c)[-1] for c in letters]
    us = BaudotReader(figures="us")
    ita2 = BaudotReader(figures="ita2")
    us.read(FIGS)
    ita2.read(FIGS)
    assert [us.read(c) for c in codes] == ["$", "!", "&", "#", "'", "\a", ";", '"']
    assert [ita2.read(c) for c in codes] == ["", "", "", "", "\a", "'", "=", "+"]


def test_writer_starts_with_a_shift_and_shifts_only_when_needed() -> None:
    assert BaudotWriter().codes("AB") == [LTRS, 0x03, 0x19]
    assert BaudotWriter().codes("12") == [FIGS, 0x17, 0x13]
    assert BaudotWriter().codes("A1B") == [LTRS, 0x03, FIGS, 0x17, LTRS, 0x19]


def test_writer_repeats_figs_after_space_so_usos_receivers_agree() -> None:
    codes = BaudotWriter().codes("12 34")
    assert codes == [FIGS, 0x17, 0x13, SPACE, FIGS, 0x01, 0x0A]
    # A TTY-style receiver and an unshift-on-space receiver read the same text.
    assert read_all(codes) == "12 34"
    assert read_all(codes, unshift_on_space=True) == "12 34"
    plain = BaudotWriter(shift_after_space=False).codes("12 34")
    assert plain == [FIGS, 0x17, 0x13, SPACE, 0x01, 0x0A]


def test_receiver_keeps_figures_across_a_space_unless_told_otherwise() -> None:
    # What a TTY sends for "12 34" when it does not repeat FIGS after the space.
    codes = [FIGS, 0x17, 0x13, SPACE, 0x01, 0x0A]
    assert read_all(codes) == "12 34"
    assert read_all(codes, unshift_on_space=True) == "12 ER"


def test_shift_is_repeated_every_72_characters() -> None:
    codes = BaudotWriter().codes("A" * 80)
    assert [i for i, c in enumerate(codes) if c == LTRS] == [0, 73]


def test_newline_tab_case_and_unencodable_characters() -> None:
    writer = BaudotWriter()
    assert read_all(writer.codes("ok\nno\tgo")) == "OK\r\nNO GO"
    assert read_all(writer.codes("a%b*c")) == "ABC"
    assert not writer.encodable("%")
    assert writer.encodable("q")


def test_soft_decision_keeps_a_marginal_ltrs_after_figures() -> None:
    reader = BaudotReader()
    reader.read(FIGS)
    reader.read(0x17)
    # LTRS (11111) with its last bit slightly on the space side: in figures, LTRS is due.
    assert reader.decide([9.0, 9.0, 9.0, 9.0, -0.5]) == LTRS
    # A clear decision is not overruled.
    assert reader.decide([9.0, 9.0, 9.0, 9.0, -9.0]) == 0x0F


@pytest.mark.parametrize("bad", [-1, 32])
def test_codes_out_of_range_are_refused(bad: int) -> None:
    with pytest.raises(ValueError):
        BaudotReader().read(bad)


def test_unknown_figures_table_is_refused() -> None:
    with pytest.raises(ValueError):
        BaudotWriter(figures="uk")  # type: ignore[arg-type]
