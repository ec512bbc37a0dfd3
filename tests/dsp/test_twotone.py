"""Two-tone sequential paging: the configured pages heard at every rate, timing and
tolerance limits, pages that are not configured (other tones, reversed order), stacked
pages, long tones, noise, block splits and hostile samples.

No independent decoder of two-tone paging is packaged for Debian (multimon-ng has none),
so the reference here is the format itself: Quick Call II tones and 1 s / 3 s timing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.dsp.twotone import Page, PageDetected, TwoToneDecoder, TwoToneSettings, page_signal
from hw_sim.phone_line import add_noise
from tests.dsp.signal_tools import band_noise, feed_in_pieces

F32 = np.float32
PAGES = [
    Page("Station 1", 321.7, 339.6),
    Page("Station 1 reversed", 339.6, 321.7),
    Page("Engine 5", 600.9, 788.5),
    Page("Rescue 2", 1122.5, 1472.9),
    Page.long_tone("All call", 445.7),
]


def decode(x: np.ndarray, rate: int, s: TwoToneSettings | None = None) -> list[PageDetected]:
    decoder = TwoToneDecoder(rate, PAGES, s)
    return decoder.feed(x) + decoder.flush()


def names(events: list[PageDetected]) -> list[str]:
    return [e.name for e in events]


def pages_audio(rate: int, *pages: tuple[float, float | None], **kw: float) -> np.ndarray:
    gap = np.zeros(rate, dtype=F32)  # stacked pages: a second apart
    parts = [gap]
    for a, b in pages:
        parts += [page_signal(a, b, rate, **kw), gap]
    return np.concatenate(parts)


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 48000])
def test_stacked_pages_at_every_rate(rate: int) -> None:
    x = pages_audio(rate, (321.7, 339.6), (339.6, 321.7), (600.9, 788.5), (1122.5, 1472.9))
    events = decode(x, rate)
    assert names(events) == ["Station 1", "Station 1 reversed", "Engine 5", "Rescue 2"]
    first = events[0]
    assert first.a_hz == pytest.approx(321.7, abs=0.3)
    assert first.b_hz == pytest.approx(339.6, abs=0.3)
    assert first.a_s == pytest.approx(1.0, abs=0.1) and first.b_s == pytest.approx(3.0, abs=0.1)
    assert first.start == pytest.approx(1.0, abs=0.1) and first.end == pytest.approx(5.0, abs=0.1)


def test_a_long_tone_is_told_once_it_is_long_enough() -> None:
    x = pages_audio(8000, (445.7, None), a_s=10.0)
    (event,) = decode(x, 8000)
    assert event.name == "All call" and event.b_hz is None
    assert 6.0 <= event.a_s < 7.5, "told at 6 s (0.75 of 8), not at the tone's end"
    assert decode(pages_audio(8000, (445.7, None), a_s=5.0), 8000) == []


@pytest.mark.parametrize(
    ("a_s", "b_s", "heard"),
    [
        (1.0, 3.0, True),
        (0.8, 2.4, True),
        (1.5, 6.0, True),
        (0.5, 3.0, False),
        (1.0, 1.5, False),
        (2.0, 3.0, False),
    ],
)
def test_timing(a_s: float, b_s: float, heard: bool) -> None:
    x = pages_audio(8000, (600.9, 788.5), a_s=a_s, b_s=b_s)
    assert names(decode(x, 8000)) == (["Engine 5"] if heard else [])


@pytest.mark.parametrize(("offset", "heard"), [(0.01, True), (-0.012, True), (0.025, False)])
def test_tolerance(offset: float, heard: bool) -> None:
    x = pages_audio(8000, (1122.5, 1472.9), offset=offset)
    assert names(decode(x, 8000)) == (["Rescue 2"] if heard else [])


def test_pages_not_configured_are_not_heard() -> None:
    """Neighbouring Quick Call II tones (330.5/349.0, 2.7 % from the configured ones), a
    configured A with another B, and A alone are no page."""
    x = pages_audio(8000, (330.5, 349.0), (321.7, 788.5), (600.9, 600.9 * 1.1))
    x = np.concatenate([x, page_signal(600.9, None, 8000, a_s=1.0), np.zeros(8000, F32)])
    assert decode(x, 8000) == []


def test_pages_in_noise() -> None:
    rng = np.random.default_rng(4)
    x = pages_audio(8000, (321.7, 339.6), (600.9, 788.5), (1122.5, 1472.9))
    power = (10 ** (-10 / 20)) ** 2 / 2
    y = add_noise(x, -5.0, sample_rate=8000, signal_power=power, rng=rng).astype(F32)
    assert names(decode(y, 8000)) == ["Station 1", "Engine 5", "Rescue 2"]


def test_no_page_in_two_minutes_of_noise() -> None:
    rng = np.random.default_rng(8)
    assert decode((0.3 * band_noise(120 * 8000, 8000, rng)).astype(F32), 8000) == []


@settings(max_examples=25, deadline=None)
@given(
    cuts=st.lists(st.integers(min_value=1, max_value=20000), min_size=1, max_size=30),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_any_split_of_the_input_gives_the_same_events(cuts: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = np.concatenate([pages_audio(8000, (321.7, 339.6)), pages_audio(8000, (445.7, None), a_s=8)])
    x = (x + 0.05 * band_noise(len(x), 8000, rng)).astype(F32)
    whole = decode(x, 8000)
    pieces = feed_in_pieces(TwoToneDecoder(8000, PAGES), x, cuts)
    assert pieces == whole
    assert names(whole) == ["Station 1", "All call"]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.floats(allow_nan=True, allow_infinity=True),
            st.sampled_from([0.0, 1.0, -1.0, 1e300]),
        ),
        max_size=2000,
    )
)
def test_hostile_samples_raise_nothing(block: list[float]) -> None:
    decoder = TwoToneDecoder(8000, PAGES)
    for _ in range(3):
        assert all(isinstance(e, PageDetected) for e in decoder.feed(block))
    decoder.flush()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="no pages"):
        TwoToneDecoder(8000, [])
    with pytest.raises(ValueError, match="same name"):
        TwoToneDecoder(8000, [Page("x", 400, 500), Page("x", 600, 700)])
    with pytest.raises(ValueError, match="differ by 1 %"):
        Page("x", 400, 401)
    with pytest.raises(ValueError, match="200-3000 Hz"):
        Page("x", 100, 400)
    with pytest.raises(ValueError, match="tolerance"):
        TwoToneSettings(tolerance=0.2)
    with pytest.raises(ValueError, match="200-3000 Hz"):
        page_signal(5000.0, None, 8000)
