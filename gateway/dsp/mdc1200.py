"""MDC-1200 (Motorola's 1200 bit/s signalling burst): a streaming decoder and an encoder.

There is no public standard. The format below is what the open implementations agree on
(Matthew Kaufman's MDC encoder/decoder library, used by app_rpt; the MDC-1200 code of the
UV-K5 firmwares, which work with Motorola radios); the tests check this module against the
byte vectors published in the latter, which is the only independent check there is:

- MSK at 1200 bit/s: a bit is one cycle of 1200 Hz when it equals the bit before, one and a
  half cycles of 1800 Hz when it differs (phase-continuous), bytes MSB first;
- a preamble of alternating bits (0x55 bytes: 1800 Hz), the 40-bit sync 07 09 2A 44 6F, then
  one codeword of 112 bits (two for the double-packet opcodes 0x35 and 0x55);
- a codeword carries 7 bytes: opcode, argument, unit ID (2 bytes, shown as 4 hex digits), a
  CRC-16 of those four (reflected 0x8408, initial 0, inverted; low byte first) and a status
  byte; then 7 bytes of parity of a rate-1/2 systematic convolutional code (parity of bits
  n, n-2, n-5 and n-6, bits taken LSB first), the 112 bits interleaved 7 x 16.

Detection is coherent. Seen from a 1200 Hz reference, the carrier's phase at each bit
boundary is 0 or pi, and which one is the bit (relative to an unknown start: a sync read
inverted is an inverted signal). Each boundary's value is the signal mixed to 1500 Hz under
the MSK matched filter (a half sine two bits long: the sum of two one-window correlations
at 1200 and 1800 Hz), taken at BIT_PHASES timing phases per bit. The sync is looked for by
correlation, insensitive to the carrier's phase; the sync found gives that phase, and the
codeword's 112 soft values are decoded by Viterbi over the code's 64 states, then the CRC
must hold. A codeword that does not decode is read again on a sender's clock a little
fast or slow (CLOCK_DRIFTS), its carrier's phase followed bit by bit. Any split of the
input into blocks gives the same packets.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from gateway.dsp.bins import raised_cosine_edges

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
C128 = npt.NDArray[np.complex128]

BAUD: Final = 1200
MIN_RATE: Final = 6000
SYNC: Final = 0x07092A446F
SYNC_BITS: Final = 40
CODEWORD_BITS: Final = 112
PREAMBLE_BYTES: Final = 7
DOUBLE_OPCODES: Final = frozenset({0x35, 0x55})
"""Opcodes followed by a second codeword (4 more bytes: a call alert's or a selective
call's other unit)."""
BIT_PHASES: Final = 8
MIN_SYNC_MATCH: Final = 0.55
"""Correlation (0-1) of 40 soft bits with the sync for a codeword to be tried: noise gives
about 0.16, a clean burst 1.0; a codeword must still decode and pass its CRC."""
MAX_REPAIRS: Final = 12
"""Coded bits (of 112) the Viterbi decoder may have had to overrule; more is a guess."""
SAME_BURST_S: Final = 0.25
CHUNK_S: Final = 0.1
CLOCK_DRIFTS: Final = (0.002, -0.002, 0.004, -0.004, 0.006, -0.006, 0.008, -0.008)
"""A codeword that does not decode on our clock is tried on these (a sender this much
fast or slow). A sender 0.5 % off is read as one on time (20 packets at 10, 0 and -2 dB
SNR), 0.8 % off about two in three, 1 % off one in five; radios are crystal-controlled."""
TRACK_BITS: Final = 12
TILT_GAINS: Final = (0.5,)
"""Weights of the 1800 Hz part tried when a codeword decodes on neither clock: audio
whose 1800 Hz is 6 dB under its 1200 Hz (de-emphasis twice) is matched by half the weight
(the other way round costs little: bench/signalling.py). Each try is a chance for noise
to pass the CRC: few, and the repairs capped (MAX_REPAIRS)."""
_ATTEMPTS: Final = [(gain, drift) for gain in (1.0, *TILT_GAINS) for drift in (0.0, *CLOCK_DRIFTS)]
_CLIP: Final = 8.0  # full scale is 1

_SYNC_SIGNS: Final = np.array(
    [1.0 - 2.0 * ((SYNC >> (SYNC_BITS - 1 - j)) & 1) for j in range(SYNC_BITS)]
)
# Air bit a carries coded bit m (the 7 x 16 interleave): a = 16 * (m % 7) + m // 7.
_AIR_OF_CODED: Final = np.array([16 * (m % 7) + m // 7 for m in range(CODEWORD_BITS)])

OPCODE_NAMES: Final[dict[tuple[int, int | None], str]] = {
    (0x01, 0x80): "ptt_id",
    (0x01, 0x00): "post_id",
    (0x00, None): "emergency",
    (0x20, None): "emergency_ack",
    (0x11, None): "remote_monitor",
    (0x22, None): "status_request",
    (0x23, None): "acknowledge",
    (0x2B, 0x0C): "radio_enable",
    (0x2B, 0x00): "radio_inhibit",
    (0x0B, None): "inhibit_ack",
    (0x35, None): "call_alert",
    (0x46, None): "status",
    (0x47, None): "message",
    (0x63, 0x85): "radio_check",
    (0x03, None): "radio_check_ack",
}
"""Common opcodes (from the open implementations' lists; systems define their own). Keys
with argument None match any argument."""


def crc16(data: bytes) -> int:
    """MDC-1200's CRC: CRC-16 reflected (0x8408), initial 0, inverted at the end."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc ^ 0xFFFF


def _parity(info: Sequence[int]) -> list[int]:
    """The code's parity bits: bit n of the info stream with bits n-2, n-5 and n-6."""
    return [
        info[n]
        ^ (info[n - 2] if n >= 2 else 0)
        ^ (info[n - 5] if n >= 5 else 0)
        ^ (info[n - 6] if n >= 6 else 0)
        for n in range(len(info))
    ]


def _lsb_bits(data: bytes) -> list[int]:
    return [(byte >> j) & 1 for byte in data for j in range(8)]


def codeword_bytes(four: bytes, status: int = 0) -> bytes:
    """The 14 bytes of one codeword before interleaving: the 4 bytes, their CRC (low byte
    first), the status byte, then the 7 parity bytes."""
    if len(four) != 4 or not 0 <= status <= 0xFF:
        raise ValueError("a codeword carries 4 bytes and a status byte")
    crc = crc16(four)
    seven = bytes(four) + bytes((crc & 0xFF, crc >> 8, status))
    parity = _parity(_lsb_bits(seven))
    return seven + bytes(sum(parity[8 * i + j] << j for j in range(8)) for i in range(len(seven)))


def codeword_air_bits(four: bytes, status: int = 0) -> list[int]:
    """The 112 bits of a codeword in the order they are sent."""
    coded = _lsb_bits(codeword_bytes(four, status))
    air = [0] * CODEWORD_BITS
    for m, a in enumerate(_AIR_OF_CODED):
        air[a] = coded[m]
    return air


def _msb_bits(data: bytes) -> list[int]:
    return [(byte >> (7 - j)) & 1 for byte in data for j in range(8)]


@dataclass(frozen=True, slots=True)
class MdcPacket:
    """One packet: opcode, argument, unit ID, and for a double packet its 4 extra bytes.
    `start`/`end` are stream times (s) of its sync's first bit and its last bit."""

    op: int
    arg: int
    unit_id: int
    extra: bytes | None
    start: float
    end: float
    repaired_bits: int = 0

    @property
    def unit(self) -> str:
        """The unit ID as radios show it: 4 hex digits."""
        return f"{self.unit_id:04X}"

    @property
    def kind(self) -> str:
        """What the opcode means, or 'op_XX' for one not in OPCODE_NAMES."""
        return OPCODE_NAMES.get(
            (self.op, self.arg), OPCODE_NAMES.get((self.op, None), f"op_{self.op:02x}")
        )

    @property
    def emergency(self) -> bool:
        return self.op == 0x00

    @property
    def target(self) -> str | None:
        """A double packet's other unit (its extra bytes 2-3), as 4 hex digits."""
        return None if self.extra is None else f"{self.extra[2]:02X}{self.extra[3]:02X}"


def packet_air_bits(op: int, arg: int, unit_id: int, extra: bytes | None = None) -> list[int]:
    """Preamble, sync and codeword(s) of a packet, as sent."""
    for name, value, top in (("op", op, 0xFF), ("arg", arg, 0xFF), ("unit_id", unit_id, 0xFFFF)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
            raise ValueError(f"{name} must be an integer 0..{top:#x}, got {value!r}")
    if (op in DOUBLE_OPCODES) != (extra is not None):
        raise ValueError(
            f"opcode {op:#04x} {'needs' if op in DOUBLE_OPCODES else 'takes no'} 4 extra bytes"
        )
    if extra is not None and len(extra) != 4:
        raise ValueError("a double packet's second codeword carries 4 bytes")
    bits = _msb_bits(bytes([0x55] * PREAMBLE_BYTES) + SYNC.to_bytes(5, "big"))
    bits += codeword_air_bits(bytes((op, arg, unit_id >> 8, unit_id & 0xFF)))
    if extra is not None:
        bits += codeword_air_bits(bytes(extra))
    return bits


def mdc_signal(
    op: int,
    arg: int,
    unit_id: int,
    sample_rate: int,
    *,
    extra: bytes | None = None,
    level_dbfs: float = -10.0,
    offset: float = 0.0,
) -> F32:
    """A packet as audio: MSK, a 1200 Hz cycle for a bit equal to the one before, 1.5
    cycles of 1800 Hz for one that differs, phase-continuous. `offset` is a relative
    error of the sender's clock (tones and bit rate). 2 ms raised-cosine ends."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate < MIN_RATE:
        raise ValueError(f"sample_rate must be an integer >= {MIN_RATE}, got {sample_rate!r}")
    bits = packet_air_bits(op, arg, unit_id, extra)
    bits.append(1 - bits[-1])  # one more bit: the last one's end is not cut by the edge ramp
    changes = np.array([1] + [int(b != a) for a, b in itertools.pairwise(bits)])
    baud = BAUD * (1.0 + offset)
    n = math.ceil(len(bits) * sample_rate / baud)
    t_bits = np.arange(n) * baud / sample_rate  # time in bits
    k = np.minimum(t_bits.astype(np.int64), len(bits) - 1)
    # Cycles (in 1200 Hz cycles) at each bit's start, then linear within the bit.
    per_bit = np.where(changes == 1, 1.5, 1.0)
    at_start = np.concatenate(([0.0], np.cumsum(per_bit)))[:-1]
    cycles = at_start[k] + per_bit[k] * (t_bits - k)
    out: F64 = 10.0 ** (level_dbfs / 20.0) * np.sin(2.0 * np.pi * cycles)
    return raised_cosine_edges(out, sample_rate).astype(np.float32)


# ---------------------------------------------------------------------------- decoding


def _viterbi(soft_info: F64, soft_parity: F64) -> tuple[list[int], int]:
    """The info bits (56) most likely given soft values (positive: 0) of info and parity,
    and how many of the 112 hard decisions the answer overrules."""
    states = np.arange(64)
    # State: the last six info bits, bit 0 the newest. A new bit u taken in state s gives
    # parity u ^ bit1 ^ bit4 ^ bit5 of s and state ((s << 1) | u) & 63; so new state t
    # comes from t >> 1 or (t >> 1) | 32 with u = t & 1.
    u = states & 1
    sign_u = 1.0 - 2.0 * u
    older = (states >> 1, (states >> 1) | 32)
    sign_p = [1.0 - 2.0 * ((((s >> 1) ^ (s >> 4) ^ (s >> 5)) & 1) ^ u) for s in older]
    metric = np.full(64, -np.inf)
    metric[0] = 0.0  # the encoder's register starts at zero
    came_from = np.zeros((len(soft_info), 64), dtype=np.int64)
    for n in range(len(soft_info)):
        via = [
            metric[s] + sign_u * soft_info[n] + sp * soft_parity[n]
            for s, sp in zip(older, sign_p, strict=True)
        ]
        second = via[1] > via[0]
        came_from[n] = np.where(second, older[1], older[0])
        metric = np.maximum(via[0], via[1])
    state = int(np.argmax(metric))
    info = [0] * len(soft_info)
    for n in range(len(soft_info) - 1, -1, -1):
        info[n] = state & 1
        state = int(came_from[n][state])
    parity = _parity(info)
    repairs = int(np.sum((soft_info < 0) != np.array(info, bool)))
    repairs += int(np.sum((soft_parity < 0) != np.array(parity, bool)))
    return info, repairs


def _bits_to_bytes(bits: Sequence[int]) -> bytes:
    return bytes(sum(bits[8 * i + j] << j for j in range(8)) for i in range(len(bits) // 8))


def decode_codeword(soft: F64) -> tuple[bytes, int] | None:
    """A codeword's 7 bytes (4 data, CRC, status) and the coded bits repaired, from its 112
    soft values in air order (positive: a 0 bit); None unless the CRC holds."""
    coded = np.asarray(soft, dtype=np.float64)[_AIR_OF_CODED]
    info, repairs = _viterbi(coded[:56], coded[56:])
    seven = _bits_to_bytes(info)
    if crc16(seven[:4]) != seven[4] | (seven[5] << 8):
        return None
    return seven, repairs


_WAIT: Final = object()


@dataclass(slots=True)
class _Found:
    key: tuple[int, int, int, bytes | None]
    end_j: int


class Mdc1200Decoder:
    """feed() samples (float, any block size), get the packets they complete."""

    def __init__(self, sample_rate: int) -> None:
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int):
            raise ValueError(f"sample_rate must be an integer, got {sample_rate!r}")
        if sample_rate < MIN_RATE:
            raise ValueError(f"sample_rate must be >= {MIN_RATE} Hz, got {sample_rate}")
        self.rate = sample_rate
        self._span = sample_rate / 600.0  # the matched filter: a half sine 2 bits long
        self._taps = round(self._span)
        # Every mixer here is a multiple of 300 Hz: its phase repeats after `period` samples.
        self._period = sample_rate // math.gcd(sample_rate, 300)
        m = np.arange(self._period)
        self._mix_lo = np.exp(-2j * np.pi * 1200 * m / sample_rate)
        self._mix_hi = np.exp(-2j * np.pi * 1800 * m / sample_rate)
        self._turn_hi = np.exp(2j * np.pi * 600 * m / sample_rate)
        w300 = 2.0 * np.pi * 300.0 / sample_rate
        self._k_lo = np.exp(1j * w300 * self._taps / 2.0) / 2j
        self._k_hi = np.exp(1j * w300 * (1.0 - 1.5 * self._taps)) / 2j
        self._tail = np.zeros(self._taps - 1)  # input samples before `_next_n`
        self._next_n = 0  # absolute index of the next input sample
        self._next_j = 0  # next bit instant (bit k, phase p: j = k * BIT_PHASES + p)
        keep = (SYNC_BITS + 2 * CODEWORD_BITS + 64) * BIT_PHASES
        self._keep = keep
        self._s = np.zeros(0, dtype=np.complex128)  # soft bit values at instants
        self._hi = np.zeros(0, dtype=np.complex128)  # their 1800 Hz part (for a tilt)
        self._s_base = 0  # the instant of _s[0]
        self._searched = SYNC_BITS * BIT_PHASES - 1  # last instant that ended a sync search
        self._pending: list[tuple[int, float]] = []  # (sync's last instant, match)
        self._found: list[_Found] = []
        self._chunk = round(CHUNK_S * sample_rate)
        self._held: list[F64] = []
        self._held_n = 0

    # -- instants ---------------------------------------------------------------------
    def _window_end(self, j: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """The input index ending the matched filter centred on instant j (rounded)."""
        den = 2 * BIT_PHASES * BAUD
        return (2 * j * self.rate + (self._taps - 1) * BIT_PHASES * BAUD + BIT_PHASES * BAUD) // den

    def feed(self, samples: npt.ArrayLike) -> list[MdcPacket]:
        x = np.asarray(samples, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(x)):
            x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        if len(x) == 0:
            return []
        # Sums run along the stream: a wild sample must not swamp their precision.
        x = np.clip(x, -_CLIP, _CLIP)
        # Worked in chunks of CHUNK_S: the cost is per call more than per sample, and a
        # packet lasts 150 ms anyway.
        self._held.append(x)
        self._held_n += len(x)
        if self._held_n < self._chunk:
            return []
        return self._work()

    def flush(self) -> list[MdcPacket]:
        """At the stream's end: a packet that ends right there is still read (its last
        bits need a little of what follows: silence)."""
        self._held.append(np.zeros(round(0.02 * self.rate) + 2 * self._taps))
        return self._work()

    def _work(self) -> list[MdcPacket]:
        x = np.concatenate(self._held) if len(self._held) > 1 else self._held[0]
        self._held, self._held_n = [], 0
        buf = np.concatenate((self._tail, x))
        first = self._next_n - len(self._tail)  # absolute index of buf[0] (may be < 0)
        self._next_n += len(x)
        self._tail = buf[len(buf) - (self._taps - 1) :].copy() if self._taps > 1 else buf[:0]
        last_end = self._next_n - 1
        # Instants whose window ends by the last sample: window_end(j) <= last_end.
        den = 2 * BIT_PHASES * BAUD
        num = (last_end + 1) * den - (self._taps - 1) * BIT_PHASES * BAUD - BIT_PHASES * BAUD
        j_hi = max(self._next_j, -(-num // (2 * self.rate)))
        if j_hi == self._next_j:
            return []
        j = np.arange(self._next_j, j_hi, dtype=np.int64)
        self._next_j = j_hi
        ends = self._window_end(j)
        valid = ends - self._taps + 1 >= 0
        idx = (np.arange(len(buf)) + first) % self._period
        cs_lo = np.concatenate(([0.0], np.cumsum(buf * self._mix_lo[idx])))
        cs_hi = np.concatenate(([0.0], np.cumsum(buf * self._mix_hi[idx])))
        at = ends - first + 1  # cumsum index past the window's end
        lo_at = np.clip(at, self._taps, len(buf))
        w_lo = cs_lo[lo_at] - cs_lo[lo_at - self._taps]
        w_hi = cs_hi[lo_at] - cs_hi[lo_at - self._taps]
        hi = self._k_hi * self._turn_hi[ends % self._period] * w_hi
        s = self._k_lo * w_lo - hi
        s[~valid] = 0.0
        hi[~valid] = 0.0
        self._s = np.concatenate((self._s, s))
        self._hi = np.concatenate((self._hi, hi))
        return self._search_and_decode()

    # -- sync and codewords -------------------------------------------------------------
    def _search_and_decode(self) -> list[MdcPacket]:
        P = BIT_PHASES  # noqa: N806 (the symbol of the formulas)
        span = (SYNC_BITS - 1) * P
        top = self._s_base + len(self._s) - 1
        lo = max(self._searched + 1, self._s_base + span)
        if top >= lo:
            seg = self._s[lo - span - self._s_base : top + 1 - self._s_base]
            win = np.lib.stride_tricks.sliding_window_view(seg, span + 1)[:, ::P]
            half = SYNC_BITS // 2
            c1 = win[:, :half] @ _SYNC_SIGNS[:half]
            c2 = win[:, half:] @ _SYNC_SIGNS[half:]
            energy = np.einsum("ij,ij->i", win.real, win.real) + np.einsum(
                "ij,ij->i", win.imag, win.imag
            )
            match = (np.abs(c1) + np.abs(c2)) / np.sqrt(SYNC_BITS * np.maximum(energy, 1e-30))
            for i in np.flatnonzero(match >= MIN_SYNC_MATCH):
                self._pending.append((lo + int(i), float(match[i])))
            self._searched = top
        out: list[MdcPacket] = []
        while self._pending:
            j0 = self._pending[0][0]
            # Every candidate of the cluster (j0 .. j0 + 2P) needs its codeword in.
            need = j0 + (CODEWORD_BITS + 2) * P
            if need > top or j0 + 2 * P > self._searched:
                break
            cluster = [c for c in self._pending if c[0] <= j0 + 2 * P]
            rest = [c for c in self._pending if c[0] > j0 + 2 * P]
            wait = False
            for j, _ in sorted(cluster, key=lambda c: -c[1]):
                packet = self._decode_at(j)
                if packet is _WAIT:
                    wait = True  # a double packet's second codeword is still to come
                    break
                if isinstance(packet, MdcPacket):
                    out.append(packet)
                    break
            if wait:
                break
            self._pending = rest
        self._trim()
        return out

    def _values(self, idx: slice | npt.NDArray[np.int64], gain: float) -> C128:
        """Soft bit values at instants, the 1800 Hz part weighted `gain` (1: as matched)."""
        if gain == 1.0:
            return self._s[idx]
        out: C128 = self._s[idx] + (1.0 - gain) * self._hi[idx]
        return out

    def _soft(self, j_first: int, bits: int, phase: complex, gain: float = 1.0) -> F64 | None:
        P = BIT_PHASES  # noqa: N806 (the symbol of the formulas)
        a = j_first - self._s_base
        if a < 0 or a + (bits - 1) * P >= len(self._s):
            return None
        r: F64 = (self._values(slice(a, a + (bits - 1) * P + 1, P), gain) * np.conj(phase)).real
        return r

    def _decode_at(self, j: int) -> MdcPacket | object | None:
        P = BIT_PHASES  # noqa: N806 (the symbol of the formulas)
        a = j - (SYNC_BITS - 1) * P - self._s_base
        if a < 0:
            return None  # its sync has left the history
        sync_s = self._s[a : a + SYNC_BITS * P : P]
        payload = self._s[a + SYNC_BITS * P : a + (SYNC_BITS + CODEWORD_BITS) * P : P]
        phase = self._phase(sync_s, payload)
        read = self._first_codeword(j, phase)
        if not isinstance(read, tuple):
            return read
        got, drift, gain, end_phase = read
        seven, repairs = got
        op, arg, unit = seven[0], seven[1], (seven[2] << 8) | seven[3]
        extra: bytes | None = None
        end_j = j + CODEWORD_BITS * P
        if op in DOUBLE_OPCODES:
            second = self._second_codeword(j, phase, drift, gain, end_phase)
            if second is _WAIT:
                return _WAIT
            if isinstance(second, tuple):
                extra = second[0][:4]
                repairs += second[1]
                end_j += CODEWORD_BITS * P
        key = (op, arg, unit, extra)
        recent = self._found and any(
            f.key == key and end_j - f.end_j <= SAME_BURST_S * BAUD * P for f in self._found
        )
        self._found = [f for f in self._found if end_j - f.end_j <= SAME_BURST_S * BAUD * P]
        self._found.append(_Found(key, end_j))
        if recent:
            return None
        per_s = 1.0 / (P * BAUD)
        return MdcPacket(
            op,
            arg,
            unit,
            extra,
            start=(j - SYNC_BITS * P) * per_s,
            end=end_j * per_s,
            repaired_bits=repairs,
        )

    def _first_codeword(
        self, j: int, phase: complex
    ) -> tuple[tuple[bytes, int], float, float, complex] | object | None:
        """The codeword after the sync ending at instant j, the clock drift and the 1800 Hz
        gain it was read with, and the carrier's phase at its end; _WAIT while its input is
        still to come; None when it does not decode."""
        P = BIT_PHASES  # noqa: N806 (the symbol of the formulas)
        for gain, drift in _ATTEMPTS:
            read = self._read(j + P, phase, drift, gain)
            if read is None:
                return _WAIT
            got = decode_codeword(read[0])
            if got is not None and got[1] <= MAX_REPAIRS:
                return got, drift, gain, read[1]
        return None

    def _read(
        self, j_first: int, phase: complex, drift: float, gain: float
    ) -> tuple[F64, complex] | None:
        """A codeword's soft values from instant `j_first` and the carrier's phase at its
        end: on our clock at the given phase, or slid and tracked for a drift."""
        if drift:
            return self._tracked(j_first, CODEWORD_BITS, phase, drift, gain)
        soft = self._soft(j_first, CODEWORD_BITS, phase, gain)
        return None if soft is None else (soft, phase)

    def _second_codeword(
        self, j: int, phase: complex, drift: float, gain: float, end_phase: complex
    ) -> tuple[bytes, int] | object | None:
        """A double packet's second codeword, with the first one's gain: on its clock,
        else on the others (224 bits make a small clock error count)."""
        P = BIT_PHASES  # noqa: N806 (the symbol of the formulas)
        for d in sorted((0.0, *CLOCK_DRIFTS), key=lambda d: abs(d - drift)):
            at = j + P + round(P * CODEWORD_BITS * (1.0 - d))
            read = self._read(at, end_phase if drift else phase, d, gain)
            if read is None:
                return _WAIT
            got = decode_codeword(read[0])
            if got is not None and got[1] <= MAX_REPAIRS:
                return got
        return None

    def _tracked(
        self, j_first: int, bits: int, phase: complex, drift: float, gain: float = 1.0
    ) -> tuple[F64, complex] | None:
        """Soft values of `bits` bits from instant `j_first` for a sender `drift` fast
        (its bits 1 - drift of ours), the carrier's phase followed over TRACK_BITS around
        each bit (squared values: no decisions), on the branch nearer `phase`; and the
        phase at the last bit. None when the input is not there yet."""
        P = BIT_PHASES  # noqa: N806 (the symbol of the formulas)
        at = j_first + np.rint(P * np.arange(bits) * (1.0 - drift)).astype(np.int64)
        a = at - self._s_base
        if a[0] < 0 or a[-1] >= len(self._s):
            return None
        v = self._values(a, gain)
        sq = np.concatenate(([0.0], np.cumsum(v * v)))
        lo = np.clip(np.arange(bits) - TRACK_BITS, 0, bits)
        hi = np.clip(np.arange(bits) + TRACK_BITS + 1, 0, bits)
        turn = np.unwrap(np.angle(sq[hi] - sq[lo])) / 2.0
        # The squared values know the phase to within pi: take the sync's side.
        if math.cos(turn[0] - math.atan2(phase.imag, phase.real)) < 0:
            turn = turn + math.pi
        r: F64 = (v * np.exp(-1j * turn)).real
        return r, complex(np.exp(1j * turn[-1]))

    @staticmethod
    def _phase(sync_s: C128, payload: C128) -> complex:
        """The carrier's phase: from the sync (known bits), refined by the codeword's
        squared values (the branch nearer the sync's)."""
        c = complex(np.sum(sync_s * _SYNC_SIGNS))
        sq = complex(np.sum(payload * payload))
        if abs(c) == 0.0:
            return 1.0
        ref = c / abs(c)
        if abs(sq) == 0.0:
            return ref
        half = np.sqrt(sq / abs(sq))
        if (half * np.conj(ref)).real < 0:
            half = -half
        # Weight each by what it holds: |c| from 40 known bits, sqrt|sq| from 112 squared.
        mix = ref * abs(c) + half * math.sqrt(abs(sq)) * math.sqrt(CODEWORD_BITS)
        return mix / abs(mix) if abs(mix) else ref

    def _trim(self) -> None:
        extra = len(self._s) - self._keep
        if extra > 0:
            self._s = self._s[extra:]
            self._hi = self._hi[extra:]
            self._s_base += extra
            self._pending = [
                c for c in self._pending if c[0] - (SYNC_BITS - 1) * BIT_PHASES >= self._s_base
            ]


SEND_KINDS: Final[dict[str, tuple[int, int]]] = {
    "ptt_id": (0x01, 0x80),
    "post_id": (0x01, 0x00),
    "emergency": (0x00, 0x81),
    "emergency_ack": (0x20, 0x00),
    "radio_check": (0x63, 0x85),
    "acknowledge": (0x23, 0x00),
}
"""Packets by name for `parse_packet`: the usual opcode and argument of each."""


def parse_packet(text: str) -> tuple[int, int, int, bytes | None]:
    """(op, arg, unit, extra) from `KIND:UNIT` (KIND one of SEND_KINDS), `OPARG:UNIT` in
    hex (e.g. 0180:1234), or `OPARG:UNIT:EXTRA` (8 hex digits) for a double packet."""
    parts = text.strip().split(":")
    shown = ", ".join(SEND_KINDS)
    try:
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError
        what = parts[0].strip().lower()
        if what in SEND_KINDS:
            op, arg = SEND_KINDS[what]
        elif len(what) == 4:
            op, arg = int(what[:2], 16), int(what[2:], 16)
        else:
            raise ValueError
        if len(parts[1]) != 4:
            raise ValueError
        unit = int(parts[1], 16)
        extra = bytes.fromhex(parts[2]) if len(parts) == 3 else None
        packet_air_bits(op, arg, unit, extra)
    except ValueError as exc:
        detail = f" ({exc})" if str(exc) else ""
        raise ValueError(
            f"MDC-1200 packet {text!r}: give KIND:UNIT ({shown}), OPARG:UNIT in hex "
            f"(0180:1234), or OPARG:UNIT:EXTRA for a double packet{detail}"
        ) from None
    return op, arg, unit, extra
