"""docs/mosquitto.acl on a real mosquitto: a gateway publishes under its own prefix only,
CAD sends requests but cannot fake status or events, a gateway's credentials cannot command
another console, and a gateway whose publishes the broker refuses keeps its events."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.mqtt_tools import ROOT, Broker, Daemon, Subscriber, free_port, wait_for

ACL = ROOT / "docs" / "mosquitto.acl"
PASSWORDS = {"pos-a": "pw-a", "pos-b": "pw-b", "cad": "pw-cad", "monitor": "pw-mon"}


@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[Broker]:
    passwd = shutil.which("mosquitto_passwd")
    if passwd is None:
        pytest.skip("mosquitto_passwd (Debian's mosquitto) is not installed")
    password_file = tmp_path / "passwd"
    for n, (user, password) in enumerate(PASSWORDS.items()):
        create = ["-c"] if n == 0 else []
        subprocess.run([passwd, *create, "-b", password_file, user, password], check=True)
    port = free_port()
    broker = Broker(
        tmp_path / "acl-broker",
        port=port,
        extra_conf=(
            f"listener {port} 127.0.0.1\nallow_anonymous false\n"
            f"password_file {password_file}\nacl_file {ACL}\n"
        ),
    )
    broker.start()
    yield broker
    broker.stop()


def gateway_config(
    broker: Broker, state: Path, gateway_id: str, user: str, prefix: str = ""
) -> str:
    password_file = state.parent / f"{user}.password"
    password_file.write_text(PASSWORDS[user] + "\n")
    return (
        f'[gateway]\nid = "{gateway_id}"\nstate_dir = "{state}"\n'
        f'[mqtt]\nurl = "{broker.url}"\nusername = "{user}"\npassword_file = "{password_file}"\n'
        + (f'prefix = "{prefix}"\n' if prefix else "")
        + '[channels.fire]\nname = "Fire"\n'
    )


def client(broker: Broker, user: str, topics: list[str]) -> Subscriber:
    return Subscriber(broker.host, broker.port, topics, username=user, password=PASSWORDS[user])


def publish_refused(broker: Broker, user: str, topic: str, payload: bytes = b"{}") -> bool:
    """Publish at QoS 1 (MQTT 5) from a client of its own: True when the broker refuses it.

    mosquitto 2.0 answers "Not authorized" in the PUBACK and may then close the connection
    (eclipse-mosquitto/mosquitto#2579), sometimes so abruptly that the PUBACK is lost: a
    connection closed before any PUBACK counts as refused too. Whether it was delivered is
    checked apart, by the watchers."""
    codes: dict[int, Any] = {}
    closed = threading.Event()
    sender = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    sender.username_pw_set(user, PASSWORDS[user])
    sender.on_publish = lambda _c, _u, mid, rc, _p: codes.__setitem__(mid, rc)
    sender.on_disconnect = lambda *_: closed.set()
    sender.connect(broker.host, broker.port)
    sender.loop_start()
    try:
        info = sender.publish(topic, payload, qos=1)
        wait_for(lambda: info.mid in codes or closed.is_set(), 5, f"PUBACK for {topic}")
        code = codes.get(info.mid)
        return code is None or bool(getattr(code, "is_failure", False))
    finally:
        sender.loop_stop()
        sender.disconnect()


def test_the_acl_keeps_each_party_to_its_own_topics(
    acl_broker: Broker,
    tmp_path: Path,
    daemon_factory: Callable[..., Daemon],
) -> None:
    daemon = daemon_factory(gateway_config(acl_broker, tmp_path / "state-a", "pos-a", "pos-a"))
    daemon.start()
    cad = client(acl_broker, "cad", ["consolegw/#"])
    monitor = client(acl_broker, "monitor", ["consolegw/#"])
    other = client(acl_broker, "pos-b", ["consolegw/#"])
    try:
        status = cad.wait(lambda m: [x for x in m if x.topic == "consolegw/pos-a/status"], 20)
        assert status[-1].json()["state"] == "online"
        # CAD commands the console, gateway and channel scope alike.
        assert cad.request("consolegw/pos-a/request/status", {})["status"] == "ok"
        channel = cad.request("consolegw/pos-a/channels/fire/request/status", {})
        assert channel["status"] == "ok", channel

        # Another gateway's credentials cannot command this console: the broker refuses the
        # request (v5 PUBACK: Not authorized) and the gateway never sees it.
        answered = len(cad.on("/response/status"))
        for topic in (
            "consolegw/pos-a/request/status",
            "consolegw/pos-a/channels/fire/request/ptt",
        ):
            assert publish_refused(acl_broker, "pos-b", topic, b'{"state": "on"}'), topic
        # Nor fake its status or events; CAD cannot either, a monitor publishes nothing.
        assert publish_refused(
            acl_broker, "pos-b", "consolegw/pos-a/status", b'{"state": "offline"}'
        )
        assert publish_refused(acl_broker, "cad", "consolegw/pos-a/event", b"{}")
        assert publish_refused(acl_broker, "cad", "consolegw/pos-a/status", b'{"state": "offline"}')
        assert publish_refused(acl_broker, "monitor", "consolegw/pos-a/request/status")
        # The requests' own names do not let CAD write elsewhere.
        assert publish_refused(acl_broker, "cad", "consolegw/pos-a/channels/fire/state")
        time.sleep(1.0)
        assert len(cad.on("/response/status")) == answered
        assert not [m for m in cad.on("/response/ptt")]
        assert [m.json()["state"] for m in cad.on("consolegw/pos-a/status")][-1] == "online"
        assert not [
            m for m in cad.snapshot() if m.topic == "consolegw/pos-a/event" and m.payload == b"{}"
        ]
        # What pos-b may do: its own prefix.
        assert not publish_refused(
            acl_broker, "pos-b", "consolegw/pos-b/status", b'{"state": "online"}'
        )
        # A v5 response topic outside the prefix is refused to the gateway: the response on
        # .../response/<cmd> still comes, and the gateway carries on (mosquitto may also drop
        # its connection for it: then it reconnects at once).
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = "cad/inbox/1"
        before = len(cad.on("consolegw/pos-a/response/status"))
        cad.client.publish("consolegw/pos-a/request/status", b"{}", qos=1, properties=props)
        cad.wait(
            lambda m: len([x for x in m if x.topic.endswith("pos-a/response/status")]) > before
        )
        wait_for(
            lambda: (
                "refused a publish to cad/inbox/1" in daemon.log()
                or "MQTT connection lost" in daemon.log()
            ),
            10,
            "the gateway to notice the refusal",
        )
        if "MQTT connection lost" in daemon.log():  # a request sent in the gap is lost
            wait_for(lambda: daemon.log().count("MQTT connected") >= 2, 10, "the reconnection")
        assert cad.request("consolegw/pos-a/request/status", {})["status"] == "ok"
        assert daemon.proc is not None and daemon.proc.poll() is None
    finally:
        for sub in (cad, monitor, other):
            sub.close()


def outbox_depth(state: Path) -> int:
    with sqlite3.connect(state / "outbox.sqlite3") as db:
        (depth,) = db.execute("SELECT COUNT(*) FROM outbox").fetchone()
    return int(depth)


def test_a_gateway_the_broker_refuses_keeps_its_events_and_says_why(
    acl_broker: Broker,
    tmp_path: Path,
    daemon_factory: Callable[..., Daemon],
) -> None:
    # pos-b's credentials with pos-a's prefix (a copied config): every publish is refused.
    # aiomqtt alone would take each refused event off the outbox as delivered.
    state = tmp_path / "state-b"
    daemon = daemon_factory(
        gateway_config(acl_broker, state, "pos-b", "pos-b", prefix="consolegw/pos-a")
    )
    daemon.start()
    wait_for(lambda: "refused a publish to consolegw/pos-a/" in daemon.log(), 20, "the refusal")
    time.sleep(4.0)
    log = daemon.log()
    assert "authorization: the broker refused a publish" in log
    assert "docs/broker-acl.md" in log
    lines = [ln for ln in log.splitlines() if "refused a publish" in ln and " DEBUG " not in ln]
    assert len(lines) <= 2, lines  # once, not once per reconnect
    assert daemon.proc is not None and daemon.proc.poll() is None
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.log() and "never retrieved" not in daemon.log()
    assert outbox_depth(state) >= 1  # gateway.started, never delivered, still there


def test_the_acl_file_is_what_the_doc_shows() -> None:
    doc = (ROOT / "docs" / "broker-acl.md").read_text()
    assert ACL.read_text().strip() in doc
