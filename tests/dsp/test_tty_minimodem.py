"""Interoperability with minimodem, an independent TTY modem: its audio in, ours out to it."""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from gateway.dsp.tty import (
    BAUD_45,
    BAUD_50,
    TtyDecoder,
    TtyDetected,
    TtyEncoder,
    final_text,
)
from hw_sim.phone_line import add_noise

pytestmark = pytest.mark.skipif(
    shutil.which("minimodem") is None, reason="minimodem not installed (Debian: minimodem)"
)

FS = 8000
# minimodem transmits for unshift-on-space receivers (no LTRS after "12 " before "AT"); the
# decoder finds that from the signal (the FIGS it sends again before "4127" shows it).
TEXT = "HELLO THIS IS UNIT12 AT 4127/3B, ETA:5MIN (OK?) GA"


def read_wav(path: Path) -> npt.NDArray[np.float32]:
    with wave.open(str(path)) as w:
        assert w.getframerate() == FS and w.getnchannels() == 1 and w.getsampwidth() == 2
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return (pcm / 32768.0).astype(np.float32)


def write_wav(path: Path, x: npt.NDArray[np.float32]) -> None:
    pcm = np.clip(np.rint(x * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(FS)
        w.writeframes(pcm.tobytes())


def minimodem_tx(tmp_path: Path, text: str, *mode: str) -> npt.NDArray[np.float32]:
    path = tmp_path / "mm.wav"
    subprocess.run(
        ["minimodem", "--tx", *mode, "-R", str(FS), "-f", str(path)],
        input=text.encode(),
        check=True,
        timeout=60,
    )
    return read_wav(path)


def decode(x: npt.NDArray[np.float32], **kwargs: object) -> tuple[str, list[object]]:
    dec = TtyDecoder(**kwargs)  # type: ignore[arg-type]
    events = dec.feed(x) + dec.flush()
    return final_text(events), list(events)


@pytest.mark.parametrize(
    ("mode", "baud"),
    [
        (("tdd",), BAUD_45),  # 45.45 baud, 2 stop bits
        (("--baudot", "--stopbits", "1.5", "-M", "1400", "-S", "1800", "50"), BAUD_50),
    ],
)
def test_minimodem_audio_decodes(tmp_path: Path, mode: tuple[str, ...], baud: float) -> None:
    x = minimodem_tx(tmp_path, TEXT, *mode)
    x = np.concatenate([np.zeros(FS // 2, np.float32), x, np.zeros(FS // 2, np.float32)])
    noisy = add_noise(
        x * 0.5, 3.0, sample_rate=FS, signal_power=0.125, rng=np.random.default_rng(1)
    )
    text, events = decode(noisy)
    assert text == TEXT
    detected = [e for e in events if isinstance(e, TtyDetected)]
    assert len(detected) == 1 and detected[0].baud == baud


def test_minimodem_relies_on_unshift_on_space(tmp_path: Path) -> None:
    x = minimodem_tx(tmp_path, "ROOM 12 GA", "tdd")
    x = np.concatenate([np.zeros(FS // 2, np.float32), x])
    # minimodem sends no LTRS before "GA": a keep-shift receiver reads figures there. With
    # no redundant shift to show the convention, the plausible reading wins in auto.
    assert decode(x, shift="unshift_on_space")[0] == "ROOM 12 GA"
    assert decode(x, shift="keep")[0] == "ROOM 12 &-"
    assert decode(x)[0] == "ROOM 12 GA"


def test_our_audio_decodes_in_minimodem(tmp_path: Path) -> None:
    text = "CALL 911 NOW 12 34 GA"  # FIGS repeated after spaces: reads right with USOS too
    path = tmp_path / "ours.wav"
    write_wav(path, TtyEncoder(baud=BAUD_45, stop_bits=2.0).encode(text))
    out = subprocess.run(
        ["minimodem", "--rx", "tdd", "-q", "-f", str(path)],
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.decode().strip() == text
