"""MDC-1200: the codeword against the byte vectors published with an independent
implementation, and the decoder on every packet kind and rate, noise, block splits, hostile
samples and speech-like audio.

MDC-1200 has no public standard and no Debian package decodes it (multimon-ng does not):
the independent reference is the UV-K5 firmwares' MDC-1200 code, which works with Motorola
radios. Its comments give a codeword before interleaving (op 01, arg 80, unit 1234: CRC
2E3E, parity 6580A862DD8808), another (01 00 0023: DD F0 ... 0F451F21) and a burst as
received after the sync (94 9C 22 ... 2C 84); our code meets all three."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.dsp.mdc1200 import (
    Mdc1200Decoder,
    MdcPacket,
    codeword_air_bits,
    codeword_bytes,
    crc16,
    decode_codeword,
    mdc_signal,
    packet_air_bits,
)
from tests.dsp.signal_tools import band_noise, feed_in_pieces

F32 = np.float32
RATES = (6000, 8000, 11025, 16000, 44100, 48000)


def burst_audio(rate: int, *packets: tuple[int, int, int, bytes | None], **kw: float) -> np.ndarray:
    quiet = np.zeros(rate // 3, dtype=F32)
    parts = [quiet]
    for op, arg, unit, extra in packets:
        parts += [mdc_signal(op, arg, unit, rate, extra=extra, **kw), quiet]
    return np.concatenate(parts)


def decode(x: np.ndarray, rate: int) -> list[MdcPacket]:
    decoder = Mdc1200Decoder(rate)
    return decoder.feed(x) + decoder.flush()


def test_the_codeword_meets_the_published_vectors() -> None:
    assert codeword_bytes(bytes.fromhex("01801234")) == bytes.fromhex(
        "018012342e3e006580a862dd8808"
    )
    assert codeword_bytes(bytes.fromhex("01000023")) == bytes.fromhex(
        "01000023ddf0006500000f451f21"
    )
    assert crc16(bytes.fromhex("01801234")) == 0x3E2E


def test_a_burst_received_elsewhere_decodes_and_is_sent_the_same() -> None:
    air = bytes.fromhex("949C222032A41A371E3A00982C84")
    bits = np.unpackbits(np.frombuffer(air, dtype=np.uint8)).astype(float)
    got = decode_codeword(1.0 - 2.0 * bits)
    assert got is not None
    seven, repaired = got
    assert seven[:4] == bytes.fromhex("0180B183") and repaired == 0
    assert bytes(np.packbits(codeword_air_bits(seven[:4], seven[6]))) == air


def test_the_code_repairs_errors_and_the_crc_refuses_what_it_cannot() -> None:
    bits = np.array(codeword_air_bits(bytes.fromhex("00810042")), dtype=float)
    soft = 1.0 - 2.0 * bits
    rng = np.random.default_rng(3)
    for flips in (1, 2, 3):
        for _ in range(20):
            hurt = soft.copy()
            hurt[rng.choice(112, flips, replace=False)] *= -1
            got = decode_codeword(hurt)
            assert got is not None and got[0][:4] == bytes.fromhex("00810042"), flips
            assert got[1] == flips
    refused = sum(decode_codeword(rng.choice([-1.0, 1.0], 112)) is None for _ in range(300))
    assert refused == 300  # a random codeword passes the CRC 1 time in 65,536


def test_packet_fields_are_checked() -> None:
    for kwargs, said in (
        ({"op": 256}, "op"),
        ({"arg": -1}, "arg"),
        ({"unit_id": 0x10000}, "unit_id"),
        ({"op": True}, "op"),
        ({"op": 0x35}, "needs 4 extra"),
        ({"extra": b"\x00\x00\x00\x00"}, "takes no"),
    ):
        args = {"op": 0x01, "arg": 0x80, "unit_id": 0x1234, "extra": None} | kwargs
        with pytest.raises(ValueError, match=said):
            packet_air_bits(**args)
    with pytest.raises(ValueError, match="sample_rate"):
        mdc_signal(1, 0x80, 1, 4000)
    with pytest.raises(ValueError, match="sample_rate"):
        Mdc1200Decoder(5000)


@pytest.mark.parametrize("rate", RATES)
def test_every_kind_at_every_rate(rate: int) -> None:
    x = burst_audio(
        rate,
        (0x01, 0x80, 0x1234, None),
        (0x00, 0x81, 0x0042, None),
        (0x35, 0x89, 0x1234, bytes.fromhex("830D5678")),
        (0x01, 0x00, 0xFFFF, None),
        (0x20, 0x00, 0x0000, None),
    )
    got = decode(x, rate)
    assert [(p.kind, p.unit, p.target) for p in got] == [
        ("ptt_id", "1234", None),
        ("emergency", "0042", None),
        ("call_alert", "1234", "5678"),
        ("post_id", "FFFF", None),
        ("emergency_ack", "0000", None),
    ]
    assert all(p.repaired_bits == 0 for p in got)
    assert got[1].emergency and not got[0].emergency
    # Times: the first sync bit starts after the preamble (56 bits) of the first burst.
    start = rate // 3 / rate + 56 / 1200
    assert got[0].start == pytest.approx(start, abs=2 / 1200)
    assert got[0].end == pytest.approx(start + 152 / 1200, abs=2 / 1200)


@pytest.mark.parametrize("offset", [0.005, -0.005])
def test_a_sender_whose_clock_is_half_a_percent_off_is_read(offset: float) -> None:
    rate = 8000
    x = burst_audio(
        rate,
        (0x01, 0x80, 0x1234, None),
        (0x35, 0x89, 0x1234, bytes.fromhex("830D5678")),
        offset=offset,
    )
    got = decode(x, rate)
    assert [(p.kind, p.unit, p.target) for p in got] == [
        ("ptt_id", "1234", None),
        ("call_alert", "1234", "5678"),
    ]


def test_an_inverted_signal_reads_the_same() -> None:
    x = burst_audio(8000, (0x01, 0x80, 0x4711, None))
    assert [p.unit for p in decode(-x, 8000)] == ["4711"]


def test_a_short_preamble_is_enough() -> None:
    # Some senders send 24 bits or less before the sync: the sync alone is looked for.
    rate = 8000
    x = mdc_signal(0x01, 0x80, 0x2222, rate)
    start = round(48 / 1200 * rate)  # cut 48 of the 56 preamble bits
    y = np.concatenate((np.zeros(rate // 4, F32), x[start:], np.zeros(rate // 4, F32)))
    assert [p.unit for p in decode(y, rate)] == ["2222"]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 2500), max_size=40))
def test_any_split_of_the_input_gives_the_same_packets(cuts: list[int]) -> None:
    rate = 8000
    x = burst_audio(rate, (0x01, 0x80, 0x1234, None), (0x35, 0x89, 0x1, b"\x83\x0d\x00\x02"))
    whole = decode(x, rate)
    assert feed_in_pieces(Mdc1200Decoder(rate), x, cuts) == whole
    assert len(whole) == 2


@settings(max_examples=20, deadline=None)
@given(
    st.lists(
        st.sampled_from([np.nan, np.inf, -np.inf, 0.0, 1.0, -1.0, 1e30, -1e30, 1e-30]),
        min_size=1,
        max_size=3000,
    )
)
def test_hostile_samples_are_survived(values: list[float]) -> None:
    rate = 8000
    decoder = Mdc1200Decoder(rate)
    decoder.feed(np.array(values, dtype=np.float64))
    # and it still reads a packet afterwards
    got = decoder.feed(burst_audio(rate, (0x01, 0x80, 0x0777, None))) + decoder.flush()
    assert [p.unit for p in got] == ["0777"]


def test_noise_at_minus_2_db_snr_still_reads() -> None:
    rate = 8000
    rng = np.random.default_rng(11)
    heard = 0
    for i in range(10):
        x = burst_audio(rate, (0x01, 0x80, 0x1000 + i, None), level_dbfs=-20)
        power = 10 ** (-20 / 10) / 2
        noisy = x + band_noise(len(x), rate, rng) * np.sqrt(power / 10 ** (-2 / 10))
        heard += [p.unit_id for p in decode(noisy.astype(F32), rate)] == [0x1000 + i]
    assert heard >= 9


def test_no_packet_from_two_minutes_of_noise_or_tones() -> None:
    rate = 8000
    rng = np.random.default_rng(12)
    noise = band_noise(rate * 120, rate, rng).astype(F32) * 0.3
    assert decode(noise, rate) == []
    t = np.arange(rate * 10) / rate
    steady = (0.3 * np.sin(2 * np.pi * 1800 * t) + 0.3 * np.sin(2 * np.pi * 1200 * t)).astype(F32)
    assert decode(steady, rate) == []


def test_a_packet_repeated_back_to_back_is_one_but_two_bursts_are_two() -> None:
    rate = 8000
    one = mdc_signal(0x00, 0x81, 0x0042, rate)
    twice = np.concatenate((np.zeros(rate // 4, F32), one, one, np.zeros(rate // 4, F32)))
    assert [p.kind for p in decode(twice, rate)] == ["emergency"]
    apart = burst_audio(rate, (0x00, 0x81, 0x0042, None), (0x00, 0x81, 0x0042, None))
    assert [p.kind for p in decode(apart, rate)] == ["emergency", "emergency"]
