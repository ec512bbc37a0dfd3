"""Signalling on a channel: DTMF and 5-tone calls through the real PortAudio path (the
simulator's sound card) -> dtmf.digit, dtmf.digits and selcall.detected events for CAD,
stamped with when they were heard; and what the config accepts."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.config import load_config
from gateway.dsp.dtmf import DtmfDecoder, DtmfDigit
from gateway.dsp.selcall import SelcallCall, SelcallDecoder
from gateway.dsp.twotone import Page, TwoToneDecoder
from gateway.errors import ConfigError
from hw_sim.audio import SpeechBursts
from tests.mqtt_tools import Broker, free_port, wait_for
from tests.sim_tools import ConsoleUnderTest, audio_card_config


def signalling_config(tmp_path: Path, broker: Broker) -> tuple[str, str]:
    return audio_card_config(
        tmp_path,
        broker,
        "s",
        f"""
[channels.fire]
busy_lockout = true
cos_debounce_ms = 0
[channels.fire.radio]
kind = "serial"
url = "rfc2217://127.0.0.1:{free_port()}"
ptt = ["rts"]
cos = "cts"
[channels.fire.audio]
device = "card"
column = 0
[channels.fire.signalling]
selcall = ["ccir", "zvei1"]
mdc1200 = true
tx_delay_ms = 200
[channels.fire.signalling.pages]
"Station 1" = {{ a_hz = 321.7, b_hz = 339.6 }}
"All call" = {{ a_hz = 445.7 }}

[channels.plain]
[channels.plain.audio]
device = "card"
column = 1
""",
    )


@pytest.fixture
def signalling_console(
    tmp_path: Path, broker: Broker, start_sim_console: Callable[..., ConsoleUnderTest]
) -> ConsoleUnderTest:
    cut = start_sim_console(*signalling_config(tmp_path, broker))
    cut.sub.wait(
        lambda m: [x for x in m if x.topic.endswith("fire/audio") and x.json()["rms_dbfs"] > -70],
        what="audio flowing",
    )
    return cut


def events_of(cut: ConsoleUnderTest, kind: str) -> list[dict[str, Any]]:
    return [e for e in cut.sub.events(kind) if e["source_id"] == "fire"]


def when(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["ts"]).timestamp()


def test_dtmf_and_selcall_reach_cad(signalling_console: ConsoleUnderTest) -> None:
    cut = signalling_console
    sent_at = time.time()
    seconds = cut.console.dtmf("fire", "911*0#")
    string = cut.sub.wait_event("dtmf.digits", timeout=15, source_id="fire")
    assert string["data"]["digits"] == "911*0#"
    digits = events_of(cut, "dtmf.digit")
    assert "".join(e["data"]["digit"] for e in digits) == "911*0#"
    assert all(0.05 <= e["data"]["duration_s"] <= 0.12 for e in digits), digits
    assert abs(string["data"]["duration_s"] - seconds) < 0.1
    # Stamped when the string ended as heard (the gap that ends it comes 1.5 s later).
    assert sent_at < when(string) < sent_at + seconds + 1.0, (sent_at, string["ts"])

    cut.console.selcall("fire", "11223", standard="zvei1")
    call = cut.sub.wait_event("selcall.detected", timeout=15, source_id="fire")
    assert call["data"] == {
        "standard": "zvei1",
        "digits": "11223",
        "tones": "1E2E3",
        "duration_s": pytest.approx(0.35, abs=0.03),
    }
    cut.console.selcall("fire", "90417", standard="ccir")
    cut.sub.wait_event("selcall.detected", timeout=15, digits="90417")
    # EEA is not configured on this channel; the other channel has no signalling at all.
    cut.console.selcall("fire", "55555", standard="eea")
    cut.console.dtmf("plain", "123")
    cut.console.selcall("plain", "12345")
    time.sleep(3)
    assert [e["data"]["digits"] for e in events_of(cut, "selcall.detected")] == ["11223", "90417"]
    assert [e for e in cut.sub.events() if e["source_id"] == "plain" and "dtmf" in e["type"]] == []
    assert [e for e in cut.sub.events("selcall.detected") if e["source_id"] == "plain"] == []


def _played(cut: ConsoleUnderTest, seconds: float) -> np.ndarray:
    channel = cut.console.audio_channels["fire"]
    wait_for(lambda: len(channel.played()) >= seconds * 8000, timeout=15, what="the tones played")
    time.sleep(0.3)
    return channel.played(clear=True)


def test_cad_pages_a_station_and_sends_dtmf(signalling_console: ConsoleUnderTest) -> None:
    """request/selcall and request/dtmf key the radio, play the tones on the channel's
    output after tx_delay_ms, unkey, and answer once played; an independent decoder reads
    what went out; the channel does not hear its own call as received."""
    cut = signalling_console
    prefix = f"{cut.prefix}/channels/fire/request"
    cut.console.audio_channels["fire"].played(clear=True)
    reply = cut.sub.request(
        f"{prefix}/selcall", {"digits": "22301", "transaction": "page-7"}, timeout=20
    )
    assert reply["status"] == "ok", reply
    assert reply["data"] == {
        "digits": "22301",
        "tones": "2E301",
        "standard": "ccir",  # the first the channel reads
        "seconds": pytest.approx(0.5, abs=0.01),
    }
    assert not cut.serial("fire").keyed, "unkeyed once played"
    on = cut.sub.wait_event("ptt.on", source_id="fire")
    off = cut.sub.wait_event("ptt.off", source_id="fire")
    assert on["data"]["requested_by"] == "page-7" and off["data"]["reason"] == "request"
    # Keyed for the delay and the tones: about 0.7 s.
    assert 0.6 < when(off) - when(on) < 1.5, (on["ts"], off["ts"])
    played = _played(cut, 0.5)
    heard = SelcallDecoder(8000, "ccir")
    got = [e for e in heard.feed(played) + heard.flush() if isinstance(e, SelcallCall)]
    assert [(c.digits, c.tones) for c in got] == [("22301", "2E301")]
    assert cut.sub.wait_event("selcall.sent", source_id="fire")["data"]["tones"] == "2E301"

    reply = cut.sub.request(f"{prefix}/dtmf", {"digits": "*52#", "on_ms": 80}, timeout=20)
    assert reply["status"] == "ok", reply
    assert reply["data"]["standard"] is None and reply["data"]["digits"] == "*52#"
    played = _played(cut, 0.6)
    dtmf = DtmfDecoder(8000)
    assert (
        "".join(e.digit for e in dtmf.feed(played) + dtmf.flush() if isinstance(e, DtmfDigit))
        == "*52#"
    )
    zvei = cut.sub.request(
        f"{prefix}/selcall", {"digits": "12345", "standard": "zvei1"}, timeout=20
    )
    assert zvei["status"] == "ok" and zvei["data"]["tones"] == "12345", zvei
    time.sleep(2)
    assert events_of(cut, "selcall.detected") == [], "the channel heard its own call"
    assert events_of(cut, "dtmf.digits") == []


def test_sending_is_refused_when_busy_or_bad(signalling_console: ConsoleUnderTest) -> None:
    cut = signalling_console
    prefix = f"{cut.prefix}/channels/fire/request"
    cut.console.carrier("fire", True)
    cut.wait_state("fire", cos=True)
    busy = cut.sub.request(f"{prefix}/selcall", {"digits": "12345"}, timeout=10)
    assert busy["status"] == "error" and "busy" in busy["error"], busy
    cut.console.carrier("fire", False)
    cut.wait_state("fire", cos=False)
    for params, said in (
        ({"digits": "12E45"}, "digits"),
        ({"digits": ""}, "digits"),
        ({"digits": "12345", "standard": "zvei9"}, "standard"),
        ({"digits": "12345", "first_tone_ms": 5000}, "first_tone_ms"),
    ):
        bad = cut.sub.request(f"{prefix}/selcall", params, timeout=10)
        assert bad["status"] == "error" and said in bad["error"], (params, bad)
    bad = cut.sub.request(f"{prefix}/dtmf", {"digits": "12x"}, timeout=10)
    assert bad["status"] == "error" and "digits" in bad["error"], bad
    none = cut.sub.request(
        f"{cut.prefix}/channels/plain/request/selcall", {"digits": "12345"}, timeout=10
    )
    assert none["status"] == "error" and "no signalling" in none["error"], none
    assert not cut.serial("fire").keyed
    assert cut.sub.events("ptt.on") == []


def test_pages_are_heard_and_sent(signalling_console: ConsoleUnderTest) -> None:
    """A configured page on the channel is page.detected by name; a page not configured is
    not; CAD pages a station by name (the radio keyed for the tones) and by explicit tones."""
    cut = signalling_console
    cut.console.page("fire", 321.7, 339.6)
    page = cut.sub.wait_event("page.detected", timeout=15, source_id="fire")
    assert page["data"]["name"] == "Station 1"
    assert page["data"]["a_hz"] == pytest.approx(321.7, abs=0.5)
    assert page["data"]["b_s"] == pytest.approx(3.0, abs=0.15)
    cut.console.page("fire", 330.5, 349.0)  # a neighbour's page: not configured here
    time.sleep(5)
    assert [e["data"]["name"] for e in events_of(cut, "page.detected")] == ["Station 1"]

    prefix = f"{cut.prefix}/channels/fire/request"
    cut.console.audio_channels["fire"].played(clear=True)
    reply = cut.sub.request(f"{prefix}/page", {"name": "Station 1"}, timeout=20)
    assert reply["status"] == "ok", reply
    assert reply["data"]["seconds"] == pytest.approx(4.0, abs=0.01)
    played = _played(cut, 4.0)
    heard = TwoToneDecoder(8000, [Page("Station 1", 321.7, 339.6)])
    assert [e.name for e in heard.feed(played) + heard.flush()] == ["Station 1"]
    sent = cut.sub.wait_event("page.sent", source_id="fire")["data"]
    assert sent == {"name": "Station 1", "a_hz": 321.7, "b_hz": 339.6, "seconds": 4.0}
    explicit = cut.sub.request(
        f"{prefix}/page", {"a_hz": 600.9, "b_hz": 788.5, "a_s": 0.5, "b_s": 0.5}, timeout=20
    )
    assert explicit["status"] == "ok" and explicit["data"]["digits"] == "600.9/788.5", explicit
    for params, said in (
        ({"name": "Station 9"}, "no page 'Station 9'"),
        ({"name": "Station 1", "a_hz": 400.0}, "not both"),
        ({}, "give a page's name"),
        ({"a_hz": 400.0, "b_hz": 401.0}, "differ by 1 %"),
        ({"a_hz": 50.0}, "a_hz"),
    ):
        bad = cut.sub.request(f"{prefix}/page", params, timeout=10)
        assert bad["status"] == "error" and said in bad["error"], (params, bad)
    time.sleep(1)
    assert [e["data"]["name"] for e in events_of(cut, "page.detected")] == ["Station 1"]


def test_mdc1200_unit_ids_and_an_emergency_reach_cad(
    signalling_console: ConsoleUnderTest,
) -> None:
    cut = signalling_console
    cut.console.carrier("fire", True)
    sent_at = time.time()
    seconds = cut.console.mdc("fire", 0x01, 0x80, 0x1234)
    heard = cut.sub.wait_event("unit.id", timeout=15, source_id="fire")
    assert heard["data"] == {
        "unit": "1234",
        "kind": "ptt_id",
        "op": 1,
        "arg": 0x80,
        "target": None,
        "receiving": True,  # heard within the transmission it identifies
    }
    assert sent_at < when(heard) < sent_at + seconds + 1.0
    cut.console.carrier("fire", False)
    # The recorder keeps the unit with the transmission's record.
    saved = cut.sub.wait_event("recording.saved", timeout=20, source_id="fire")
    assert saved["data"]["recording"]["units"] == ["1234"], saved
    cut.console.mdc("fire", 0x00, 0x81, 0x0042)
    alarm = cut.sub.wait_event("emergency.raised", timeout=15, source_id="fire")
    assert alarm["data"] == {"unit": "0042", "arg": 0x81}

    def last_unit(messages: list[Any]) -> list[Any]:
        states = [m.json() for m in messages if m.topic.endswith("channels/fire/state")]
        return [s for s in states[-1:] if (s.get("last_unit") or {}).get("unit") == "0042"]

    state = cut.sub.wait(last_unit, what="the state shows the last unit")[0]
    assert state["last_unit"]["kind"] == "emergency"
    cut.console.mdc("plain", 0x01, 0x80, 0x5555)  # no signalling on that channel
    time.sleep(2)
    assert [e for e in cut.sub.events("unit.id") if e["source_id"] == "plain"] == []
    assert len(events_of(cut, "unit.id")) == 1 and len(events_of(cut, "emergency.raised")) == 1


def test_no_signalling_from_speech(signalling_console: ConsoleUnderTest) -> None:
    cut = signalling_console
    cut.console.audio_channels["fire"].source = SpeechBursts(rms_dbfs=-15, seed=9)
    time.sleep(8)
    for kind in (
        "dtmf.digit",
        "dtmf.digits",
        "selcall.detected",
        "page.detected",
        "unit.id",
        "emergency.raised",
    ):
        assert events_of(cut, kind) == [], kind


def _config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(
        '[gateway]\nid = "gw"\n[mqtt]\nurl = "mqtt://127.0.0.1:1883"\n'
        '[audio.devices.card]\ndevice = "x"\nchannels = 1\n' + body
    )
    return path


def test_the_config_names_what_is_wrong(tmp_path: Path) -> None:
    for body, said in (
        ("[channels.a]\n[channels.a.signalling]\n", "channels.a.signalling: Signalling needs"),
        (
            '[channels.a]\n[channels.a.audio]\ndevice = "card"\n'
            '[channels.a.signalling]\nselcall = ["ccir", "ccir"]\n',
            "names a standard twice",
        ),
        (
            '[channels.a]\n[channels.a.audio]\ndevice = "card"\n'
            '[channels.a.signalling]\nselcall = ["zvei9"]\n',
            "selcall",
        ),
        (
            '[channels.a]\n[channels.a.audio]\ndevice = "card"\n'
            '[channels.a.signalling.pages]\n"Stn 4" = { a_hz = 400.0, b_hz = 401.0 }\n',
            'pages."Stn 4": a_hz and b_hz must differ by 1 %',
        ),
        (
            '[channels.a]\n[channels.a.audio]\ndevice = "card"\n'
            '[channels.a.signalling.pages]\n"Stn 4" = { a_hz = 40.0 }\n',
            'pages."Stn 4".a_hz',
        ),
    ):
        with pytest.raises(ConfigError, match=said):
            load_config(_config(tmp_path, body))
    low = _config(
        tmp_path,
        '[channels.a]\n[channels.a.audio]\ndevice = "card"\n[channels.a.signalling]\n',
    )
    text = low.read_text().replace("channels = 1\n", "channels = 1\nsamplerate = 4000\n")
    low.write_text(text + '[recorder]\nformat = "flac"\n')  # (Opus has no 4 kHz)
    with pytest.raises(ConfigError, match="samplerate is 4000 Hz; signalling needs 6000"):
        load_config(low)
    ok = _config(
        tmp_path,
        '[channels.a]\n[channels.a.audio]\ndevice = "card"\n'
        '[channels.a.signalling]\ndtmf = false\nselcall = ["eea"]\nselcall_min_digits = 4\n',
    )
    section = load_config(ok).channels["a"].signalling
    assert section is not None and section.selcall == ["eea"] and not section.dtmf
