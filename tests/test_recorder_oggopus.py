"""The recorder's Ogg/Opus writer (libopus and libogg through ctypes), judged by readers
nobody here wrote: opus-tools' `opusinfo` (stream structure, RFC 7845) and `opusdec`, and
libsndfile (through soundfile, as `consolegw recordings` reads). A browser playing its files
is in tests/tools/test_recordings_web.py.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.recorder import oggopus
from gateway.recorder.oggopus import OggOpusWriter

OPUSINFO = shutil.which("opusinfo")
OPUSDEC = shutil.which("opusdec")


def _speechlike(n: int, rate: int, seed: int = 1) -> np.ndarray:
    """Noise below 2 kHz and a tone, with a syllable envelope: aperiodic (a time offset
    shows in a correlation) and voice-band, as the encoder sees it on air."""
    if n == 0:
        return np.zeros(0, dtype=np.int16)
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.1 * t) ** 2
    taps = max(1, rate // 2000)
    noise = np.convolve(rng.standard_normal(n), np.ones(taps) / np.sqrt(taps), mode="same")[:n]
    x = envelope * (0.15 * noise + 0.1 * np.sin(2 * np.pi * 440 * t))
    return (np.clip(x, -1, 1) * 32767).astype(np.int16)


def _write(path: Path, pcm: np.ndarray, rate: int, block: int = 800) -> None:
    writer = OggOpusWriter(path.open("wb"), rate, comments={"CONSOLEGW_CHANNEL": "fire"})
    for start in range(0, len(pcm), block):
        writer.write(pcm[start : start + block])
        if start % rate < block:
            writer.flush()
    writer.close()


def _tools() -> tuple[str, str]:
    if OPUSINFO is None or OPUSDEC is None:  # make test installs opus-tools (Makefile)
        pytest.fail("opus-tools (opusinfo, opusdec) are needed: run make test")
    return OPUSINFO, OPUSDEC


def test_libopus_and_libogg_are_found_here() -> None:
    assert oggopus.available() is None


@pytest.mark.parametrize("rate", oggopus.OPUS_RATES)
def test_opus_tools_accept_the_stream_and_decode_every_sample(tmp_path: Path, rate: int) -> None:
    opusinfo, opusdec = _tools()
    pcm = _speechlike(int(3.37 * rate), rate)
    path = tmp_path / "r.opus"
    _write(path, pcm, rate)
    info = subprocess.run([opusinfo, str(path)], capture_output=True, text=True, check=True)
    report = info.stdout + info.stderr
    assert "WARNING" not in report.upper() and "ERROR" not in report.upper(), report
    assert f"Original sample rate: {rate} Hz" in report
    assert "Playback length: 0m:03.37" in report, report
    assert "CONSOLEGW_CHANNEL=fire" in report
    assert "Logical stream 1 ended" in report
    wav = tmp_path / "r.wav"
    subprocess.run(
        [opusdec, "--quiet", "--rate", str(rate), str(path), str(wav)],
        check=True,
        capture_output=True,
    )
    decoded, decoded_rate = sf.read(wav, dtype="int16")
    assert decoded_rate == rate
    assert len(decoded) == len(pcm)  # the pre-skip and the end trim are right
    mine, my_rate = sf.read(path, dtype="int16")
    assert my_rate == rate and len(mine) == len(pcm)
    # The same audio, in time: the pre-skip takes out the encoder's delay. What remains is
    # under 45 us at every rate (1 sample at 24 kHz, 2 at 48 kHz, 0 at 8 kHz: libopus's
    # own filtering in VoIP mode); an event's time in a record is judged in milliseconds.
    x, y = pcm.astype(np.float64), mine.astype(np.float64)
    lags = range(-20, 21)
    best = max(lags, key=lambda lag: float(np.dot(x[1000:-1000], np.roll(y, -lag)[1000:-1000])))
    assert abs(best) / rate < 45e-6, best
    level_in = 20 * np.log10(np.sqrt(np.mean(x**2)))
    level_out = 20 * np.log10(np.sqrt(np.mean(y**2)))
    assert abs(level_in - level_out) < 2.5  # no gain error (a codec loses some noise)


@settings(max_examples=40, deadline=None)
@given(
    rate=st.sampled_from(oggopus.OPUS_RATES),
    blocks=st.lists(st.integers(min_value=0, max_value=3000), max_size=12),
)
def test_any_blocks_give_exactly_their_samples_back(rate: int, blocks: list[int]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "r.opus"
        writer = OggOpusWriter(path.open("wb"), rate)
        total = 0
        for i, n in enumerate(blocks):
            writer.write(_speechlike(n, rate, seed=i))
            total += n
            if i % 3 == 2:
                writer.flush()
        writer.close()
        decoded, _ = sf.read(path, dtype="int16")
        assert len(decoded) == total


def test_a_file_cut_after_a_flush_plays_up_to_it(tmp_path: Path) -> None:
    """What a kill -9 leaves: no end-of-stream page, the pages flushed so far."""
    opusinfo, opusdec = _tools()
    rate = 8000
    path = tmp_path / "cut.opus"
    file = path.open("wb")
    writer = OggOpusWriter(file, rate)
    pcm = _speechlike(5 * rate, rate)
    writer.write(pcm[: 3 * rate])
    writer.flush()
    flushed = path.stat().st_size
    writer.write(pcm[3 * rate :])  # encoded, not flushed: lost with the process
    file.close()  # the process is gone; no close() of the writer
    cut = tmp_path / "kept.opus"
    cut.write_bytes(path.read_bytes()[:flushed])
    decoded, _ = sf.read(cut, dtype="int16")
    # Up to the last flush, less at most the encoder's delay (its last packet's tail).
    assert 3 * rate - 0.03 * rate <= len(decoded) <= 3 * rate
    subprocess.run(
        [opusdec, "--quiet", str(cut), str(tmp_path / "cut.wav")], check=True, capture_output=True
    )
    # opusinfo says the stream ends without its end page (it does: the process died).
    info = subprocess.run([opusinfo, str(cut)], check=False, capture_output=True, text=True)
    report = info.stdout + info.stderr
    assert "Playback length: 0m:02.9" in report or "Playback length: 0m:03.0" in report, report
    warnings = [line for line in report.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "EOS not set" in warnings[0], warnings


def test_bad_use_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Opus takes"):
        OggOpusWriter((tmp_path / "a.opus").open("wb"), 44100)
    writer = OggOpusWriter((tmp_path / "b.opus").open("wb"), 8000)
    writer.close()
    writer.close()  # twice is harmless
    with pytest.raises(oggopus.OpusError, match="after close"):
        writer.write(np.zeros(10, dtype=np.int16))
