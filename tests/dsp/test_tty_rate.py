"""TTY decoder: the automatic choice between 45.45 and 50 baud.

The rate is what the call taker's screen shows and what the reply uses, and reading a
noisy line at the wrong rate costs characters, so it must be right on every kind of text:
characters with late bit edges tell the rates apart easily, those with few (LTRS, E, T)
hardly, and short messages give few characters to judge by.
"""

from __future__ import annotations

from dataclasses import dataclass

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
from hw_sim.phone_line import add_noise
from tests.dsp.signal_tools import feed_in_blocks

FS = 8000
Audio = npt.NDArray[np.float32]

# All letters, all figures, mixed, and short (4-5 characters: 5-6 frames with the shift).
TEXTS = [
    "HELP",
    "FIRE",
    "EEEE",
    "QQQQ",
    "ZZZZ",
    "TTTTT",
    "12345",
    "0000",
    "911 911",
    "555-0142",
    "12:30 $45 #7",
    "(4127) 3/8",
    "RYRYRY",
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
    "MY HUSBAND FELL GA",
    "AMBULANCE PLS",
    "BREATHING YES",
    "HELLO 911 GA\r\nADDRESS 12 ELM ST\r\n",
    "ADDRESS 4127 N MAIN ST APT 3B",
    "(RED HOUSE) 5TH & ELM",
    "CALL 555 0142 NOW",
    "HE IS 72 YEARS OLD",
    "ETA 5 MIN?",
    "UNIT 12 ON SCENE SK",
]
STOP_BITS = (1.0, 1.5, 2.0)
OFFSETS = (-0.05, 0.0, 0.05)


@dataclass(frozen=True)
class Trial:
    text: str
    baud: float
    stop_bits: float
    offset: float
    seed: int


# Every text at both rates and every stop length; the tone offset cycles through -5 %,
# 0 and +5 % so that each text meets each offset too (144 trials per line condition).
TRIALS = [
    Trial(text, baud, stop, OFFSETS[(t + b + s) % 3], seed=100 * t + 10 * b + s)
    for t, text in enumerate(TEXTS)
    for b, baud in enumerate((BAUD_45, BAUD_50))
    for s, stop in enumerate(STOP_BITS)
]


@dataclass(frozen=True)
class Outcome:
    detected: list[TtyDetected]
    text: str
    first_stop_s: float  # end of the first frame's stop bit (the shift before the text)


def run_trial(trial: Trial, snr_db: float | None) -> Outcome:
    """One TTY burst after 0.3-2 s of line (silence or noise), in 20 ms sound card blocks."""
    rng = np.random.default_rng(trial.seed)
    enc = TtyEncoder(
        sample_rate=FS,
        baud=trial.baud,
        stop_bits=trial.stop_bits,
        mark_hz=1400.0 * (1 + trial.offset),
        space_hz=1800.0 * (1 + trial.offset),
        amplitude=0.25,  # about -12 dBFS, a typical line level
    )
    tx = enc.encode(trial.text).astype(np.float64)
    lead_s = float(rng.uniform(0.3, 2.0))
    x = np.concatenate([np.zeros(int(lead_s * FS)), tx, np.zeros(FS // 2)])
    if snr_db is not None:
        x = add_noise(x, snr_db, sample_rate=FS, signal_power=float(np.mean(tx**2)), rng=rng)
    elif trial.seed % 2:
        x = x + rng.standard_normal(len(x)) * 1e-3  # -60 dBFS background, as on a live line
    audio = x.astype(np.float32)
    dec = TtyDecoder(sample_rate=FS)
    events: list[TtyEvent] = []
    block = FS // 50
    for i in range(0, len(audio), block):
        events.extend(dec.feed(audio[i : i + block]))
    events.extend(dec.flush())
    return Outcome(
        detected=[e for e in events if isinstance(e, TtyDetected)],
        text=final_text(events),
        first_stop_s=lead_s + enc.lead_in_s + 7 / trial.baud,
    )


def describe(trial: Trial, out: Outcome) -> str:
    rates = [round(d.baud, 2) for d in out.detected]
    return (
        f"{trial.text!r} at {trial.baud:.2f} baud, {trial.stop_bits} stop, "
        f"offset {trial.offset:+.0%}: detected {rates}, read {out.text!r}"
    )


@pytest.mark.parametrize("snr_db", [None, 6.0], ids=["clean", "snr+6"])
def test_rate_is_always_right_on_clean_and_good_lines(snr_db: float | None) -> None:
    failures = []
    for trial in TRIALS:
        out = run_trial(trial, snr_db)
        ok = (
            len(out.detected) == 1
            and out.detected[0].baud == trial.baud
            and out.text == trial.text
            # tty.detected within 1 s of the first valid characters
            and out.detected[0].time - out.first_stop_s < 1.0
        )
        if not ok:
            failures.append(describe(trial, out))
    assert not failures, "\n".join(failures)


def test_rate_is_right_at_minus_3_db() -> None:
    # -3 dB in 3 kHz: about 15 dB per bit. A missed detection counts as a failure too.
    failures, wrong = [], []
    for trial in TRIALS:
        out = run_trial(trial, -3.0)
        if len(out.detected) != 1 or out.detected[0].baud != trial.baud:
            failures.append(describe(trial, out))
        if any(d.baud != trial.baud for d in out.detected):
            wrong.append(describe(trial, out))
    assert len(failures) <= 0.05 * len(TRIALS), "\n".join(failures)
    # A wrong rate is worse than a missed detection: none at all (seen: none down to -6 dB).
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("fs", [16000, 48000])
@pytest.mark.parametrize("baud", [BAUD_45, BAUD_50])
def test_rate_at_sound_card_rates_with_background_noise(fs: int, baud: float) -> None:
    """The live case: -12 dBFS TTY after -60 dBFS background noise, 20 ms blocks."""
    rng = np.random.default_rng(int(fs + baud))
    for text in ("HELLO 911 GA\r\nADDRESS 12 ELM ST\r\n", "HELLO 911 MY HUSBAND FELL GA\r\n"):
        tty = TtyEncoder(sample_rate=fs, baud=baud).encode(text) * 0.5
        x = np.concatenate([np.zeros(2 * fs), tty, np.zeros(fs)])
        x = (x + rng.standard_normal(len(x)) * 1e-3).astype(np.float32)
        dec = TtyDecoder(sample_rate=fs)
        events: list[TtyEvent] = []
        for i in range(0, len(x), fs // 50):
            events.extend(dec.feed(x[i : i + fs // 50]))
        assert [e.baud for e in events if isinstance(e, TtyDetected)] == [baud]
        assert final_text(events) == text


@pytest.mark.parametrize("snr_db", [None, -3.0], ids=["clean", "snr-3"])
@pytest.mark.parametrize("stop_bits", [1.0, 2.0])
@pytest.mark.parametrize("baud", [BAUD_45, BAUD_50])
def test_characters_with_few_bit_edges(baud: float, stop_bits: float, snr_db: float | None) -> None:
    """LTRS (start bit then all mark), E and T: the rates differ by 2-10 ms of edge only."""
    enc = TtyEncoder(baud=baud, stop_bits=stop_bits)
    codes = enc.codes("ETETE") + [0x1F] * 4  # then LTRS, as a TTY sends to wake a line
    tx = enc.encode_codes([0x1F] * 4 + codes)
    x = np.concatenate([np.zeros(FS // 2), tx, np.zeros(FS // 2)])
    if snr_db is not None:
        rng = np.random.default_rng(int(baud * stop_bits))
        x = add_noise(x, snr_db, sample_rate=FS, signal_power=float(np.mean(tx**2)), rng=rng)
    dec = TtyDecoder()
    events = dec.feed(x.astype(np.float32)) + dec.flush()
    assert [e.baud for e in events if isinstance(e, TtyDetected)] == [baud]
    assert final_text(events) == "ETETE"


@pytest.mark.parametrize("gap_s", [3.0, 40.0], ids=["in_session", "after_session"])
@pytest.mark.parametrize(("first", "second"), [(BAUD_45, BAUD_50), (BAUD_50, BAUD_45)])
def test_a_second_caller_at_the_other_rate_is_read_at_its_rate(
    first: float, second: float, gap_s: float
) -> None:
    """After a TTY ends, the next at the other rate is recognised, within session_s too.

    Within session_s of a TTY two characters at its rate re-detect; the other rate's
    characters, read at the old rate, must not keep it.
    """
    one, two = "HELLO 911 GA", "THIS IS CALLER TWO SK"
    x1 = TtyEncoder(baud=first).encode(one)
    x2 = TtyEncoder(baud=second, stop_bits=1.5).encode(two)
    x = np.concatenate([np.zeros(FS // 2), x1, np.zeros(int(gap_s * FS)), x2, np.zeros(FS)])
    for snr_db in (None, 0.0):
        if snr_db is not None:
            rng = np.random.default_rng(int(gap_s))
            y = add_noise(x, snr_db, sample_rate=FS, signal_power=0.125, rng=rng)
        else:
            y = x.astype(np.float32)
        dec = TtyDecoder()
        events = dec.feed(y) + dec.flush()
        summary = [
            (type(e).__name__, e.baud if isinstance(e, TtyDetected) else None)
            for e in events
            if not isinstance(e, TtyChar)
        ]
        assert summary == [
            ("TtyDetected", first),
            ("TtyEnded", None),
            ("TtyDetected", second),
            ("TtyEnded", None),
        ]
        assert final_text(events) == one + two
        assert not dec.active and dec.baud is None


def test_short_second_message_in_session_at_the_other_rate() -> None:
    """Two characters re-detect within a session; a reply of two letters at the other rate."""
    x1 = TtyEncoder(baud=BAUD_45).encode("ARE YOU THERE Q GA")
    x2 = TtyEncoder(baud=BAUD_50).encode("OK")
    x = np.concatenate([np.zeros(FS // 2), x1, np.zeros(3 * FS), x2, np.zeros(FS)])
    dec = TtyDecoder()
    events = dec.feed(x) + dec.flush()
    assert [e.baud for e in events if isinstance(e, TtyDetected)] == [BAUD_45, BAUD_50]
    assert final_text(events) == "ARE YOU THERE Q GAOK"
    assert sum(isinstance(e, TtyEnded) for e in events) == 2


def ltrs_then_text(seed: int, snr_db: float) -> Audio:
    """Eight LTRS back to back, then "ETE": 45.45 baud, 1 stop bit, tones 5 % high.

    LTRS at 45.45 baud differs from LTRS at 50 only by its 2 ms longer start bit, so the
    rate is often in doubt after the first characters; the decoder must wait for more.
    """
    enc = TtyEncoder(baud=BAUD_45, stop_bits=1.0, mark_hz=1470.0, space_hz=1890.0)
    tx = enc.encode_codes([0x1F] * 8 + enc.codes("ETE"))
    x = np.concatenate([np.zeros(FS), tx, np.zeros(FS)])
    power = float(np.mean(tx**2))
    return add_noise(x, snr_db, sample_rate=FS, signal_power=power, rng=np.random.default_rng(seed))


def test_a_doubtful_rate_waits_for_more_characters(monkeypatch: pytest.MonkeyPatch) -> None:
    # A spy on the real method, to prove the waiting path ran (nothing is replaced).
    calls: list[float] = []
    real = TtyDecoder._rate_choice

    def spy(self: TtyDecoder, anchors: list[int], search: int, limit: int) -> tuple[int, float]:
        best, nats = real(self, anchors, search, limit)
        calls.append(nats)
        return best, nats

    monkeypatch.setattr(TtyDecoder, "_rate_choice", spy)
    waited = 0
    for seed in range(12):
        calls.clear()
        dec = TtyDecoder()
        events = dec.feed(ltrs_then_text(seed, -3.0)) + dec.flush()
        assert [e.baud for e in events if isinstance(e, TtyDetected)] == [BAUD_45], seed
        assert final_text(events) == "ETE", seed
        waited += len(calls) > 1
    assert waited >= 3


def test_rate_choice_does_not_depend_on_block_size() -> None:
    """A doubtful rate waits for characters or for time in stream samples, not in blocks."""
    rng = np.random.default_rng(21)
    for seed in (1, 10):  # one settled by more characters, one by the wait running out
        x = ltrs_then_text(seed, -3.0)
        whole = TtyDecoder()
        expected = whole.feed(x) + whole.flush()
        assert [e.baud for e in expected if isinstance(e, TtyDetected)] == [BAUD_45]
        assert feed_in_blocks(TtyDecoder(), x, rng, 1200) == expected
