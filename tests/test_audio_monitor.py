"""Channel audio end to end: the simulator's sound card -> PortAudio -> daemon -> MQTT.

Audio reaches the daemon through the real sounddevice/PortAudio/ALSA path (a private
PulseAudio per simulated card); nothing here fakes a stream.
"""

from __future__ import annotations

import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hw_sim.audio import Silence, Tone, WhiteNoise
from tests.mqtt_tools import Broker, free_port, wait_for
from tests.sim_tools import ConsoleUnderTest, audio_card_config


def audio_config(tmp_path: Path, broker: Broker) -> tuple[str, str]:
    return audio_card_config(
        tmp_path,
        broker,
        "c",
        f"""
[channels.radio]
cos_debounce_ms = 0
[channels.radio.radio]
kind = "serial"
url = "rfc2217://127.0.0.1:{free_port()}"
ptt = ["rts"]
cos = "cts"
[channels.radio.audio]
device = "card"
column = 0
cos_audio_mismatch_s = 1.5
recall_on_fault_s = 5

[channels.line]
[channels.line.audio]
device = "card"
column = 1
attack_ms = 200
hang_ms = 600
dead_after_s = 1.5
recall_on_fault_s = 5
""",
    )


@pytest.fixture
def audio_console(
    tmp_path: Path, broker: Broker, start_sim_console: Callable[..., ConsoleUnderTest]
) -> Callable[[], ConsoleUnderTest]:
    def make() -> ConsoleUnderTest:
        cut = start_sim_console(*audio_config(tmp_path, broker))
        for channel in ("radio", "line"):
            wait_audio(cut, channel, lambda a: a["device"] == "online" and a["rms_dbfs"] > -70)
        return cut

    return make


def audio_states(cut: ConsoleUnderTest, channel: str) -> list[dict[str, Any]]:
    return [m.json() for m in cut.sub.on(f"/channels/{channel}/audio")]


def wait_audio(
    cut: ConsoleUnderTest,
    channel: str,
    check: Callable[[dict[str, Any]], bool],
    timeout: float = 10.0,
) -> dict[str, Any]:
    def latest() -> dict[str, Any] | None:
        states = audio_states(cut, channel)
        return states[-1] if states and check(states[-1]) else None

    state: dict[str, Any] = cut.sub.wait(lambda _: latest(), timeout, f"{channel} audio state")
    return state


def sim(cut: ConsoleUnderTest, channel: str) -> Any:
    return cut.console.audio_channels[channel]


def faults_of(cut: ConsoleUnderTest, event: str, channel: str) -> list[str]:
    return [e["data"]["fault"] for e in cut.sub.events(event) if e["source_id"] == channel]


@pytest.mark.parametrize("level", [-20.0, -40.0])
def test_tone_level_within_half_a_db(
    audio_console: Callable[[], ConsoleUnderTest], level: float
) -> None:
    cut = audio_console()
    sim(cut, "line").source = Tone(frequency=1000, rms_dbfs=level)
    switched = time.monotonic()
    # The second after the switch has fully passed: a second's RMS of the tone alone.
    state = wait_audio(
        cut,
        "line",
        lambda a: abs(a["rms_dbfs"] - level) < 0.5 and time.monotonic() - switched > 1.5,
    )
    assert abs(state["rms_dbfs"] - level) < 0.5
    assert abs(state["peak_dbfs"] - (level + 3.01)) < 0.5
    assert state["active"] is True


def test_noise_floor_and_activity_with_attack_and_hang(
    audio_console: Callable[[], ConsoleUnderTest],
) -> None:
    cut = audio_console()
    line = sim(cut, "line")
    state = wait_audio(cut, "line", lambda a: a["floor_dbfs"] > -65)
    assert abs(state["floor_dbfs"] - -62) < 4 and state["active"] is False
    # A 100 ms burst is shorter than the 200 ms attack: no activity.
    burst = Tone(frequency=800, rms_dbfs=-20).render(800, 8000)
    line.queue(burst)
    time.sleep(1.5)
    assert not any(a["active"] for a in audio_states(cut, "line"))
    # A 1 s burst is: active, and it stays active through the 600 ms hang.
    line.queue(Tone(frequency=800, rms_dbfs=-20).render(8000, 8000))
    wait_audio(cut, "line", lambda a: a["active"])
    wait_audio(cut, "line", lambda a: not a["active"])
    changes = [(a["active"], a["ts"]) for a in audio_states(cut, "line")]
    on = next(ts for active, ts in changes if active)
    off = next(ts for active, ts in changes if not active and ts > on)
    held = _seconds(off) - _seconds(on)
    assert 1.0 < held < 2.5, f"active for {held:.2f} s: 1 s of tone plus the 0.6 s hang"


def test_dead_audio_raised_and_cleared_with_a_recall(
    audio_console: Callable[[], ConsoleUnderTest],
) -> None:
    cut = audio_console()
    sim(cut, "line").silence = True
    fault = cut.sub.wait_event("fault.raised", fault="dead_audio", source_id="line")
    assert "no audio at all" in fault["data"]["message"]
    saved = cut.sub.wait_event("recall.saved", source_id="line", reason="dead_audio")
    assert Path(saved["data"]["path"]).is_file()
    sim(cut, "line").silence = False
    cut.sub.wait_event("fault.cleared", fault="dead_audio", source_id="line")
    cut.wait_state("line", state="idle", faults=[])


def test_clipping_raised_and_cleared(audio_console: Callable[[], ConsoleUnderTest]) -> None:
    cut = audio_console()
    line = sim(cut, "line")
    line.source = Tone(frequency=700, rms_dbfs=-10)
    line.clip_gain_db = 12.0
    cut.sub.wait_event("fault.raised", fault="clipping", source_id="line")
    line.clip_gain_db = None
    cut.sub.wait_event("fault.cleared", fault="clipping", source_id="line", timeout=15)


def test_hum_raised_and_cleared(audio_console: Callable[[], ConsoleUnderTest]) -> None:
    cut = audio_console()
    line = sim(cut, "line")
    line.hum_hz = 60.0
    line.hum_rms_dbfs = -30.0
    fault = cut.sub.wait_event("fault.raised", fault="hum", source_id="line", timeout=15)
    assert "hum at -30 dBFS" in fault["data"]["message"]
    line.hum_hz = None
    cut.sub.wait_event("fault.cleared", fault="hum", source_id="line", timeout=15)


def test_carrier_without_audio_and_audio_without_carrier(
    audio_console: Callable[[], ConsoleUnderTest],
) -> None:
    cut = audio_console()
    radio = cut.serial("radio")
    radio.carrier(True)  # the squelch opens but the receiver's audio never arrives
    cut.sub.wait_event("fault.raised", fault="cos_no_audio", source_id="radio")
    cut.console.carrier("radio", True)  # now speech comes with the carrier
    cut.sub.wait_event("fault.cleared", fault="cos_no_audio", source_id="radio")
    cut.console.carrier("radio", False)
    sim(cut, "radio").source = Tone(frequency=1000, rms_dbfs=-15)  # audio, no carrier
    cut.sub.wait_event("fault.raised", fault="audio_no_cos", source_id="radio")
    sim(cut, "radio").source = WhiteNoise(rms_dbfs=-60)
    cut.sub.wait_event("fault.cleared", fault="audio_no_cos", source_id="radio")
    # The line channel has no radio: no carrier cross-checks there, whatever its audio.
    assert not faults_of(cut, "fault.raised", "line")


def test_recall_is_what_was_played(audio_console: Callable[[], ConsoleUnderTest]) -> None:
    cut = audio_console()
    rng = np.random.default_rng(11)
    pattern = (rng.uniform(-0.5, 0.5, 4000)).astype(np.float32)
    sim(cut, "line").queue(pattern)
    wait_for(lambda: sim(cut, "line").queued_frames == 0, what="the pattern played")
    time.sleep(1.0)
    reply = cut.sub.request(f"{cut.prefix}/channels/line/request/recall", {"seconds": 5})
    assert reply["status"] == "ok", reply
    data = reply["data"]
    # At most what was asked, and at most what was heard since the daemon started.
    assert data["samplerate"] == 8000 and 0.5 < data["seconds"] <= 5.0
    with wave.open(data["path"], "rb") as recording:
        assert recording.getframerate() == 8000 and recording.getnchannels() == 1
        samples = np.frombuffer(recording.readframes(recording.getnframes()), "<i2")
    audio = samples.astype(np.float64) / 32767
    # Find the pattern in the recording and compare it sample by sample.
    corr = np.correlate(audio, pattern.astype(np.float64), mode="valid")
    start = int(np.argmax(corr))
    found = audio[start : start + len(pattern)]
    assert np.max(np.abs(found - pattern)) < 2 / 32767, "recall differs from what was played"
    sidecar = Path(data["path"]).with_suffix(".json")
    assert sidecar.is_file() and '"channel": "line"' in sidecar.read_text()


def test_bad_recall_requests(audio_console: Callable[[], ConsoleUnderTest]) -> None:
    cut = audio_console()
    bad = cut.sub.request(f"{cut.prefix}/channels/line/request/recall", {"seconds": -1})
    assert bad["status"] == "error" and "seconds" in bad["error"]


def test_audio_device_lost_and_back(audio_console: Callable[[], ConsoleUnderTest]) -> None:
    cut = audio_console()
    assert cut.console.audio is not None
    card = next(iter(cut.console.audio.devices))
    cut.console.audio.unplug(card)
    for channel in ("radio", "line"):
        cut.sub.wait_event("fault.raised", fault="audio_device_lost", source_id=channel)
    wait_audio(cut, "line", lambda a: a["device"] == "offline")
    time.sleep(4.0)  # several reopen attempts
    cut.console.audio.replug(card)
    for channel in ("radio", "line"):
        cut.sub.wait_event(
            "fault.cleared", fault="audio_device_lost", source_id=channel, timeout=20
        )
    sim(cut, "line").source = Silence()
    sim(cut, "line").source = Tone(frequency=1000, rms_dbfs=-25)
    wait_audio(cut, "line", lambda a: a["device"] == "online" and abs(a["rms_dbfs"] + 25) < 1)
    lost = faults_of(cut, "fault.raised", "line").count("audio_device_lost")
    assert lost == 1, "one fault for the whole absence, not one per reopen attempt"
    # ALSA's own messages (it writes to stderr behind PortAudio) do not flood the log.
    assert "ALSA lib" not in cut.daemon.log()


def _seconds(ts: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
