"""The MQTT contract against a real mosquitto and the daemon running as a subprocess."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.contract import validate_as
from tests.mqtt_tools import Broker, Daemon, ResettingProxy, Subscriber, free_port, wait_for


def gateway_config(
    broker: Broker | ResettingProxy,
    tmp_path: Path,
    gateway_id: str,
    extra: str = "",
    mqtt: str = "",
) -> str:
    if not any(table in extra for table in ("[channels.", "[alarms.", "[modbus.modules.")):
        # check-config refuses a gateway with nothing to run; a radio-less channel is enough.
        extra += '\n[channels.spare]\nname = "Spare position (no radio)"\n'
    return f"""
[gateway]
id = "{gateway_id}"
state_dir = "{tmp_path}/state-{gateway_id}"
log_level = "debug"

[mqtt]
url = "{broker.url}"
{mqtt}

{extra}
"""


def unique_id() -> str:
    return "gw" + uuid.uuid4().hex[:8]


def start(
    daemon_factory: Callable[..., Daemon],
    subscriber_factory: Callable[..., Subscriber],
    broker: Broker,
    tmp_path: Path,
) -> tuple[Daemon, Subscriber, str]:
    gid = unique_id()
    sub = subscriber_factory([f"consolegw/{gid}/#"])
    daemon = daemon_factory(gateway_config(broker, tmp_path, gid))
    daemon.start()
    sub.wait(
        lambda m: [x for x in m if x.topic.endswith("/status") and x.json()["state"] == "online"],
        what="online status",
    )
    return daemon, sub, gid


def statuses(sub: Subscriber) -> list[dict[str, object]]:
    return [m.json() for m in sub.on("/status")]


def test_birth_and_clean_stop(
    daemon_factory: Callable[..., Daemon],
    subscriber_factory: Callable[..., Subscriber],
    broker: Broker,
    tmp_path: Path,
) -> None:
    daemon, sub, _ = start(daemon_factory, subscriber_factory, broker, tmp_path)
    online = statuses(sub)[-1]
    assert online["state"] == "online"
    assert isinstance(online["session"], int) and online["session"] >= 1
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0
    sub.wait(
        lambda m: [x for x in m if x.topic.endswith("/status") and x.json()["state"] == "offline"],
        what="offline status",
    )
    offline = statuses(sub)[-1]
    assert offline == {**offline, "state": "offline", "session": online["session"]}
    assert "published offline" in daemon.log()


def test_last_will_on_sigkill_and_session_increments(
    daemon_factory: Callable[..., Daemon],
    subscriber_factory: Callable[..., Subscriber],
    broker: Broker,
    tmp_path: Path,
) -> None:
    daemon, sub, _ = start(daemon_factory, subscriber_factory, broker, tmp_path)
    first = statuses(sub)[-1]
    daemon.signal(signal.SIGKILL)
    daemon.wait()
    sub.wait(
        lambda m: [x for x in m if x.topic.endswith("/status") and x.json()["state"] == "offline"],
        what="Last Will",
    )
    will = statuses(sub)[-1]
    assert will["state"] == "offline" and will["session"] == first["session"]
    daemon.start()
    sub.wait(
        lambda m: [
            x
            for x in m
            if x.topic.endswith("/status")
            and x.json()["state"] == "online"
            and x.json()["session"] > first["session"]
        ],
        what="online with a new session",
    )


def test_retained_state_seen_by_late_subscriber(
    daemon_factory: Callable[..., Daemon],
    subscriber_factory: Callable[..., Subscriber],
    broker: Broker,
    tmp_path: Path,
) -> None:
    _, sub, gid = start(daemon_factory, subscriber_factory, broker, tmp_path)
    sub.wait(lambda m: [x for x in m if x.topic == f"consolegw/{gid}/state"], what="state")
    late = subscriber_factory([f"consolegw/{gid}/#"])
    late.wait(
        lambda m: (
            {x.topic for x in m if x.retain}
            >= {f"consolegw/{gid}/status", f"consolegw/{gid}/state"}
        ),
        what="retained status and state",
    )
    assert not [m for m in late.snapshot() if m.topic.endswith("/event") and m.retain]


def test_event_fields(
    daemon_factory: Callable[..., Daemon],
    subscriber_factory: Callable[..., Subscriber],
    broker: Broker,
    tmp_path: Path,
) -> None:
    _, sub, gid = start(daemon_factory, subscriber_factory, broker, tmp_path)
    event = sub.wait_event("gateway.started")
    assert set(event) >= {"event_id", "seq", "ts", "type", "gateway", "source", "source_id"}
    assert event["gateway"] == gid and event["source"] == "gateway"
    assert len(event["event_id"]) == 32 and event["seq"] >= 1
    assert event["ts"].endswith("Z")
    messages = [m for m in sub.snapshot() if m.topic.endswith("/event")]
    assert all(m.qos == 1 and not m.retain for m in messages)


def test_requests_good_and_bad(
    daemon_factory: Callable[..., Daemon],
    subscriber_factory: Callable[..., Subscriber],
    broker: Broker,
    tmp_path: Path,
) -> None:
    _, sub, gid = start(daemon_factory, subscriber_factory, broker, tmp_path)
    base = f"consolegw/{gid}"
    ok = sub.request(f"{base}/request/status", {"transaction": "t-1"})
    assert ok["status"] == "ok" and ok["transaction"] == "t-1"
    assert ok["data"]["gateway"] == gid

    bad_json = sub.request(f"{base}/request/status", b"{not json")
    assert bad_json["status"] == "error" and "JSON" in bad_json["error"]

    not_object = sub.request(f"{base}/request/status", b"[1, 2]")
    assert not_object["status"] == "error" and "object" in not_object["error"]

    unknown = sub.request(f"{base}/request/launch", {"transaction": 2})
    assert unknown["status"] == "error" and unknown["transaction"] == 2
    assert "unknown command 'launch'" in unknown["error"]

    extra = sub.request(f"{base}/request/rebirth", {"transaction": 3, "force": True})
    assert extra["status"] == "error" and "force: unknown field" in extra["error"]

    channel = sub.request(f"{base}/channels/nope/request/ptt", {"state": "on"})
    assert channel["status"] == "error" and "unknown channel 'nope'" in channel["error"]

    # Still alive and answering after all that.
    assert sub.request(f"{base}/request/status", {})["status"] == "ok"


def test_retained_request_refused_and_cleared(
    daemon_factory: Callable[..., Daemon],
    subscriber_factory: Callable[..., Subscriber],
    broker: Broker,
    tmp_path: Path,
) -> None:
    _, sub, gid = start(daemon_factory, subscriber_factory, broker, tmp_path)
    topic = f"consolegw/{gid}/request/rebirth"
    refused = sub.request(topic, {"transaction": "r"}, retain=True)
    assert refused["status"] == "error" and "retained" in refused["error"]
    assert refused["transaction"] == "r"
    # The gateway removed the stale retained request from the broker.
    probe = subscriber_factory([topic])
    time.sleep(0.5)
    assert not [m for m in probe.snapshot() if m.payload]


def test_v5_response_topic_and_correlation_data(
    daemon_factory: Callable[..., Daemon],
    subscriber_factory: Callable[..., Subscriber],
    broker: Broker,
    tmp_path: Path,
) -> None:
    _, sub, gid = start(daemon_factory, subscriber_factory, broker, tmp_path)
    reply_to = f"client/{gid}/replies"
    listener = subscriber_factory([reply_to])
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ResponseTopic = reply_to
    props.CorrelationData = b"corr-42"
    sub.client.publish(
        f"consolegw/{gid}/request/status",
        json.dumps({"transaction": 5}),
        qos=1,
        properties=props,
    )
    got = listener.wait(lambda m: m, what="v5 response")
    assert got[0].json()["transaction"] == 5
    validate_as("gatewayResponse", got[0].json())
    assert got[0].properties.CorrelationData == b"corr-42"
    # ...and the documented response topic still gets it too.
    sub.wait(lambda m: [x for x in m if x.topic.endswith("/response/status")])


def test_rebirth_republishes_retained_state(
    daemon_factory: Callable[..., Daemon],
    subscriber_factory: Callable[..., Subscriber],
    broker: Broker,
    tmp_path: Path,
) -> None:
    _, sub, gid = start(daemon_factory, subscriber_factory, broker, tmp_path)
    sub.wait(lambda m: [x for x in m if x.topic == f"consolegw/{gid}/state"])
    before = len(sub.on("/state"))
    assert sub.request(f"consolegw/{gid}/request/rebirth", {})["status"] == "ok"
    sub.wait(
        lambda m: len([x for x in m if x.topic.endswith("/state")]) > before,
        what="state republished",
    )


def test_daemon_keeps_retrying_an_absent_broker(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    gid = unique_id()
    port = free_port()
    daemon = daemon_factory(gateway_config(Broker(tmp_path / "b", port=port), tmp_path, gid))
    daemon.start()
    wait_for(lambda: "cannot reach the broker" in daemon.log(), what="outage logged")
    time.sleep(2.5)  # several reconnect attempts
    log = daemon.log()
    assert log.count("cannot reach the broker") == 1, "an outage is logged once, not per retry"
    late = Broker(tmp_path / "late", port=port)
    late.start()
    # Subscribe at once: the daemon's next retry is at least half a second away.
    sub = Subscriber(late.host, late.port, [f"consolegw/{gid}/#"])
    try:
        wait_for(lambda: "MQTT connected" in daemon.log(), timeout=15, what="reconnect")
        # The event committed while the broker was away arrives once it is back.
        sub.wait_event("gateway.started")
        # `session` counts connections made (one), not the attempts before it, and the
        # retained gateway state carries it from its first publish on.
        assert [m.json()["session"] for m in sub.on("/status")] == [1]
        states = sub.wait(lambda m: [x for x in m if x.topic == f"consolegw/{gid}/state"])
        assert {m.json()["session"] for m in states} == {1}
        assert "Traceback" not in daemon.log()
        sub.close()
    finally:
        daemon.stop()
        late.stop()


def test_tls_and_password(daemon_factory: Callable[..., Daemon], tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    pki.mkdir()

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=pki, check=True, capture_output=True)

    ssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-subj",
        "/CN=consolegw test CA",
    )
    for name in ("server", "client"):
        ssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={'localhost' if name == 'server' else 'gw'}",
        )
        ext = pki / f"{name}.ext"
        ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        ssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.crt",
            "-days",
            "2",
            "-extfile",
            str(ext),
        )
    passwords = pki / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(passwords), "gw", "s3cret"],
        check=True,
        capture_output=True,
    )
    (pki / "gw.pass").write_text("s3cret\n")
    port = free_port()
    broker = Broker(
        tmp_path / "tls",
        port=port,
        extra_conf=(
            f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {passwords}\n"
            f"cafile {pki}/ca.crt\ncertfile {pki}/server.crt\nkeyfile {pki}/server.key\n"
            "require_certificate true\n"
        ),
    )
    broker.start()
    try:
        gid = unique_id()
        tls = f"""
[mqtt.tls]
ca_file = "{pki}/ca.crt"
cert_file = "{pki}/client.crt"
key_file = "{pki}/client.key"
"""
        config = (
            gateway_config(broker, tmp_path, gid).replace(
                f'url = "{broker.url}"',
                f'url = "mqtts://localhost:{port}"\nusername = "gw"\n'
                f'password_file = "{pki}/gw.pass"',
            )
            + tls
        )
        daemon = daemon_factory(config)
        daemon.start()
        sub = Subscriber(
            "localhost",
            port,
            [f"consolegw/{gid}/#"],
            username="gw",
            password="s3cret",
            tls={
                "ca_certs": str(pki / "ca.crt"),
                "certfile": str(pki / "client.crt"),
                "keyfile": str(pki / "client.key"),
            },
        )
        try:
            sub.wait(
                lambda m: [
                    x for x in m if x.topic.endswith("/status") and x.json()["state"] == "online"
                ],
                what="online over TLS",
            )
        finally:
            sub.close()
        daemon.stop()

        # A wrong password is refused by the broker: the daemon says so and keeps trying.
        (pki / "gw.pass").write_text("wrong\n")
        denied = daemon_factory(config, name="denied")
        denied.start()
        wait_for(lambda: "authentication refused" in denied.log(), what="refusal logged")
        assert "MQTT connected" not in denied.log()
        assert "unreachable" not in denied.log()
    finally:
        broker.stop()


def test_paho_v311_client_can_read_events(
    daemon_factory: Callable[..., Daemon],
    subscriber_factory: Callable[..., Subscriber],
    broker: Broker,
    tmp_path: Path,
) -> None:
    """CAD clients on MQTT 3.1.1 must work too (no v5-only features needed to subscribe)."""
    _, _, gid = start(daemon_factory, subscriber_factory, broker, tmp_path)
    got: list[bytes | bytearray] = []
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    client.on_message = lambda c, u, m: got.append(m.payload)
    client.connect(broker.host, broker.port)
    client.subscribe(f"consolegw/{gid}/status", qos=1)
    client.loop_start()
    try:
        wait_for(lambda: got, what="retained status over MQTT 3.1.1")
        assert json.loads(got[0])["state"] == "online"
    finally:
        client.loop_stop()
        client.disconnect()


@pytest.mark.slow
def test_a_peer_that_is_no_mqtt_broker_is_named_as_such(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    # A TCP server that takes the connection and never answers CONNECT (a wrong port,
    # a proxy, an HTTP server waiting for its request line).
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                accepted.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    port = server.getsockname()[1]
    gid = unique_id()
    daemon = daemon_factory(gateway_config(Broker(tmp_path / "b", port=port), tmp_path, gid))
    daemon.start()
    try:
        wait_for(lambda: "protocol:" in daemon.log(), timeout=25, what="protocol failure")
        log = daemon.log()
        assert "sent no MQTT CONNACK" in log and "cannot reach" not in log
        assert "Traceback" not in log
    finally:
        daemon.stop()
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        server.close()


def test_mqtt_3_1_1_keeps_every_feature_it_can(
    daemon_factory: Callable[..., Daemon],
    subscriber_factory: Callable[..., Subscriber],
    broker: Broker,
    tmp_path: Path,
) -> None:
    gid = unique_id()
    prefix = f"consolegw/{gid}"
    # A stale retained request waits on the broker before the gateway connects.
    stale = subscriber_factory([f"{prefix}/response/#"])
    stale.client.publish(f"{prefix}/request/status", b'{"transaction": 1}', qos=1, retain=True)
    sub = subscriber_factory([f"{prefix}/#"])
    daemon = daemon_factory(gateway_config(broker, tmp_path, gid, mqtt='protocol = "3.1.1"'))
    daemon.start()
    sub.wait(
        lambda m: [x for x in m if x.topic == f"{prefix}/status" and x.json()["state"] == "online"],
        what="online status",
    )
    wait_for(lambda: "with MQTT 3.1.1" in daemon.log(), what="the protocol in the log")
    refused = sub.wait(lambda m: [x.json() for x in m if x.topic.endswith("/response/status")])
    assert refused[0]["code"] == "bad_request" and "retained" in refused[0]["error"], refused
    answer = sub.request(f"{prefix}/request/status", {"transaction": "t-311"})
    assert answer["status"] == "ok" and answer["data"]["session"] >= 1
    assert sub.request(f"{prefix}/request/rebirth", {})["status"] == "ok"
    daemon.signal(signal.SIGKILL)
    daemon.wait()
    will = sub.wait(
        lambda m: [
            x.json() for x in m if x.topic == f"{prefix}/status" and x.json()["state"] == "offline"
        ],
        what="the Last Will over 3.1.1",
    )
    assert will[-1]["session"] == answer["data"]["session"]


def test_online_means_requests_are_heard(
    daemon_factory: Callable[..., Daemon],
    broker: Broker,
    tmp_path: Path,
) -> None:
    """A CAD that commands the moment it sees `online` is answered: the gateway has its
    request subscriptions before it says online (in three starts, and in the rebirth after
    the broker comes back)."""
    gid = unique_id()
    answered: list[dict[str, object]] = []
    requests_sent = 0

    def on_message(client: paho.Client, _userdata: object, msg: paho.MQTTMessage) -> None:
        nonlocal requests_sent
        if msg.topic == f"consolegw/{gid}/response/status":
            answered.append(json.loads(msg.payload))
        elif json.loads(msg.payload)["state"] == "online":
            # At once, from the network thread: no delay a human or a slow CAD would give.
            client.publish(f"consolegw/{gid}/request/status", b"{}", qos=1)
            requests_sent += 1

    topics = [(f"consolegw/{gid}/status", 1), (f"consolegw/{gid}/response/status", 1)]

    def answers(count: int) -> Callable[[], bool]:
        return lambda: len(answered) >= count

    cad = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    cad.on_message = on_message
    # Subscribed at every connection: after the broker's restart, the gateway's rebirth
    # comes live or (if the gateway was back first) retained.
    cad.on_connect = lambda client, *_: client.subscribe(topics)
    cad.connect(broker.host, broker.port)
    cad.loop_start()
    daemon = daemon_factory(gateway_config(broker, tmp_path, gid))
    try:
        wait_for(cad.is_connected, 10, "CAD connected")
        for start_number in range(1, 4):
            daemon.start()
            wait_for(answers(start_number), 10, f"answer after start {start_number}")
            daemon.stop()
        daemon.start()
        wait_for(answers(4), 10, "answer after the fourth start")
        broker.stop()
        broker.start()
        wait_for(answers(5), 30, "answer after the rebirth")
    finally:
        cad.loop_stop()
        cad.disconnect()
    assert all(a["status"] == "ok" for a in answered), answered
    assert requests_sent == len(answered)


def connected_more_than(daemon: Daemon, count: int) -> Callable[[], bool]:
    return lambda: daemon.log().count("MQTT connected") > count


def test_a_reset_connection_is_one_warning_not_a_paho_error(
    daemon_factory: Callable[..., Daemon],
    subscriber_factory: Callable[..., Subscriber],
    broker: Broker,
    tmp_path: Path,
) -> None:
    """A link reset under the gateway (RST: a firewall, a NAT, a broker host losing power):
    paho's own "failed to receive on socket" goes to DEBUG, the link says it once as a
    WARNING, and the gateway is back with its events."""
    proxy = ResettingProxy(broker)
    gid = unique_id()
    sub = subscriber_factory([f"consolegw/{gid}/#"])
    daemon = daemon_factory(gateway_config(proxy, tmp_path, gid))
    try:
        daemon.start()
        wait_for(lambda: "MQTT connected" in daemon.log(), 15, "first connection")
        for resets in (1, 2):
            assert proxy.reset() == 1
            wait_for(connected_more_than(daemon, resets), 15, "reconnected")
        sub.request(f"consolegw/{gid}/request/status", {})
        log = daemon.log()
    finally:
        daemon.stop()
        proxy.close()
    paho_lines = [ln for ln in log.splitlines() if "gateway.mqtt.paho:" in ln]
    said = [ln for ln in paho_lines if "failed to receive on socket" in ln]
    assert len(said) == 2, "the resets reached paho as resets"
    assert all(" DEBUG " in ln for ln in said), said
    assert not [ln for ln in log.splitlines() if " ERROR " in ln]
    assert log.count("MQTT connection lost") == 2
    assert "Traceback" not in log
