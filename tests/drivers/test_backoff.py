"""drivers.backoff: the one reconnect policy every reopen loop uses."""

from __future__ import annotations

import asyncio
import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.backoff import Backoff

seconds = st.floats(min_value=0.001, max_value=3600.0, allow_nan=False, allow_infinity=False)
factors = st.floats(min_value=1.0, max_value=10.0, allow_nan=False, allow_infinity=False)


def test_the_delays_the_loops_had() -> None:
    # The radio channel's loop before the helper: 0.2 doubling up to its cap.
    backoff = Backoff(0.2, 5.0)
    assert [backoff.next() for _ in range(8)] == pytest.approx(
        [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]
    )
    backoff.reset()
    assert backoff.delay_s == 0.2
    assert backoff.next() == 0.2


def test_first_wait_is_initial_even_above_the_cap() -> None:
    # A channel with reopen_backoff_max_s below 0.2 waited 0.2 s first, then the cap.
    backoff = Backoff(0.2, 0.1)
    assert [backoff.next() for _ in range(3)] == [0.2, 0.1, 0.1]


@given(initial=seconds, maximum=seconds, factor=factors, failures=st.integers(0, 60))
def test_each_wait_is_the_previous_times_factor_capped(
    initial: float, maximum: float, factor: float, failures: int
) -> None:
    backoff = Backoff(initial, maximum, factor=factor)
    delays = [backoff.next() for _ in range(failures + 1)]
    assert delays[0] == initial
    for before, after in itertools.pairwise(delays):
        assert after == min(before * factor, maximum)
        assert after <= max(initial, maximum)
    if maximum >= initial:
        assert delays == sorted(delays)  # never shorter while failures go on
    backoff.reset()
    assert backoff.next() == initial


@given(initial=seconds, maximum=seconds, failures=st.integers(0, 60))
def test_delay_s_is_what_next_gives(initial: float, maximum: float, failures: int) -> None:
    backoff = Backoff(initial, maximum)
    for _ in range(failures):
        announced = backoff.delay_s
        assert backoff.next() == announced


@pytest.mark.parametrize(
    ("initial", "maximum", "factor"),
    [
        (0.0, 1.0, 2.0),
        (-1.0, 1.0, 2.0),
        (math.nan, 1.0, 2.0),
        (1.0, 0.0, 2.0),
        (1.0, math.inf, 2.0),
        (1.0, 2.0, 0.5),
        (1.0, 2.0, math.nan),
    ],
)
def test_nonsense_is_refused(initial: float, maximum: float, factor: float) -> None:
    with pytest.raises(ValueError):
        Backoff(initial, maximum, factor=factor)


async def test_sleep_waits_the_next_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    async def fake_sleep(delay: float) -> None:
        slept.append(delay)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    backoff = Backoff(0.5, 1.5)
    for _ in range(4):
        await backoff.sleep()
    assert slept == [0.5, 1.0, 1.5, 1.5]
