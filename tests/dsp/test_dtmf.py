"""The DTMF decoder and encoder (gateway.dsp.dtmf): keys, Q.24 timing and tolerances, any
block split, hostile samples, noise, and multimon-ng (Debian) as the independent reference
on both sides: it reads our encoder's tones, we read the same files it reads."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.dsp.dtmf import (
    DIGITS,
    HIGH_HZ,
    KEYS,
    LOW_HZ,
    DtmfDecoder,
    DtmfDigit,
    DtmfEvent,
    DtmfSequence,
    DtmfSettings,
    dtmf_signal,
)
from tests.dsp.signal_tools import MULTIMON_RATE, band_noise, multimon_binary, padded

F32 = np.float32


def decode(x: np.ndarray, rate: int, settings: DtmfSettings | None = None) -> list[DtmfEvent]:
    decoder = DtmfDecoder(rate, settings)
    return decoder.feed(x) + decoder.flush()


def digits_of(events: list[DtmfEvent]) -> str:
    return "".join(e.digit for e in events if isinstance(e, DtmfDigit))


def test_the_keypad_is_q23s() -> None:
    """Each key's pair as ITU-T Q.23 assigns it (0 is 941 + 1336 Hz, # is 941 + 1477 Hz)."""
    assert KEYS[3] == "*0#D"
    assert (LOW_HZ[3], HIGH_HZ[1]) == (941.0, 1336.0)
    assert DIGITS.index("0") == 13 and DIGITS.index("#") == 14


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
def test_every_key_at_every_rate(rate: int) -> None:
    events = decode(padded(dtmf_signal(DIGITS, rate, on_s=0.05, off_s=0.05), rate), rate)
    digits = [e for e in events if isinstance(e, DtmfDigit)]
    assert "".join(d.digit for d in digits) == DIGITS
    for d in digits:
        index = DIGITS.index(d.digit)
        assert d.low_hz == pytest.approx(LOW_HZ[index // 4], rel=0.003)
        assert d.high_hz == pytest.approx(HIGH_HZ[index % 4], rel=0.003)
        assert d.level_dbfs == pytest.approx(-10.0, abs=1.0)
        assert abs(d.twist_db) < 0.5
        assert d.end - d.start == pytest.approx(0.05, abs=0.012)
    sequences = [e for e in events if isinstance(e, DtmfSequence)]
    assert [s.digits for s in sequences] == [DIGITS]
    assert sequences[0].start == pytest.approx(0.25, abs=0.005)


def test_times_and_sequences() -> None:
    rate = 8000
    part = dtmf_signal("911", rate, on_s=0.08, off_s=0.07)
    gap = np.zeros(2 * rate, dtype=F32)  # over sequence_gap_s: two sequences
    events = decode(np.concatenate((gap, part, gap, part)), rate)
    sequences = [e for e in events if isinstance(e, DtmfSequence)]
    assert [s.digits for s in sequences] == ["911", "911"]
    assert sequences[0].start == pytest.approx(2.0, abs=0.005)
    assert sequences[1].start == pytest.approx(4.45, abs=0.005)
    # A sequence is told as soon as its gap has passed, before what follows.
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["DtmfDigit"] * 3 + ["DtmfSequence"] + ["DtmfDigit"] * 3 + ["DtmfSequence"]


@pytest.mark.parametrize(
    ("on_s", "off_s", "expected"),
    [
        (0.040, 0.040, "123"),  # Q.24: 40 ms tones with 40 ms pauses are accepted
        (0.020, 0.040, ""),  # under 23 ms: rejected
        (0.060, 0.040, "555"),  # one key repeated, the pauses seen
    ],
)
def test_q24_timing(on_s: float, off_s: float, expected: str) -> None:
    rate = 8000
    keys = expected or "123"
    x = padded(dtmf_signal(keys, rate, on_s=on_s, off_s=off_s), rate)
    assert digits_of(decode(x, rate)) == expected


def test_a_dropout_of_10_ms_does_not_split_a_digit() -> None:
    rate = 8000
    tone = dtmf_signal("7", rate, on_s=0.06, off_s=0.0)
    x = padded(np.concatenate((tone, np.zeros(rate // 100, dtype=F32), tone)), rate)
    events = decode(x, rate)
    assert digits_of(events) == "7"


@pytest.mark.parametrize(
    ("offset", "heard"),
    [(0.015, True), (-0.015, True), (0.035, False), (-0.035, False)],
)
def test_frequency_tolerance(offset: float, heard: bool) -> None:
    """Q.24: a tone 1.5 % off must be accepted, one 3.5 % off rejected."""
    rate = 8000
    x = padded(dtmf_signal("159D", rate, on_s=0.07, off_s=0.07, offset=offset), rate)
    assert digits_of(decode(x, rate)) == ("159D" if heard else "")


@pytest.mark.parametrize(("twist", "heard"), [(6.0, True), (-6.0, True), (12.0, False)])
def test_twist(twist: float, heard: bool) -> None:
    rate = 8000
    x = padded(dtmf_signal("2580", rate, on_s=0.07, off_s=0.07, twist_db=twist), rate)
    assert digits_of(decode(x, rate)) == ("2580" if heard else "")


def test_levels_from_loud_to_the_floor() -> None:
    rate = 8000
    for level, heard in ((-3.0, True), (-40.0, True), (-50.0, False)):
        x = padded(dtmf_signal("46", rate, on_s=0.07, level_dbfs=level), rate)
        assert digits_of(decode(x, rate)) == ("46" if heard else ""), level


@settings(max_examples=40, deadline=None)
@given(
    cuts=st.lists(st.integers(min_value=1, max_value=3000), min_size=1, max_size=40),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_any_split_of_the_input_gives_the_same_events(cuts: list[int], seed: int) -> None:
    rate = 8000
    rng = np.random.default_rng(seed)
    keys = "".join(rng.choice(list(DIGITS), 6))
    x = padded(dtmf_signal(keys, rate, on_s=0.05, off_s=0.06), rate)
    x = (x + 0.05 * band_noise(len(x), rate, rng)).astype(F32)
    whole = decode(x, rate)
    decoder = DtmfDecoder(rate)
    parts: list[DtmfEvent] = []
    start = 0
    for cut in cuts * (len(x) // max(1, sum(cuts)) + 1):
        parts.extend(decoder.feed(x[start : start + cut]))
        start += cut
        if start >= len(x):
            break
    parts.extend(decoder.feed(x[start:]))
    parts.extend(decoder.flush())
    assert parts == whole
    assert digits_of(whole) == keys


@settings(max_examples=60, deadline=None)
@given(
    block=st.one_of(
        st.lists(
            st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=0, max_size=600
        ),
        st.lists(st.floats(min_value=-1e30, max_value=1e30), min_size=0, max_size=600),
    )
)
def test_hostile_samples_raise_nothing(block: list[float]) -> None:
    decoder = DtmfDecoder(8000)
    for _ in range(3):
        for event in decoder.feed(np.array(block, dtype=np.float64)):
            assert isinstance(event, DtmfDigit | DtmfSequence)
    decoder.flush()


def test_no_digit_in_a_minute_of_noise() -> None:
    rate = 8000
    rng = np.random.default_rng(2026)
    for level in (0.001, 0.03, 0.3):
        noise = (level * band_noise(60 * rate, rate, rng)).astype(F32)
        assert digits_of(decode(noise, rate)) == "", level


def test_digits_in_noise_at_0_db() -> None:
    """SNR 0 dB: the pair's power while on equals the noise's in its 3 kHz band."""
    rate = 8000
    rng = np.random.default_rng(12)
    keys = "".join(rng.choice(list(DIGITS), 48))
    x = padded(dtmf_signal(keys, rate, on_s=0.1, off_s=0.1, level_dbfs=-16.0), rate)
    on_power = 2 * (10 ** (-16 / 20)) ** 2 / 2
    x = (x + np.sqrt(on_power) * band_noise(len(x), rate, rng)).astype(F32)
    assert digits_of(decode(x, rate)) == keys


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        DtmfDecoder(4000)
    with pytest.raises(ValueError, match="sample_rate"):
        DtmfDecoder(True)
    with pytest.raises(ValueError, match="min_on_s"):
        DtmfSettings(min_on_s=0)
    with pytest.raises(ValueError, match="max_offset"):
        DtmfSettings(max_offset=0.2)
    with pytest.raises(ValueError, match="not DTMF digits"):
        dtmf_signal("12E", 8000)


# ---------------------------------------------------------------------- multimon-ng


def multimon_dtmf(x: np.ndarray) -> str:
    pcm = np.clip(np.rint(x * 32767.0), -32768, 32767).astype("<i2").tobytes()
    out = subprocess.run(
        [multimon_binary(), "-q", "-a", "DTMF", "-t", "raw", "-"],
        input=pcm,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    return "".join(
        line.split("DTMF: ", 1)[1].strip() for line in out.splitlines() if "DTMF: " in line
    )


def test_multimon_ng_reads_our_tones_and_we_read_what_it_reads() -> None:
    """Our encoder, decoded by multimon-ng: our keypad and timing are the world's. The same
    samples with noise at 6 dB SNR, decoded by both: the same digits."""
    rng = np.random.default_rng(3)
    keys = "".join(rng.choice(list(DIGITS), 64))
    x = padded(dtmf_signal(keys, MULTIMON_RATE, on_s=0.07, off_s=0.07), MULTIMON_RATE)
    assert multimon_dtmf(x) == keys
    noisy = (x + 10 ** (-6 / 20) * 0.316 * band_noise(len(x), MULTIMON_RATE, rng)).astype(F32)
    assert digits_of(decode(noisy, MULTIMON_RATE)) == keys
    assert multimon_dtmf(noisy) == keys


def test_a_voice_whose_harmonics_sit_on_a_key_is_not_a_digit() -> None:
    """espeak-ng's voices made 'A' (697 + 1633 Hz) from a pitch of 232 Hz: its 3rd and
    7th harmonics. A comb of harmonics with those two loudest is refused; the same two
    tones alone are a digit."""
    rate = 8000
    t = np.arange(round(0.08 * rate)) / rate
    f0 = 697.0 / 3
    loud = {3: 0.3, 7: 0.3}
    comb = sum(loud.get(k, 0.1) * np.sin(2 * np.pi * k * f0 * t + k) for k in range(1, 15))
    voice = padded((comb * np.hanning(len(t)) ** 0.1).astype(F32), rate)
    assert digits_of(decode(voice, rate)) == ""
    # Without the voice check the comb reads as A: the check is what refuses it.
    unguarded = DtmfDecoder(rate, DtmfSettings(voice_harmonics=99))
    assert digits_of(unguarded.feed(voice) + unguarded.flush()) == "A"
    pair = 0.3 * (np.sin(2 * np.pi * 697.0 * t) + np.sin(2 * np.pi * 1633.0 * t))
    assert digits_of(decode(padded(pair.astype(F32), rate), rate)) == "A"


@pytest.mark.parametrize(("hold_db", "expected"), [(3.0, "5"), (4.0, "55")])
def test_a_digit_holds_through_a_stretch_its_group_margin_dips(
    hold_db: float, expected: str
) -> None:
    """A 90 ms '5' with a third tone (852 Hz) 3.5 dB under its 770 Hz for 40 ms of it, as
    noise or a second sender can put there: under the 4 dB group margin a new digit needs,
    over the 3 dB one that holds a digit heard. Without the hold (4 dB) the digit is cut in
    two and reads twice."""
    rate = 8000
    t = np.arange(int(0.09 * rate)) / rate
    x = 0.2 * np.sin(2 * np.pi * 770 * t) + 0.2 * np.sin(2 * np.pi * 1336 * t)
    a, b = int(0.03 * rate), int(0.07 * rate)
    x[a:b] += 0.2 * 10 ** (-3.5 / 20) * np.sin(2 * np.pi * 852 * t[a:b])
    events = decode(
        padded(x.astype(np.float32), rate), rate, DtmfSettings(hold_group_margin_db=hold_db)
    )
    assert digits_of(events) == expected
