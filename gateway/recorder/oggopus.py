"""Ogg/Opus files written through libopus and libogg (RFC 7845), for the recorder.

Why not libsndfile's Opus (through soundfile), which writes the same format: it cannot set
libopus's complexity, and at its default (10) the encoder costs about 6 ms of CPU per
channel-second at 8 kHz. Complexity 5 with the VoIP application costs half that, and on
narrowband radio speech the difference is not audible (bench/recorder.py measures both).
libopus and libogg are the libraries libsndfile itself uses, from Debian (libopus0,
libogg0); where they are missing, the recorder falls back to libsndfile.

Pages are flushed on `flush()` (the recorder's `flush_s`): a `kill -9` leaves a file that
decodes to its last flushed page, with no end-of-stream page; readers (libsndfile,
opusfile, browsers) play it up to there.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import secrets
import struct
from typing import IO

import numpy as np
from numpy.typing import NDArray

from drivers.errors import ConsoleGwError

OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
FRAME_S = 0.020
"""20 ms per Opus packet: the usual for speech (fewer packets cost more Ogg overhead)."""
COMPLEXITY = 5
DEFAULT_BITRATE = 16_000

_APPLICATION_VOIP = 2048
_SET_BITRATE = 4002
_SET_COMPLEXITY = 4010
_SET_SIGNAL = 4024
_SIGNAL_VOICE = 3001
_GET_LOOKAHEAD = 4027
_MAX_PACKET = 4000


class OpusError(ConsoleGwError):
    """libopus or libogg refused, or is not on this machine."""


class _OggPacket(ctypes.Structure):
    _fields_ = (
        ("packet", ctypes.c_void_p),
        ("bytes", ctypes.c_long),
        ("b_o_s", ctypes.c_long),
        ("e_o_s", ctypes.c_long),
        ("granulepos", ctypes.c_int64),
        ("packetno", ctypes.c_int64),
    )


class _OggPage(ctypes.Structure):
    _fields_ = (
        ("header", ctypes.POINTER(ctypes.c_ubyte)),
        ("header_len", ctypes.c_long),
        ("body", ctypes.POINTER(ctypes.c_ubyte)),
        ("body_len", ctypes.c_long),
    )


class _OggStreamState(ctypes.Structure):
    # ogg.h's ogg_stream_state (libogg 1.x's ABI); libogg owns what the pointers point to.
    _fields_ = (
        ("body_data", ctypes.c_void_p),
        ("body_storage", ctypes.c_long),
        ("body_fill", ctypes.c_long),
        ("body_returned", ctypes.c_long),
        ("lacing_vals", ctypes.c_void_p),
        ("granule_vals", ctypes.c_void_p),
        ("lacing_storage", ctypes.c_long),
        ("lacing_fill", ctypes.c_long),
        ("lacing_packet", ctypes.c_long),
        ("lacing_returned", ctypes.c_long),
        ("header", ctypes.c_ubyte * 282),
        ("header_fill", ctypes.c_int),
        ("e_o_s", ctypes.c_int),
        ("b_o_s", ctypes.c_int),
        ("serialno", ctypes.c_long),
        ("pageno", ctypes.c_long),
        ("packetno", ctypes.c_int64),
        ("granulepos", ctypes.c_int64),
    )


class _Libs:
    def __init__(self) -> None:
        opus_name = ctypes.util.find_library("opus")
        ogg_name = ctypes.util.find_library("ogg")
        if opus_name is None or ogg_name is None:
            missing = " and ".join(
                n for n, found in (("libopus", opus_name), ("libogg", ogg_name)) if not found
            )
            raise OpusError(f"{missing} not found (Debian: libopus0, libogg0)")
        opus = ctypes.CDLL(opus_name)
        ogg = ctypes.CDLL(ogg_name)
        c_int, c_void_p = ctypes.c_int, ctypes.c_void_p
        self.create = opus.opus_encoder_create
        self.create.restype = c_void_p
        self.create.argtypes = [ctypes.c_int32, c_int, c_int, ctypes.POINTER(c_int)]
        self.destroy = opus.opus_encoder_destroy
        self.destroy.argtypes = [c_void_p]
        self.destroy.restype = None
        self.encode = opus.opus_encode
        self.encode.restype = ctypes.c_int32
        self.encode.argtypes = [c_void_p, c_void_p, c_int, c_void_p, ctypes.c_int32]
        # opus_encoder_ctl is variadic: one prototype per kind of argument.
        self.ctl_int = opus["opus_encoder_ctl"]
        self.ctl_int.argtypes = [c_void_p, c_int, ctypes.c_int32]
        self.ctl_int.restype = c_int
        self.ctl_ptr = opus["opus_encoder_ctl"]
        self.ctl_ptr.argtypes = [c_void_p, c_int, ctypes.POINTER(ctypes.c_int32)]
        self.ctl_ptr.restype = c_int
        self.strerror = opus.opus_strerror
        self.strerror.restype = ctypes.c_char_p
        self.strerror.argtypes = [c_int]
        self.version = opus.opus_get_version_string
        self.version.restype = ctypes.c_char_p
        self.version.argtypes = []
        stream = ctypes.POINTER(_OggStreamState)
        self.stream_init = ogg.ogg_stream_init
        self.stream_init.argtypes = [stream, c_int]
        self.stream_init.restype = c_int
        self.stream_clear = ogg.ogg_stream_clear
        self.stream_clear.argtypes = [stream]
        self.stream_clear.restype = c_int
        self.packetin = ogg.ogg_stream_packetin
        self.packetin.argtypes = [stream, ctypes.POINTER(_OggPacket)]
        self.packetin.restype = c_int
        self.pageout = ogg.ogg_stream_pageout
        self.pageout.argtypes = [stream, ctypes.POINTER(_OggPage)]
        self.pageout.restype = c_int
        self.flush = ogg.ogg_stream_flush
        self.flush.argtypes = [stream, ctypes.POINTER(_OggPage)]
        self.flush.restype = c_int

    def error(self, code: int) -> str:
        text = self.strerror(code)
        return text.decode(errors="replace") if text else f"error {code}"


@functools.cache
def _libs() -> _Libs:
    return _Libs()


def available() -> str | None:
    """None when this module can write here; otherwise why not."""
    try:
        _libs()
    except (OpusError, OSError, AttributeError) as exc:
        return str(exc)
    return None


class OggOpusWriter:
    """One mono Ogg/Opus stream into a binary file this writer owns (closed by close())."""

    def __init__(
        self,
        file: IO[bytes],
        samplerate: int,
        *,
        bitrate: int = DEFAULT_BITRATE,
        comments: dict[str, str] | None = None,
    ) -> None:
        if samplerate not in OPUS_RATES:
            raise ValueError(f"Opus takes {OPUS_RATES} Hz, not {samplerate}")
        self._lib = lib = _libs()
        self._file = file
        self.samplerate = samplerate
        self._frame = int(samplerate * FRAME_S)
        self._to_48k = 48000 // samplerate
        error = ctypes.c_int(0)
        self._enc: int | None = lib.create(samplerate, 1, _APPLICATION_VOIP, ctypes.byref(error))
        if not self._enc or error.value != 0:
            raise OpusError(f"opus_encoder_create: {lib.error(error.value)}")
        for request, value in (
            (_SET_BITRATE, bitrate),
            (_SET_COMPLEXITY, COMPLEXITY),
            (_SET_SIGNAL, _SIGNAL_VOICE),
        ):
            self._ctl(request, value)
        lookahead = ctypes.c_int32(0)
        self._check(lib.ctl_ptr(self._enc, _GET_LOOKAHEAD, ctypes.byref(lookahead)), "lookahead")
        self._lookahead = int(lookahead.value)
        self._stream = _OggStreamState()
        if lib.stream_init(ctypes.byref(self._stream), secrets.randbits(31)) != 0:
            lib.destroy(self._enc)
            self._enc = None
            raise OpusError("ogg_stream_init failed")
        self._page = _OggPage()
        self._packetno = 0
        self._encoded = 0  # samples (at samplerate) given to the encoder, padding included
        self.frames = 0  # samples written by the caller
        self._pending = np.zeros(0, dtype=np.int16)
        self._out = ctypes.create_string_buffer(_MAX_PACKET)
        self._closed = False
        pre_skip = self._lookahead * self._to_48k
        head = b"OpusHead" + struct.pack("<BBHIhB", 1, 1, pre_skip, samplerate, 0, 0)
        self._header(head)
        vendor = (lib.version() or b"libopus").decode(errors="replace")
        tags = [f"ENCODER=consolegw, {vendor}"]
        tags += [f"{k}={v}" for k, v in (comments or {}).items()]
        self._header(_opus_tags(vendor, tags))

    def _ctl(self, request: int, value: int) -> None:
        assert self._enc is not None
        self._check(self._lib.ctl_int(self._enc, request, value), f"ctl {request}")

    def _check(self, code: int, what: str) -> None:
        if code < 0:
            raise OpusError(f"libopus {what}: {self._lib.error(code)}")

    def _packet(
        self,
        data: ctypes.Array[ctypes.c_char],
        size: int,
        *,
        granule: int,
        bos: bool = False,
        eos: bool = False,
    ) -> None:
        packet = _OggPacket(
            ctypes.cast(data, ctypes.c_void_p), size, int(bos), int(eos), granule, self._packetno
        )
        self._packetno += 1
        # libogg copies the packet: the buffer is free again once this returns.
        if self._lib.packetin(ctypes.byref(self._stream), ctypes.byref(packet)) != 0:
            raise OpusError("ogg_stream_packetin failed")

    def _header(self, data: bytes) -> None:
        self._packet(
            ctypes.create_string_buffer(data, len(data)),
            len(data),
            granule=0,
            bos=self._packetno == 0,
        )
        self._pages(flush=True)  # RFC 7845: each header ends its page

    def _pages(self, *, flush: bool) -> None:
        """Write the pages libogg has completed (all of them, on a flush)."""
        take = self._lib.flush if flush else self._lib.pageout
        while take(ctypes.byref(self._stream), ctypes.byref(self._page)):
            page = self._page
            self._file.write(ctypes.string_at(page.header, page.header_len))
            self._file.write(ctypes.string_at(page.body, page.body_len))

    def _encode_frame(
        self, frame: NDArray[np.int16], *, granule: int | None = None, eos: bool = False
    ) -> None:
        assert self._enc is not None
        n = self._lib.encode(self._enc, frame.ctypes.data, self._frame, self._out, _MAX_PACKET)
        self._check(n, "encode")
        self._encoded += self._frame
        # A packet's granule position: the 48 kHz samples decoded up to its end.
        at = self._encoded * self._to_48k if granule is None else granule
        self._packet(self._out, n, granule=at, eos=eos)

    def write(self, pcm: NDArray[np.int16]) -> None:
        """Append samples (mono int16 at the writer's rate)."""
        if self._closed:
            raise OpusError("write after close")
        if len(pcm) == 0:
            return
        self.frames += len(pcm)
        data = np.concatenate((self._pending, pcm.astype(np.int16, copy=False)))
        whole = len(data) - len(data) % self._frame
        for start in range(0, whole, self._frame):
            self._encode_frame(np.ascontiguousarray(data[start : start + self._frame]))
        self._pending = data[whole:].copy()
        self._pages(flush=False)

    def flush(self) -> None:
        """Everything encoded so far onto the disk's side: a crash keeps it."""
        self._pages(flush=True)
        self._file.flush()

    def close(self) -> None:
        """The last samples (the encoder's delay flushed with silence), the end of stream."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._enc is not None:
                self._finish_stream()
        finally:
            if self._enc is not None:
                self._lib.destroy(self._enc)
                self._enc = None
            self._lib.stream_clear(ctypes.byref(self._stream))
            self._file.close()

    def _finish_stream(self) -> None:
        # Enough silence after the last sample that the decoder's delay lets it out; the
        # last page's granule position trims the padding (RFC 7845, section 4.4). At least
        # one packet, so even an empty record ends its stream.
        final_granule = (self._lookahead + self.frames) * self._to_48k
        needed = self.frames + self._lookahead
        tail = self._pending
        while True:
            frame = np.zeros(self._frame, dtype=np.int16)
            frame[: len(tail)] = tail
            tail = tail[:0]
            last = self._encoded + self._frame >= needed
            self._encode_frame(frame, granule=final_granule if last else None, eos=last)
            if last:
                break
        self._pages(flush=True)
        self._file.flush()


def _opus_tags(vendor: str, comments: list[str]) -> bytes:
    def field(text: str) -> bytes:
        data = text.encode("utf-8")
        return struct.pack("<I", len(data)) + data

    return (
        b"OpusTags"
        + field(vendor)
        + struct.pack("<I", len(comments))
        + b"".join(field(c) for c in comments)
    )
