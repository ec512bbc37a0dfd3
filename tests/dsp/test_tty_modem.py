"""TTY modem: our encoder into our decoder, through every line impairment the issue lists."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from gateway.dsp.tty import (
    BAUD_45,
    BAUD_50,
    TtyChar,
    TtyDecoder,
    TtyDetected,
    TtyEncoder,
    TtyEnded,
    TtyEvent,
    final_text,
)
from hw_sim.phone_line import add_noise, band_noise, g711, speech_like, tilt
from tests.dsp.signal_tools import feed_in_blocks

FS = 8000
TEXT = "HELLO 911 MY ADDRESS IS 4127 N MAIN ST APT 3B (RED HOUSE) GA"

Audio = npt.NDArray[np.float32]


def pad(x: Audio, before: float = 0.5, after: float = 0.5, fs: int = FS) -> Audio:
    return np.concatenate(
        [np.zeros(int(before * fs), np.float32), x, np.zeros(int(after * fs), np.float32)]
    )


def decode(x: Audio, **kwargs: object) -> list[TtyEvent]:
    dec = TtyDecoder(**kwargs)  # type: ignore[arg-type]
    return dec.feed(x) + dec.flush()


def text_of(events: list[TtyEvent]) -> str:
    return final_text(events)


def kinds(events: list[TtyEvent]) -> list[str]:
    return [type(e).__name__ for e in events if not isinstance(e, TtyChar)]


def noisy(x: Audio, snr_db: float, seed: int, power: float | None = None) -> Audio:
    p = float(np.mean(x**2)) if power is None else power
    return add_noise(
        pad(x), snr_db, sample_rate=FS, signal_power=p, rng=np.random.default_rng(seed)
    )


@pytest.mark.parametrize("baud", [BAUD_45, BAUD_50])
@pytest.mark.parametrize("stop_bits", [1.0, 1.5, 2.0])
def test_round_trip_both_rates_all_stop_lengths(baud: float, stop_bits: float) -> None:
    x = TtyEncoder(baud=baud, stop_bits=stop_bits).encode(TEXT)
    events = decode(noisy(x, 10.0, seed=1, power=0.125))
    assert text_of(events) == TEXT
    assert kinds(events) == ["TtyDetected", "TtyEnded"]
    detected = events[0]
    assert isinstance(detected, TtyDetected)
    assert detected.baud == baud
    assert abs(detected.mark_hz - 1400) < 5 and abs(detected.space_hz - 1800) < 5


@pytest.mark.parametrize("offset", [-0.05, 0.05])
def test_tones_five_percent_off_are_tracked(offset: float) -> None:
    enc = TtyEncoder(mark_hz=1400 * (1 + offset), space_hz=1800 * (1 + offset))
    events = decode(noisy(enc.encode(TEXT), 0.0, seed=2, power=0.125))
    assert text_of(events) == TEXT
    detected = events[0]
    assert isinstance(detected, TtyDetected)
    assert abs(detected.mark_hz - 1400 * (1 + offset)) < 6
    assert abs(detected.space_hz - 1800 * (1 + offset)) < 6


@pytest.mark.parametrize("level_dbfs", [-50.0, 0.0])
def test_levels_from_minus_50_dbfs_to_full_scale(level_dbfs: float) -> None:
    amp = 10 ** (level_dbfs / 20)
    x = TtyEncoder(amplitude=amp).encode(TEXT)
    # Line noise 30 dB under the signal; full scale is clipped as a sound card would.
    x = np.clip(noisy(x, 30.0, seed=3, power=amp * amp / 2), -1.0, 1.0)
    assert text_of(decode(x)) == TEXT


def test_telephone_band_and_g711() -> None:
    x = TtyEncoder(amplitude=0.1).encode(TEXT)
    assert text_of(decode(g711(noisy(x, 0.0, seed=4, power=0.005), sample_rate=FS))) == TEXT


def test_mark_space_level_imbalance() -> None:
    x = tilt(TtyEncoder().encode(TEXT), 6.0, sample_rate=FS)  # mark +3 dB, space -3 dB
    assert text_of(decode(noisy(x, 0.0, seed=5))) == TEXT


def test_low_snr_still_reads() -> None:
    # -5 dB in 3 kHz is 13 dB per bit at 45.45 baud: an ideal receiver makes ~1e-4 errors.
    x = TtyEncoder().encode(TEXT)
    assert text_of(decode(noisy(x, -5.0, seed=6, power=0.125))) == TEXT


def test_any_idle_between_characters_and_no_lead_in() -> None:
    """A typist: each character its own burst of carrier, random idle, no lead-in."""
    rng = np.random.default_rng(7)
    enc = TtyEncoder(lead_in_s=0.0, hold_s=0.0)
    writer_codes = enc.codes("TYPING SLOWLY 12")
    parts: list[Audio] = []
    for code in writer_codes:
        parts.append(enc.encode_codes([code]))
        idle = TtyEncoder(lead_in_s=float(rng.uniform(0.0, 0.4)), hold_s=0.0).encode_codes([])
        parts.append(idle)
    x = np.concatenate(parts)
    assert text_of(decode(noisy(x, 10.0, seed=8, power=0.125))) == "TYPING SLOWLY 12"


@pytest.mark.parametrize("lead_in_ms", [150, 100, 60, 20])
@pytest.mark.parametrize("silence_ms", [0, 50, 100])
def test_a_stream_that_starts_in_the_lead_in_reads_its_first_character(
    lead_in_ms: int, silence_ms: int
) -> None:
    """A file cut in a TTY's lead-in, or a reply captured from its first sample: the first
    character (a FIGS shift here) falls in the stream's first 130 ms. Those hops have no
    analysis window before them; they were taken as having no signal, which lost it."""
    x = TtyEncoder(lead_in_s=lead_in_ms / 1000).encode("911 WHAT IS YOUR ADDRESS GA")
    y = np.concatenate([np.zeros(silence_ms * FS // 1000, np.float32), x])
    assert text_of(decode(y)) == "911 WHAT IS YOUR ADDRESS GA"


def test_detected_within_a_second_and_characters_within_100_ms_of_their_stop_bit() -> None:
    enc = TtyEncoder()
    x = noisy(enc.encode(TEXT), 6.0, seed=9, power=0.125)
    dec = TtyDecoder()
    block = int(0.01 * FS)  # 10 ms audio blocks, as from a sound card
    emitted: list[tuple[float, TtyEvent]] = []
    for i in range(0, len(x), block):
        now = (i + block) / FS
        emitted.extend((now, e) for e in dec.feed(x[i : i + block]))
    chars = [(now, e) for now, e in emitted if isinstance(e, TtyChar)]
    assert "".join(e.char for _, e in chars) == TEXT
    # The first character's stop bit ends 0.5 s (padding) + lead-in + 2 characters (LTRS, H).
    first_stop = 0.5 + enc.lead_in_s + 2 * 8 / BAUD_45 - 1 / BAUD_45
    detected_at = next(now for now, e in emitted if isinstance(e, TtyDetected))
    assert detected_at - first_stop < 1.0
    for now, e in chars:
        assert now >= e.time
        if e.time > detected_at:  # those released at detection waited for the gate
            assert now - e.time <= 0.1, (e, now)


def test_ended_after_carrier_loss_and_a_second_burst_is_read() -> None:
    enc = TtyEncoder()
    first, second = "FIRST LINE GA", "OK SK"
    x = np.concatenate([enc.encode(first), np.zeros(3 * FS, np.float32), enc.encode(second)])
    events = decode(noisy(x, 10.0, seed=10, power=0.125))
    assert kinds(events) == ["TtyDetected", "TtyEnded", "TtyDetected", "TtyEnded"]
    assert text_of(events) == first + second
    ended = next(e for e in events if isinstance(e, TtyEnded))
    # The first burst ends 0.5 s + its duration; ended follows within end_after_s + a hop.
    burst_end = 0.5 + len(enc.encode(first)) / FS
    assert burst_end < ended.time < burst_end + 1.2


def test_figures_shift_held_across_space_by_default() -> None:
    enc = TtyEncoder(shift_after_space=False)  # as a TTY that does not repeat FIGS
    x = noisy(enc.encode("CALL 555 0142 NOW"), 10.0, seed=11, power=0.125)
    assert text_of(decode(x)) == "CALL 555 0142 NOW"
    assert text_of(decode(x, unshift_on_space=True)) == "CALL 555 PQRW NOW"


@pytest.mark.parametrize("fs", [11025, 16000, 48000])
def test_other_sample_rates(fs: int) -> None:
    x = TtyEncoder(sample_rate=fs, baud=BAUD_50).encode(TEXT)
    x = add_noise(
        pad(x, fs=fs), 10.0, sample_rate=fs, signal_power=0.125, rng=np.random.default_rng(12)
    )
    events = decode(x, sample_rate=fs)
    assert text_of(events) == TEXT
    assert isinstance(events[0], TtyDetected) and events[0].baud == BAUD_50


def test_streaming_in_random_blocks_gives_the_same_events() -> None:
    rng = np.random.default_rng(13)
    x = noisy(TtyEncoder(baud=BAUD_50, stop_bits=1.5).encode(TEXT), -3.0, seed=14, power=0.125)
    whole = decode(x)
    assert text_of(whole) == TEXT
    assert feed_in_blocks(TtyDecoder(), x, rng, 900) == whole


@pytest.mark.parametrize("quiet", ["silence", "noise"])
def test_a_call_after_a_long_quiet_spell_is_read_from_its_first_character(quiet: str) -> None:
    """Idle, the decoder leaves the trackers' envelopes uncomputed while no tone is present
    and starts them shortly before the tones come: a burst with a short lead-in after 20 s
    of quiet (and a second after 3 s more) reads whole, in any blocks."""
    rng = np.random.default_rng(21)
    enc = TtyEncoder(lead_in_s=0.03)
    gap = np.zeros(20 * FS, np.float32)
    second = np.zeros(3 * FS, np.float32)
    x = np.concatenate([gap, enc.encode("911 AT 12 ELM ST"), second, enc.encode("GA")])
    if quiet == "noise":
        x = add_noise(x, 6.0, sample_rate=FS, signal_power=0.125, rng=rng)
    whole = decode(x)
    assert text_of(whole) == "911 AT 12 ELM STGA"
    assert feed_in_blocks(TtyDecoder(), x, rng, 6000) == whole


@pytest.mark.parametrize(
    "kind",
    ["noise", "loud_noise", "speech", "silence", "dial_tone", "mark_only"],
)
def test_no_characters_from_things_that_are_not_a_tty(kind: str) -> None:
    rng = np.random.default_rng(15)
    seconds = 20.0
    n = int(seconds * FS)
    t = np.arange(n) / FS
    if kind == "noise":
        x = band_noise(n, sample_rate=FS, power=0.01, rng=rng).astype(np.float32)
    elif kind == "loud_noise":
        x = np.clip(rng.standard_normal(n) * 0.5, -1, 1).astype(np.float32)
    elif kind == "speech":
        x = speech_like(seconds, sample_rate=FS, rng=rng)
    elif kind == "silence":
        x = np.zeros(n, np.float32)
    elif kind == "dial_tone":
        x = (0.1 * (np.sin(2 * np.pi * 350 * t) + np.sin(2 * np.pi * 440 * t))).astype(np.float32)
    else:  # a steady 1400 Hz tone: a TTY's idle carrier with nothing typed is not text
        x = (0.3 * np.sin(2 * np.pi * 1400 * t)).astype(np.float32)
    assert decode(x) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sample_rate": 4000}, "sample_rate"),
        ({"detect_chars": 0}, "detect_chars"),
        ({"end_after_s": 0.0}, "end_after_s"),
        ({"figures": "uk"}, "figures"),
    ],
)
def test_decoder_arguments_are_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TtyDecoder(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [{"baud": 75.0}, {"stop_bits": 3.0}, {"amplitude": 1.5}, {"mark_hz": 5000.0}],
)
def test_encoder_arguments_are_validated(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        TtyEncoder(**kwargs)  # type: ignore[arg-type]


def test_decoder_refuses_multichannel_blocks() -> None:
    with pytest.raises(ValueError):
        TtyDecoder().feed(np.zeros((10, 2), np.float32))


def test_encoder_output_is_phase_continuous_fsk_with_lead_in_and_hold() -> None:
    enc = TtyEncoder(baud=BAUD_45, stop_bits=1.5, lead_in_s=0.15, hold_s=0.3, amplitude=0.5)
    codes = enc.codes("RY")
    x = enc.encode("RY")
    bits = len(codes) * 7.5
    assert abs(len(x) / FS - (0.15 + 0.3 + bits / BAUD_45)) < 2 / FS
    assert float(np.max(np.abs(x))) <= 0.5 + 1e-6
    # Phase continuity: no sample-to-sample step larger than a 1800 Hz sine allows.
    assert float(np.max(np.abs(np.diff(x)))) <= 0.5 * 2 * np.pi * 1800 / FS + 1e-3
    # The lead-in is mark: its spectrum peaks at 1400 Hz.
    lead = x[int(0.01 * FS) : int(0.14 * FS)]
    spec = np.abs(np.fft.rfft(lead * np.hanning(len(lead))))
    assert abs(np.fft.rfftfreq(len(lead), 1 / FS)[int(np.argmax(spec))] - 1400) < 10


def test_a_tracker_left_idle_past_the_history_reads_on() -> None:
    """A tracker not run for longer than the history (the other rate's, during a long
    call) finds its soft values trimmed past its timing scores: it restarts them, rather
    than read windows that are gone. Block sizes from a case that used to fail."""
    from gateway.dsp.tty_demod import FrontEnd, Tracker

    fe = FrontEnd(8000)
    tracker = Tracker(fe, BAUD_45)
    rng = np.random.default_rng(7)
    steps = [39778, 25897, 17036, 24167, 14595, 30115, 22644, 27410, 13955, 30722]
    for i, n in enumerate(steps):
        fe.process((rng.standard_normal(n) * 0.1).astype(np.float32))
        if i in (0, 5, 9):
            tracker.run(fe.avail, masked=False)
    assert tracker.score.end > fe.avail - 8 * tracker.nb
