"""`consolegw top` driven by textual's pilot against the real daemon and simulated hardware,
through a real broker: what it shows comes only from MQTT, what it sends is a real request."""

from __future__ import annotations

import json
import uuid
import wave
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from textual.widgets import DataTable

from gateway.cli import main
from gateway.config import load_config
from gateway.events import utc_timestamp
from gateway.tools.mqtt_view import BrokerTarget, ConsoleView
from gateway.tools.plot import make_plot, parse_time
from gateway.tools.top import ConfirmScreen, TopApp, level_bar
from tests.mqtt_tools import Broker, Daemon, Subscriber
from tests.sim_tools import ConsoleUnderTest, start_config
from tests.tools.helpers import tools_config, until


@pytest.fixture
def console(
    tmp_path: Path,
    broker: Broker,
    daemon_factory: Callable[..., Daemon],
    subscriber_factory: Callable[..., Subscriber],
) -> Iterator[tuple[ConsoleUnderTest, Path]]:
    gid, text = tools_config(tmp_path, broker)
    cut, stop = start_config(tmp_path, gid, text, daemon_factory, subscriber_factory)
    cut.wait_state("door", scope="alarms", state="normal")
    yield cut, tmp_path / f"sim-{gid}.toml"
    stop()


def _row(app: TopApp, selector: str, key: str) -> list[str]:
    table = app.query_one(selector, DataTable)
    try:
        cells = table.get_row(key)
    except Exception:  # not there yet
        return []
    return [getattr(c, "plain", str(c)) for c in cells]


def _select(app: TopApp, selector: str, key: str) -> None:
    table = app.query_one(selector, DataTable)
    table.focus()
    table.move_cursor(row=table.get_row_index(key))


async def test_top_shows_the_console_and_keys_a_channel(
    console: tuple[ConsoleUnderTest, Path], tmp_path: Path
) -> None:
    cut, config_path = console
    record = tmp_path / "events.jsonl"
    target = BrokerTarget.from_config(load_config(config_path))
    app = TopApp(target=target, key_seconds=1.0, record=record)
    async with app.run_test(size=(180, 50)) as pilot:
        await until(
            lambda: all("online" in _row(app, "#channels", c) for c in ("fire", "ems", "police")),
            what="three channels online",
        )
        assert _row(app, "#channels", "fire")[:3] == ["fire", "Fire", "idle"]
        await until(lambda: "normal" in _row(app, "#alarms", "door"), what="alarm row")
        assert _row(app, "#alarms", "door")[:3] == ["door", "Rear door", "high"]
        await until(lambda: "online" in _row(app, "#modules", "io1"), what="module row")
        assert "ONLINE" in str(app.query_one("#gateway").render())

        # k, then cancel: nothing is sent, nothing keys.
        _select(app, "#channels", "fire")
        await pilot.press("k")
        await until(lambda: isinstance(app.screen, ConfirmScreen), what="confirmation")
        await pilot.press("n")
        await until(lambda: app.last_response == "key fire: cancelled", what="cancelled")
        assert not cut.serial("fire").keyed

        # k, then yes: the simulated radio keys; the response, the row and the log show it.
        await pilot.press("k")
        await until(lambda: isinstance(app.screen, ConfirmScreen), what="confirmation")
        await pilot.press("y")
        await until(lambda: cut.serial("fire").keyed, what="the simulated radio keyed")
        await until(lambda: app.last_response.startswith("ptt fire: ok"), what="ptt response")
        assert "ptt=True" in app.last_response and "lease_s=1.0" in app.last_response
        await until(lambda: "ON" in _row(app, "#channels", "fire"), what="PTT ON in the table")
        assert _row(app, "#channels", "fire")[2] == "transmitting"
        await until(lambda: any("ptt.on" in line for line in app.log_lines), what="ptt.on")
        # The lease (1 s here) ends it, whatever the tool does.
        await until(
            lambda: any("ptt.off" in line and "lease_expired" in line for line in app.log_lines),
            what="ptt.off by lease",
        )
        assert not cut.serial("fire").keyed

        # An alarm arrives; a acknowledges it after confirmation.
        cut.console.set_alarm_input("door", True)
        await until(lambda: "active" in _row(app, "#alarms", "door"), what="alarm active")
        # The event comes through the outbox; the retained state may arrive before it.
        await until(
            lambda: any("alarm.raised" in line for line in app.log_lines), what="alarm.raised"
        )
        _select(app, "#alarms", "door")
        await pilot.press("a")
        await until(lambda: isinstance(app.screen, ConfirmScreen), what="confirmation")
        await pilot.press("y")
        await until(lambda: app.last_response.startswith("ack door: ok"), what="ack response")
        await until(lambda: _row(app, "#alarms", "door")[5] == "yes", what="acknowledged")

        # r asks for a recall: the answer is shown, whatever it is.
        _select(app, "#channels", "ems")
        await pilot.press("r")
        await until(
            lambda: (
                app.last_response.startswith("recall ems: ")
                and not app.last_response.endswith("...")
            ),
            what="recall response",
        )
        assert "no response" not in app.last_response

        # A device lost shows as a fault on its row.
        cut.usb("police").unplug()
        await until(lambda: "device_lost" in _row(app, "#channels", "police"), what="fault")
        assert _row(app, "#channels", "police")[5] == "offline"
        await pilot.press("q")

    # What top recorded is what plot marks: a recording around the test key.
    events = [json.loads(line) for line in record.read_text().splitlines()]
    keyed = [e for e in events if e["type"] in ("ptt.on", "ptt.off") and e["source_id"] == "fire"]
    assert [e["type"] for e in keyed] == ["ptt.on", "ptt.off"]
    start = parse_time(keyed[0]["ts"]) - 1.0
    wav = tmp_path / "fire.wav"
    with wave.open(str(wav), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(bytes(2 * 8000 * 4))
    wav.with_suffix(".json").write_text(
        json.dumps({"start_ts": utc_timestamp(start), "channel": "fire"})
    )
    info = make_plot(wav, tmp_path / "fire.png", events_path=record, size_px=(400, 300))
    marks = {m["type"]: m["t"] for m in info.markers if m["type"].startswith("ptt.")}
    assert marks["ptt.on"] == pytest.approx(1.0, abs=0.01)
    assert 1.9 < marks["ptt.off"] < 3.9  # the 1 s lease, as the daemon timed it


async def test_top_level_bar_from_audio_topic(broker: Broker) -> None:
    """The Level column shows `<prefix>/channels/<id>/audio` when the daemon publishes it."""
    prefix = f"lab/{uuid.uuid4().hex[:8]}"
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    state = {
        "channel": "fire",
        "name": "Fire",
        "state": "receiving",
        "ptt": False,
        "ptt_readback": True,
        "cos": True,
        "device": "online",
        "faults": [],
        "tx_remaining_s": None,
        "ts": "2026-01-01T00:00:00.000Z",
    }
    retained = {
        f"{prefix}/status": {"state": "offline", "session": 3, "ts": state["ts"]},
        f"{prefix}/channels/fire/state": state,
        f"{prefix}/channels/fire/audio": {"rms_dbfs": -20.0, "active": True},
    }
    for topic, body in retained.items():
        client.publish(topic, json.dumps(body), qos=1, retain=True).wait_for_publish(5)
    try:
        app = TopApp(target=BrokerTarget.from_url(broker.url, prefix=prefix))
        async with app.run_test(size=(160, 40)):
            await until(lambda: "█" in "".join(_row(app, "#channels", "fire")), what="bar")
            level = _row(app, "#channels", "fire")[6]
            assert level.count("█") == 8 and level.endswith("-20.0")  # 40 dB of 60, 12 wide
            assert "OFFLINE" in str(app.query_one("#gateway").render())
            client.publish(f"{prefix}/channels/fire/audio", b"", qos=1, retain=True)
            await until(lambda: _row(app, "#channels", "fire")[6] == "", what="bar cleared")
            assert _row(app, "#channels", "fire")[9] == ""  # no unit heard yet
            heard = {"unit": "0042", "kind": "emergency", "ts": state["ts"]}
            topic = f"{prefix}/channels/fire/state"
            client.publish(topic, json.dumps(state | {"last_unit": heard}), qos=1, retain=True)
            await until(lambda: _row(app, "#channels", "fire")[9] == "0042 EMERGENCY", what="unit")
    finally:
        for topic in retained:
            client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
        client.loop_stop()
        client.disconnect()


def test_top_json_snapshot(
    console: tuple[ConsoleUnderTest, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, config_path = console
    assert main(["top", "--json", "-c", str(config_path)]) == 0
    snapshot = json.loads(capsys.readouterr().out)
    assert snapshot["status"]["state"] == "online"
    assert sorted(snapshot["channels"]) == ["ems", "fire", "police"]
    assert snapshot["channels"]["fire"]["device"] == "online"
    assert snapshot["alarms"]["door"]["state"] == "normal"
    assert snapshot["modules"]["io1"]["state"] == "online"


def test_top_usage_errors(broker: Broker, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["top"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["top", "--broker", broker.url])
    assert exc.value.code == 2
    assert main(["top", "--json", "--broker", "mqtt://127.0.0.1:1", "--gateway", "x"]) == 1
    assert "cannot reach the broker" in capsys.readouterr().err
    assert main(["top", "--json", "--broker", broker.url, "--gateway", "nobody-here"]) == 1
    assert "nothing retained" in capsys.readouterr().err
    assert main(["top", "--json", "--broker", "http://x", "--gateway", "x"]) == 2


def test_view_model_dedups_and_forgets() -> None:
    view = ConsoleView(prefix="consolegw/gw")
    event = {"event_id": "a1", "seq": 4, "ts": "2026-01-01T00:00:00Z", "type": "cos.on"}
    assert view.apply("consolegw/gw/channels/fire/event", json.dumps(event).encode()) is not None
    assert view.apply("consolegw/gw/channels/fire/event", json.dumps(event).encode()) is None
    assert len(view.events) == 1
    view.apply("consolegw/gw/alarms/door/state", b'{"alarm": "door", "state": "normal"}')
    assert "door" in view.alarms
    change = view.apply("consolegw/gw/alarms/door/state", b"")
    assert change is not None and change.kind == "alarm" and "door" not in view.alarms
    assert view.apply("other/gw/status", b"{}") is None
    # Any other retained leaf of a channel is kept by name (audio today, tty tomorrow).
    change = view.apply("consolegw/gw/channels/fire/tty", b'{"active": true}')
    assert change is not None and change.kind == "channel" and change.key == "fire"
    assert view.extras["fire"]["tty"] == {"active": True}
    view.apply("consolegw/gw/channels/fire/tty", b"")
    assert "tty" not in view.extras["fire"]
    assert level_bar(None).plain == "" and level_bar({"rms_dbfs": 0.0}).plain.count("█") == 12
