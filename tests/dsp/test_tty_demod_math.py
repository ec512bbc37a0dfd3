"""The TTY front end's exact shortcuts: what they replace must come out bit for bit, or
a stream would decode differently depending on the code path (tests/dsp/test_tty_modem.py
checks the decoding itself)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gateway.dsp.tty_demod import _mod_2pi

PHASES = arrays(
    np.float64,
    st.integers(1, 200),
    elements=st.one_of(
        st.floats(-1e9, 1e9, allow_nan=False),  # mixer phases: large positive sums
        st.floats(0.0, 2.0**27 * 2 * np.pi, allow_nan=False),  # past the exact quotient
        st.sampled_from([0.0, -0.0, 2 * np.pi, np.nextafter(2 * np.pi, 0), 4 * np.pi]),
    ),
)


@settings(max_examples=400, deadline=None)
@given(PHASES)
def test_mod_2pi_is_numpys_bit_for_bit(a: np.ndarray) -> None:
    expected = np.mod(a, 2 * np.pi)
    got = _mod_2pi(a.copy())
    assert np.array_equal(got.view(np.int64), expected.view(np.int64)), (a, got, expected)


def test_mod_2pi_on_a_mixers_phase_ramp() -> None:
    """Twenty minutes of a 1800 Hz mixer at 8 kHz, the phases the front end reduces."""
    n = np.arange(20 * 60 * 8000, dtype=np.float64)
    phase = 2 * np.pi * 1800.0 / 8000.0 * n
    assert np.array_equal(_mod_2pi(phase).view(np.int64), np.mod(phase, 2 * np.pi).view(np.int64))
