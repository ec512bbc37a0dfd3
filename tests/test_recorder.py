"""The recorder in the daemon, end to end: the simulator's sound card through PortAudio, the
carrier over RFC 2217, PTT requests over MQTT; records as files, in the index, as
`recording.saved` events and through `request/recordings`."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf

from hw_sim.audio import Tone
from tests.mqtt_tools import wait_for
from tests.sim_tools import ConsoleUnderTest
from tests.test_audio_monitor import audio_console, sim  # noqa: F401  (fixture)


def saved(cut: ConsoleUnderTest, channel: str) -> list[dict[str, Any]]:
    return [
        e["data"]["recording"]
        for e in cut.sub.events("recording.saved")
        if e["source_id"] == channel
    ]


def wait_saved(cut: ConsoleUnderTest, channel: str, n: int, timeout: float = 20) -> list[Any]:
    wait_for(lambda: len(saved(cut, channel)) >= n, timeout, f"{n} records of {channel}")
    return saved(cut, channel)


def request(cut: ConsoleUnderTest, name: str, body: dict[str, Any]) -> dict[str, Any]:
    return cut.sub.request(f"{cut.prefix}/request/{name}", body)


@pytest.mark.slow
def test_receive_transmit_and_activity_are_recorded_and_found(
    audio_console: Callable[[], ConsoleUnderTest],  # noqa: F811
) -> None:
    cut = audio_console()
    sim(cut, "radio").source = Tone(frequency=700, rms_dbfs=-20)
    radio = cut.serial("radio").sim
    radio.set_carrier(True)  # a received transmission of about 2 s
    time.sleep(2.0)
    radio.set_carrier(False)
    (rx,) = wait_saved(cut, "radio", 1)
    assert rx["direction"] == "rx" and rx["status"] == "complete"
    # 2 s of carrier, 1 s of pre-roll and 2 s of hang (the defaults), within the polling.
    assert 4.5 <= rx["duration_s"] <= 5.6, rx
    data, rate = sf.read(rx["path"])
    assert rate == 8000 and abs(len(data) / rate - rx["duration_s"]) < 0.05
    assert -24 < rx["level_dbfs"] < -19  # the tone, with the pre-roll and hang in it too
    assert rx["sha256"] and rx["bytes"] == Path(rx["path"]).stat().st_size

    assert cut.ptt("radio", "on", transaction="console-7")["status"] == "ok"
    time.sleep(1.0)
    assert cut.ptt("radio", "off", transaction="console-7")["status"] == "ok"
    rx_again, tx = wait_saved(cut, "radio", 2)
    assert rx_again == rx
    assert tx["direction"] == "tx" and tx["requested_by"] == "console-7"
    assert tx["start_ts"] >= rx["end_ts"]  # its pre-roll does not reach into the receive

    # The line has no COS: its audio's activity makes the record.
    sim(cut, "line").queue(Tone(frequency=900, rms_dbfs=-20).render(2 * 8000, 8000))
    (line,) = wait_saved(cut, "line", 1)
    assert line["direction"] == "rx" and 3.0 <= line["duration_s"] <= 6.0, line

    found = request(cut, "recordings", {"channel": "radio"})
    assert found["status"] == "ok"
    assert [r["id"] for r in found["data"]["recordings"]] == [tx["id"], rx["id"]]
    only_tx = request(cut, "recordings", {"direction": "tx"})["data"]["recordings"]
    assert [r["id"] for r in only_tx] == [tx["id"]]
    by_console = request(cut, "recordings", {"text": "console-7"})["data"]["recordings"]
    assert [r["id"] for r in by_console] == [tx["id"]]
    later = request(cut, "recordings", {"since": tx["start_ts"]})["data"]["recordings"]
    assert {r["id"] for r in later} >= {tx["id"], line["id"]}
    one = request(cut, "recording", {"id": tx["id"]})
    assert one["status"] == "ok" and one["data"] == tx
    bad = request(cut, "recordings", {"since": "yesterday"})
    assert bad["status"] == "error" and bad["code"] == "bad_request"
    missing = request(cut, "recording", {"id": 999_999})
    assert missing["status"] == "error" and "no recording 999999" in missing["error"]


@pytest.mark.slow
def test_a_kill_mid_record_leaves_a_playable_file_repaired_at_the_next_start(
    audio_console: Callable[[], ConsoleUnderTest],  # noqa: F811
) -> None:
    cut = audio_console()
    sim(cut, "radio").source = Tone(frequency=700, rms_dbfs=-20)
    cut.serial("radio").sim.set_carrier(True)
    time.sleep(4.0)  # flushed every second: about 4 s of it are on disk
    cut.daemon.signal(signal.SIGKILL)
    cut.daemon.wait()
    cut.serial("radio").sim.set_carrier(False)
    cut.daemon.start()
    (cut_short,) = wait_saved(cut, "radio", 1, timeout=30)
    assert cut_short["status"] == "incomplete"
    assert 2.5 <= cut_short["duration_s"] <= 6.0, cut_short
    data, rate = sf.read(cut_short["path"])
    assert abs(len(data) / rate - cut_short["duration_s"]) < 0.05
    found = request(cut, "recordings", {"channel": "radio"})["data"]["recordings"]
    assert [r["status"] for r in found] == ["incomplete"]
