"""The TTY front end's exact shortcuts: what they replace must come out bit for bit, or
a stream would decode differently depending on the code path (tests/dsp/test_tty_modem.py
checks the decoding itself)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gateway.dsp.tty_demod import MARK_HZ, PAIR_TOLERANCE_HZ, SPACE_HZ, FrontEnd, _mod_2pi

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


def _hold_one_by_one(
    est: tuple[float, float],
    mark_f: np.ndarray,
    mark_sig: np.ndarray,
    space_f: np.ndarray,
    space_sig: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """FrontEnd._hold as it was first written, hop by hop: the reference."""
    mark, space = np.empty_like(mark_f), np.empty_like(space_f)
    m, sp = est
    for r in range(len(mark_f)):
        ms, ss = bool(mark_sig[r]), bool(space_sig[r])
        if ms:
            m = float(mark_f[r])
        if ss:
            sp = float(space_f[r])
        if ms and not ss:
            guess = m + (SPACE_HZ - MARK_HZ) * (1.0 + 0.5 * (m / MARK_HZ - 1.0))
            if abs(sp - guess) > PAIR_TOLERANCE_HZ:
                sp = guess
        elif ss and not ms:
            guess = sp - (SPACE_HZ - MARK_HZ) * (1.0 + 0.5 * (sp / SPACE_HZ - 1.0))
            if abs(m - guess) > PAIR_TOLERANCE_HZ:
                m = guess
        mark[r], space[r] = m, sp
    return mark, space, (m, sp)


HOPS = st.integers(0, 60).flatmap(
    lambda n: st.tuples(
        arrays(np.float64, n, elements=st.floats(1300.0, 1500.0)),
        arrays(np.bool_, n),
        arrays(np.float64, n, elements=st.floats(1700.0, 1900.0)),
        arrays(np.bool_, n),
    )
)


@settings(max_examples=400, deadline=None)
@given(HOPS, st.floats(1300.0, 1500.0), st.floats(1700.0, 1900.0))
def test_hold_matches_the_hop_by_hop_reference(
    hops: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], est_m: float, est_s: float
) -> None:
    ref_mark, ref_space, ref_est = _hold_one_by_one((est_m, est_s), *hops)
    fe = FrontEnd(8000.0)
    fe._est_mark, fe._est_space = est_m, est_s
    mark, space = fe._hold(*hops)
    assert np.array_equal(mark, ref_mark) and np.array_equal(space, ref_space)
    assert (fe._est_mark, fe._est_space) == ref_est


SPECTRA = st.integers(1, 12).flatmap(
    lambda n: st.tuples(
        arrays(np.float64, (n, 40), elements=st.floats(0.0, 1e6)),
        arrays(np.float64, n, elements=st.floats(1e-9, 1e5)),
    )
)


@settings(max_examples=300, deadline=None)
@given(SPECTRA)
def test_peak_search_hop_by_hop_matches_the_bulk_one(
    spectra: tuple[np.ndarray, np.ndarray],
) -> None:
    """The front end searches a few hops' peaks one by one (a sound card's block) and many
    in bulk: the same frequencies and verdicts, bit for bit, or block sizes would decode
    differently."""
    avg, floor = spectra
    fe = FrontEnd(8000.0)
    for sel in (fe._mark_sel, fe._space_sel):
        sub = avg[:, : sel.stop - sel.start]
        bulk_f, bulk_sig = fe._track_bulk(sub, floor, sel)
        each_f, each_sig = fe._track_each(sub, floor, sel)
        assert np.array_equal(bulk_f, each_f) and np.array_equal(bulk_sig, each_sig)


BANDS = st.integers(1, 12).flatmap(
    lambda n: st.tuples(
        arrays(np.float64, (n, 119), elements=st.floats(0.0, 1e6)),
        arrays(np.float64, n, elements=st.floats(1e-9, 1e4)),
        arrays(np.float64, n, elements=st.floats(1300.0, 1500.0)),
        arrays(np.float64, n, elements=st.floats(1700.0, 1900.0)),
    )
)


@settings(max_examples=300, deadline=None)
@given(BANDS)
def test_presence_hop_by_hop_matches_the_bulk_one(
    band: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> None:
    avg2, floor, mark, space = band
    fe = FrontEnd(8000.0)
    avg2 = avg2[:, : len(fe._band_f)]
    bulk = FrontEnd._presence(
        fe, np.concatenate([avg2] * 9), *(np.tile(v, 9) for v in (floor, mark, space))
    )
    each = fe._presence_each(avg2, floor, mark, space)
    n = len(avg2)
    assert np.array_equal(bulk[0][:n], each[0]) and np.array_equal(bulk[1][:n], each[1])
