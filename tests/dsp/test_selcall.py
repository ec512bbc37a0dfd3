"""5-tone selcall (CCIR, ZVEI1, EEA): the decoder and encoder on every symbol and rate,
tone lengths, offsets, block splits, hostile samples, noise, and multimon-ng (Debian) as
the independent reference both ways: it reads our calls, we read the files it reads."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.dsp.selcall import (
    STANDARDS,
    SYMBOLS,
    SelcallCall,
    SelcallDecoder,
    SelcallSettings,
    SelcallTone,
    selcall_signal,
    selcall_tones,
)
from tests.dsp.signal_tools import (
    MULTIMON_RATE,
    band_noise,
    feed_in_pieces,
    multimon_binary,
    padded,
)

F32 = np.float32
MULTIMON_MODE = {"ccir": "CCIR", "zvei1": "ZVEI1", "eea": "EEA"}


def decode(
    x: np.ndarray, rate: int, standard: str | list[str], s: SelcallSettings | None = None
) -> list[SelcallTone | SelcallCall]:
    decoder = SelcallDecoder(rate, standard, s)
    return decoder.feed(x) + decoder.flush()


def calls(events: list[SelcallTone | SelcallCall]) -> list[str]:
    return [e.digits for e in events if isinstance(e, SelcallCall)]


def call_audio(rate: int, standard: str, *digit_strings: str, **kw: float) -> np.ndarray:
    quiet = np.zeros(rate // 2, dtype=F32)
    parts = [quiet]
    for digits in digit_strings:
        parts += [selcall_signal(digits, rate, standard=standard, **kw), quiet]
    return np.concatenate(parts)


def test_repeats_are_sent_as_e() -> None:
    assert selcall_tones("12345") == "12345"
    assert selcall_tones("11111") == "1E1E1"
    assert selcall_tones("90011") == "90E1E"
    with pytest.raises(ValueError, match="E is the repeat"):
        selcall_tones("12E45")


@pytest.mark.parametrize("standard", sorted(STANDARDS))
@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
def test_every_symbol_at_every_rate(standard: str, rate: int) -> None:
    """Every digit and letter of the table (E as the repeat), repeats resolved, with times."""
    strings = ("01234", "56789", "ABCDF", "11111", "90033")
    events = decode(call_audio(rate, standard, *strings), rate, standard)
    assert calls(events) == list(strings)
    tone_s = STANDARDS[standard].tone_s
    first = next(e for e in events if isinstance(e, SelcallCall))
    assert first.start == pytest.approx(0.5, abs=0.01)
    assert first.end == pytest.approx(0.5 + 5 * tone_s, abs=0.01)
    assert first.standard == standard
    tones = [e for e in events if isinstance(e, SelcallTone)]
    assert tones[0].hz == pytest.approx(STANDARDS[standard].tones_hz[0], rel=0.002)
    assert tones[0].level_dbfs == pytest.approx(-10.0, abs=0.5)


@pytest.mark.parametrize(
    ("scale", "heard"), [(0.4, False), (0.6, True), (1.0, True), (1.4, True), (2.0, False)]
)
def test_tone_lengths(scale: float, heard: bool) -> None:
    """Tones of the standard's length +-40 % are heard; far shorter or longer are not."""
    for standard, std in STANDARDS.items():
        x = call_audio(16000, standard, "52190", tone_s=std.tone_s * scale)
        assert calls(decode(x, 16000, standard)) == (["52190"] if heard else []), standard


def test_a_stretched_first_tone_is_a_call() -> None:
    """Some senders hold the first tone up to a second to wake scanning radios."""
    x = call_audio(8000, "zvei1", "21212", first_tone_s=0.8)
    assert calls(decode(x, 8000, "zvei1")) == ["21212"]


def test_the_same_tone_twice_running_is_no_call() -> None:
    """A sender sends E for a repeated digit: two tones alike back to back are not selcall."""
    rate, std = 8000, STANDARDS["ccir"]
    hz = np.repeat([std.tones_hz[int(d)] for d in "12234"], round(std.tone_s * rate))
    x = padded((0.3 * np.sin(2 * np.pi * np.cumsum(hz) / rate)).astype(F32), rate)
    assert calls(decode(x, rate, "ccir")) == []


@pytest.mark.parametrize(("offset", "heard"), [(0.015, True), (-0.015, True), (0.03, False)])
def test_frequency_tolerance(offset: float, heard: bool) -> None:
    x = call_audio(8000, "eea", "73019", offset=offset)
    assert calls(decode(x, 8000, "eea")) == (["73019"] if heard else [])


def test_fewer_digits_than_the_minimum_are_no_call() -> None:
    x = call_audio(8000, "ccir", "123")
    assert calls(decode(x, 8000, "ccir")) == []
    assert calls(decode(x, 8000, "ccir", SelcallSettings(min_digits=3))) == ["123"]


def test_another_standard_is_not_heard_as_this_one() -> None:
    """A ZVEI1 call on a CCIR receiver (and the other way) is no call: other tones, or
    the same tones at another length (CCIR and EEA share most tones)."""
    for sent, heard_by in (("zvei1", "ccir"), ("ccir", "zvei1"), ("ccir", "eea"), ("eea", "ccir")):
        x = call_audio(16000, sent, "12345", "67890")
        assert calls(decode(x, 16000, heard_by)) == [], (sent, heard_by)


@settings(max_examples=40, deadline=None)
@given(
    cuts=st.lists(st.integers(min_value=1, max_value=3000), min_size=1, max_size=40),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_any_split_of_the_input_gives_the_same_events(cuts: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    digits = "".join(rng.choice(list("0123456789"), 5))
    x = call_audio(8000, "ccir", digits)
    x = (x + 0.05 * band_noise(len(x), 8000, rng)).astype(F32)
    whole = decode(x, 8000, "ccir")
    pieces = feed_in_pieces(SelcallDecoder(8000, "ccir"), x, cuts)
    assert pieces == whole
    assert calls(whole) == [digits]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.floats(allow_nan=True, allow_infinity=True),
            st.sampled_from([0.0, 1.0, -1.0, 1e300, -1e300]),
        ),
        max_size=400,
    )
)
def test_hostile_samples_raise_nothing(block: list[float]) -> None:
    decoder = SelcallDecoder(8000, "zvei1")
    for _ in range(3):
        assert all(isinstance(e, SelcallTone | SelcallCall) for e in decoder.feed(block))
    decoder.flush()


def test_no_call_in_a_minute_of_noise() -> None:
    rng = np.random.default_rng(11)
    x = (0.2 * band_noise(60 * 8000, 8000, rng)).astype(F32)
    for standard in STANDARDS:
        assert decode(x, 8000, standard) == [], standard


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least 6000"):
        SelcallDecoder(4000)
    with pytest.raises(ValueError, match="unknown selcall standard 'zvei9'"):
        SelcallDecoder(8000, "zvei9")
    with pytest.raises(ValueError, match="max_offset"):
        SelcallSettings(max_offset=0.05)
    with pytest.raises(ValueError, match="min_digits"):
        SelcallSettings(min_digits=0)
    with pytest.raises(ValueError, match="not selcall digits"):
        selcall_signal("12x45", 8000)
    with pytest.raises(ValueError, match="tone lengths"):
        selcall_signal("12345", 8000, tone_s=0.0)
    assert SYMBOLS.index("E") == 14


def multimon_selcall(x: np.ndarray, standard: str) -> list[str]:
    mode = MULTIMON_MODE[standard]
    pcm = np.clip(np.rint(x * 32767.0), -32768, 32767).astype("<i2").tobytes()
    out = subprocess.run(
        [multimon_binary(), "-q", "-a", mode, "-t", "raw", "-"],
        input=pcm,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    return [line.split(": ", 1)[1].strip() for line in out.splitlines() if f"{mode}: " in line]


@pytest.mark.parametrize("standard", sorted(STANDARDS))
def test_multimon_ng_reads_our_calls_and_we_read_what_it_reads(standard: str) -> None:
    """Our encoder, decoded by multimon-ng: our tone tables, lengths and repeat tone are the
    world's (it prints the tones as sent, E included). The same calls at 6 dB SNR in band
    noise, decoded by both: the same calls."""
    rng = np.random.default_rng([5, len(standard)])
    strings = ["".join(rng.choice(list("0123456789"), 5)) for _ in range(6)] + ["44444"]
    x = call_audio(MULTIMON_RATE, standard, *strings)
    assert multimon_selcall(x, standard) == [selcall_tones(s) for s in strings]
    tone_rms = 10 ** (-10 / 20) / np.sqrt(2)  # the encoder's -10 dBFS sine
    noise = band_noise(len(x), MULTIMON_RATE, rng) * tone_rms * 10 ** (-6 / 20)
    noisy = (x + noise).astype(F32)
    assert calls(decode(noisy, MULTIMON_RATE, standard)) == strings
    assert multimon_selcall(noisy, standard) == [selcall_tones(s) for s in strings]


def test_one_decoder_of_several_standards_reads_as_each_alone() -> None:
    """Several standards share one analysis; each reads what it would alone."""
    rate = 16000
    x = np.concatenate(
        [call_audio(rate, std, "12345", "99017") for std in ("eea", "ccir", "zvei1")]
    )
    x = (x + 0.05 * band_noise(len(x), rate, np.random.default_rng(2))).astype(F32)
    together = decode(x, rate, ["ccir", "zvei1", "eea"])
    for standard in STANDARDS:
        alone = decode(x, rate, standard)
        assert [e for e in together if e in alone] == alone
        assert calls(alone) == ["12345", "99017"], standard
    assert len(together) == 3 * len(decode(x, rate, "ccir"))
    with pytest.raises(ValueError, match="at least one"):
        SelcallDecoder(8000, [])
