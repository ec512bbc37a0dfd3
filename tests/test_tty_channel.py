"""TTY on a channel: a caller's TTY audio through the real PortAudio path -> tty events,
the call taker's reply over MQTT -> TTY audio on the line; and the `consolegw tty` CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.dsp import TtyChar, TtyDecoder
from hw_sim.audio import SpeechBursts
from tests.cli_tools import consolegw
from tests.mqtt_tools import ROOT, Broker, wait_for
from tests.sim_tools import ConsoleUnderTest, audio_card_config


def tty_config(tmp_path: Path, broker: Broker) -> tuple[str, str]:
    return audio_card_config(
        tmp_path,
        broker,
        "t",
        """
[channels.line1]
name = "911 line 1"
[channels.line1.audio]
device = "card"
column = 0
[channels.line1.tty]

[channels.plain]
[channels.plain.audio]
device = "card"
column = 1
""",
    )


@pytest.fixture
def tty_console(
    tmp_path: Path, broker: Broker, start_sim_console: Callable[..., ConsoleUnderTest]
) -> Callable[[], ConsoleUnderTest]:
    def make() -> ConsoleUnderTest:
        cut = start_sim_console(*tty_config(tmp_path, broker))
        cut.sub.wait(
            lambda m: [
                x for x in m if x.topic.endswith("line1/audio") and x.json()["rms_dbfs"] > -70
            ],
            what="audio flowing",
        )
        return cut

    return make


def tty_events(cut: ConsoleUnderTest, kind: str) -> list[dict[str, Any]]:
    return [e for e in cut.sub.events(kind) if e["source_id"] == "line1"]


@pytest.mark.parametrize("baud", [45.45, 50.0])
def test_caller_text_arrives_as_characters_and_lines(
    tty_console: Callable[[], ConsoleUnderTest], baud: float
) -> None:
    cut = tty_console()
    started = time.monotonic()
    cut.console.tty_call("line1", "HELLO 911 GA\r\nADDRESS 12 ELM ST\r\n", baud=baud)
    detected = cut.sub.wait_event("tty.detected", source_id="line1")
    assert detected["data"]["baud"] == baud
    arrival = next(m.at for m in cut.sub.on("line1/event") if b"tty.detected" in m.payload)
    # Four characters prove it (about 0.7 s of TTY) plus the audio path; well under 3 s.
    assert arrival - started < 3.0
    cut.sub.wait_event("tty.ended", source_id="line1", timeout=20)
    chunks = [e["data"]["text"] for e in tty_events(cut, "tty.text") if not e["data"]["line"]]
    lines = [e["data"]["text"] for e in tty_events(cut, "tty.text") if e["data"]["line"]]
    assert "".join(chunks) == "HELLO 911 GAADDRESS 12 ELM ST"
    assert len(chunks) > 5, "characters are published as they arrive, not per line"
    assert lines == ["HELLO 911 GA", "ADDRESS 12 ELM ST"]
    tty_state = [m.json() for m in cut.sub.on("/channels/line1/tty")][-1]
    assert tty_state["last_line"] == "ADDRESS 12 ELM ST" and tty_state["active"] is False


def test_a_caller_that_unshifts_on_space_is_read_again_and_the_line_is_final(
    tty_console: Callable[[], ConsoleUnderTest],
) -> None:
    """The default shift is auto: "TOP" after "12 " first reads as figures, then the FIGS
    the caller sends again before "55" shows it unshifts, and the span is read again."""
    cut = tty_console()
    cut.console.tty_call("line1", "UNIT 12 TOP 55 GA\r\n", convention="unshift_on_space")
    cut.sub.wait_event("tty.ended", source_id="line1", timeout=20)
    chunks = [e["data"] for e in tty_events(cut, "tty.text") if not e["data"]["line"]]
    lines = [e["data"]["text"] for e in tty_events(cut, "tty.text") if e["data"]["line"]]
    assert lines == ["UNIT 12 TOP 55 GA"]
    assert any(c["revised"] for c in chunks)
    line = ""
    for chunk in chunks:  # what a CAD client does with them
        assert chunk["offset"] <= len(line)
        assert chunk["revised"] or chunk["offset"] == len(line)
        line = line[: chunk["offset"]] + chunk["text"]
    assert line == "UNIT 12 TOP 55 GA"


def test_reply_is_played_as_tty_on_the_line(tty_console: Callable[[], ConsoleUnderTest]) -> None:
    cut = tty_console()
    cut.console.audio_channels["line1"].played(clear=True)
    reply = cut.sub.request(
        f"{cut.prefix}/channels/line1/request/tty",
        {"text": "911 what is your address ga", "transaction": "r1"},
        timeout=30,
    )
    assert reply["status"] == "ok", reply
    assert reply["data"]["text"] == "911 WHAT IS YOUR ADDRESS GA"
    assert reply["data"]["baud"] == 45.45
    wait_for(lambda: len(cut.console.audio_channels["line1"].played()) > 8000, what="playback")
    time.sleep(0.5)
    played = cut.console.audio_channels["line1"].played()
    decoder = TtyDecoder(sample_rate=8000)
    text = "".join(e.char for e in decoder.feed(played) + decoder.flush() if isinstance(e, TtyChar))
    assert text == "911 WHAT IS YOUR ADDRESS GA"
    cut.sub.wait_event("tty.sent", source_id="line1")


def test_no_tty_from_speech_or_noise(tty_console: Callable[[], ConsoleUnderTest]) -> None:
    cut = tty_console()
    cut.console.audio_channels["line1"].source = SpeechBursts(rms_dbfs=-15, seed=4)
    time.sleep(8)
    assert tty_events(cut, "tty.detected") == []
    assert tty_events(cut, "tty.text") == []


def test_bad_tty_requests(tty_console: Callable[[], ConsoleUnderTest]) -> None:
    cut = tty_console()
    empty = cut.sub.request(f"{cut.prefix}/channels/line1/request/tty", {"text": ""})
    assert empty["status"] == "error" and "text" in empty["error"]
    rate = cut.sub.request(f"{cut.prefix}/channels/line1/request/tty", {"text": "HI", "baud": 60})
    assert rate["status"] == "error" and "45.45 or 50" in rate["error"]
    none = cut.sub.request(f"{cut.prefix}/channels/plain/request/tty", {"text": "HI"})
    assert none["status"] == "error" and "no TTY" in none["error"]


@pytest.mark.parametrize("baud", ["45.45", "50"])
def test_cli_encode_then_decode(tmp_path: Path, baud: str) -> None:
    wav = tmp_path / "hello.wav"
    made = consolegw("tty", "encode", "Hello 911, need help?", "-o", str(wav), "--baud", baud)
    assert made.returncode == 0 and made.stdout == ""
    decoded = consolegw("tty", "decode", str(wav))
    assert decoded.returncode == 0
    assert decoded.stdout == "HELLO 911, NEED HELP?\n", "only the text goes to stdout"
    assert "TTY detected" in decoded.stderr


@pytest.mark.skipif(shutil.which("minimodem") is None, reason="make test installs minimodem")
def test_cli_decodes_a_minimodem_file(tmp_path: Path) -> None:
    wav = tmp_path / "mm.wav"
    subprocess.run(
        ["minimodem", "--tx", "tdd", "-R", "8000", "-f", str(wav)],
        input=b"MINIMODEM SAYS HI GA\n",
        check=True,
        capture_output=True,
        timeout=30,
    )
    decoded = consolegw("tty", "decode", str(wav))
    assert decoded.returncode == 0
    assert decoded.stdout.strip() == "MINIMODEM SAYS HI GA"


def test_cli_decode_shift_baud_and_json(tmp_path: Path) -> None:
    from gateway.audio import to_pcm16, write_wav16
    from gateway.dsp import TtyEncoder

    wav = tmp_path / "keep.wav"
    audio = TtyEncoder(sample_rate=8000, convention="keep").encode("CALL 555 1212 NOW")
    write_wav16(str(wav), to_pcm16(audio), 8000)
    assert consolegw("tty", "decode", str(wav)).stdout == "CALL 555 1212 NOW\n"
    misread = consolegw("tty", "decode", str(wav), "--shift", "unshift_on_space")
    assert misread.stdout == "CALL 555 QWQW NOW\n"
    only_50 = consolegw("tty", "decode", str(wav), "--baud", "50")
    assert "50 baud" in only_50.stderr
    as_json = consolegw("tty", "decode", str(wav), "--json", "--baud", "45.45")
    chars = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert "".join(c["char"] for c in chars) == "CALL 555 1212 NOW"
    assert all(set(c) >= {"time", "char", "code"} for c in chars)
    times = [c["time"] for c in chars]
    assert times == sorted(times) and 0 < times[0] < times[-1] < len(audio) / 8000
    bad = consolegw("tty", "decode", str(wav), "--shift", "sometimes")
    assert bad.returncode == 2 and "--shift" in bad.stderr


def test_config_shift_and_the_old_unshift_on_space_key() -> None:
    from gateway.config import ChannelTtySection

    assert ChannelTtySection().shift == "auto"
    assert ChannelTtySection(shift="keep").shift == "keep"
    assert ChannelTtySection(unshift_on_space=True).shift == "unshift_on_space"
    assert ChannelTtySection(unshift_on_space=False).shift == "keep"
    with pytest.raises(ValueError, match="replaced by shift"):
        ChannelTtySection(shift="auto", unshift_on_space=True)


def test_config_warns_about_the_old_key(tmp_path: Path) -> None:
    from gateway.config import config_warnings, load_config

    text = (ROOT / "config" / "sim.toml").read_text()
    old = text.replace(
        "[channels.phone-1.tty]\n", "[channels.phone-1.tty]\nunshift_on_space = true\n"
    )
    assert old != text
    path = tmp_path / "old.toml"
    path.write_text(old)
    config = load_config(path, check_files=False)
    assert config.channels["phone-1"].tty is not None
    assert config.channels["phone-1"].tty.shift == "unshift_on_space"
    warned = [w for w in config_warnings(config) if "unshift_on_space" in w]
    assert warned and 'shift = "unshift_on_space"' in warned[0]


def test_cli_decode_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "not.wav"
    bad.write_text("hello")
    result = consolegw("tty", "decode", str(bad))
    assert result.returncode == 1 and "tty decode" in result.stderr
    assert "Traceback" not in result.stderr


def test_reply_amplitude_is_clipped_to_full_scale() -> None:
    """Config allows replies up to 0 dBFS RMS; a sine that loud would peak at 1.41, which
    the encoder refuses. The daemon and `consolegw diag` both clip to full scale."""
    from gateway.dsp import TtyEncoder
    from gateway.tty import reply_amplitude

    assert reply_amplitude(-12.0) == pytest.approx(10 ** (-12 / 20) * 2**0.5)
    assert reply_amplitude(0.0) == 1.0
    assert len(TtyEncoder(sample_rate=8000, baud=45.45, amplitude=reply_amplitude(0.0)).encode("A"))
