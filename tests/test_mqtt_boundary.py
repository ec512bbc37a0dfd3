"""Nothing a requester sends takes the console off the air: the real daemon, a real mosquitto,
simulated radios behind the real drivers, and requests no well-behaved client would send."""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.mqtt_tools import Broker, Received, Subscriber, wait_for
from tests.sim_tools import ConsoleUnderTest

SURROGATE_STATUS = b'{"transaction": "\\ud800"}'


def nested(levels: int) -> bytes:
    return b'{"transaction": ' + b"[" * levels + b"1" + b"]" * levels + b"}"


def publish(
    cut: ConsoleUnderTest,
    topic: str,
    payload: bytes,
    *,
    qos: int = 1,
    retain: bool = False,
    correlation: bytes | None = None,
) -> None:
    props = None
    if correlation is not None:
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.CorrelationData = correlation
    info = cut.sub.client.publish(topic, payload, qos=qos, retain=retain, properties=props)
    info.wait_for_publish(10)


def answers(cut: ConsoleUnderTest, reply_topic: str, correlation: bytes) -> list[Received]:
    return [
        m
        for m in cut.sub.snapshot()
        if m.topic == reply_topic
        and m.properties is not None
        and getattr(m.properties, "CorrelationData", None) == correlation
    ]


def ask(
    cut: ConsoleUnderTest, topic: str, payload: bytes, *, retain: bool = False, qos: int = 1
) -> dict[str, Any]:
    """Publish one request and return its one response (by correlation data)."""
    correlation = uuid.uuid4().bytes
    reply = topic.replace("/request/", "/response/")
    publish(cut, topic, payload, retain=retain, qos=qos, correlation=correlation)
    found = wait_for(lambda: answers(cut, reply, correlation), 10, f"response on {reply}")
    body: dict[str, Any] = found[0].json()
    return body


def alive(cut: ConsoleUnderTest) -> None:
    assert cut.daemon.proc is not None and cut.daemon.proc.poll() is None, "the daemon exited"
    status = ask(cut, f"{cut.prefix}/request/status", b'{"transaction": "alive?"}')
    assert status["status"] == "ok" and status["transaction"] == "alive?"


def no_radio_keyed(cut: ConsoleUnderTest) -> None:
    assert not cut.serial("fire").keyed and not cut.serial("ems").keyed
    assert not cut.usb("police").keyed


def test_poison_requests_are_refused_and_the_daemon_stays_up(
    console_factory: Callable[..., ConsoleUnderTest],
) -> None:
    cut = console_factory()
    status = f"{cut.prefix}/request/status"
    ptt = f"{cut.prefix}/channels/fire/request/ptt"
    cases: list[tuple[str, bytes, str]] = [
        (status, SURROGATE_STATUS, "lone surrogate"),
        (status, nested(256), "levels deep"),
        (status, nested(2000), "levels deep"),
        (status, b'{"transaction": ' + b"7" * 5000 + b"}", "out of range"),
        (status, b'{"transaction": ' + b"7" * 50 + b"}", "out of range"),
        (status, b'{"transaction": "' + b"x" * (1 << 20) + b'"}', "limit is 65536"),
        (status, b'{"transaction": {"a": 1}}', "transaction must be"),
        (status, b'{"transaction": true}', "transaction must be"),
        (ptt, b'{"state": "on", "transaction": "\\ud800"}', "lone surrogate"),
        (ptt, b'{"state": "on", "duration_s": true}', "duration_s"),
        (ptt, b'{"state": "on", "duration_s": "5"}', "duration_s"),
        (ptt, b'{"state": "on", "duration_s": 1e999}', "out of range"),
        (ptt, b'{"state": "on", "duration_s": NaN}', "not a JSON number"),
        (ptt, b'{"state": "off", "state": "on"}', "appears twice"),
    ]
    for topic, payload, says in cases:
        answer = ask(cut, topic, payload)
        assert answer["status"] == "error" and answer["code"] == "bad_request", answer
        assert says in answer["error"], (payload[:60], answer["error"])
        assert answer["transaction"] is None
        no_radio_keyed(cut)
    alive(cut)
    time.sleep(0.5)  # the surrogate PTT once killed the daemon 260 ms later
    alive(cut)
    assert not cut.sub.events("ptt.on")
    log = cut.daemon.log()
    assert "Traceback" not in log
    # Fourteen refusals: five logged, the rest summed up later, none a traceback.
    assert log.count("refused: bad_request") == 5


def test_a_retained_poison_request_is_cleared_and_cannot_crash_loop(
    console_factory: Callable[..., ConsoleUnderTest], broker: Broker
) -> None:
    cut = console_factory()
    topic = f"{cut.prefix}/request/status"
    refused = ask(cut, topic, SURROGATE_STATUS, retain=True)
    assert refused["code"] == "bad_request"
    assert "retained" in refused["error"] or "surrogate" in refused["error"]

    def retained_on(topic: str) -> list[Received]:
        probe = Subscriber(broker.host, broker.port, [topic])
        time.sleep(0.5)  # a retained message arrives right after SUBACK
        try:
            return [m for m in probe.snapshot() if m.retain and m.payload]
        finally:
            probe.close()

    assert retained_on(topic) == []
    # Stopped, then the poison goes in retained, then the daemon starts on it.
    cut.daemon.signal(signal.SIGTERM)
    assert cut.daemon.wait() == 0
    publish(cut, topic, SURROGATE_STATUS, retain=True)
    publish(cut, f"{cut.prefix}/channels/fire/request/ptt", b'{"state": "on"}', retain=True)
    cut.daemon.start()
    cut.wait_online()
    time.sleep(2.0)  # it used to exit 0.7-0.9 s after every start
    alive(cut)
    no_radio_keyed(cut)
    assert [m.topic for m in retained_on(f"{cut.prefix}/#") if "/request/" in m.topic] == []
    refusals = [m.json() for m in cut.sub.on("/response/ptt")]
    assert refusals and all("retained" in r["error"] for r in refusals)


def keyed_seconds(cut: ConsoleUnderTest, channel: str, since: float, until: float) -> float:
    """Seconds the simulated radio was keyed in [since, until], from its own line log."""
    total, keyed_at = 0.0, None
    for event in cut.serial(channel).sim.events(name="keyed"):
        if event.value and keyed_at is None:
            keyed_at = max(event.t, since)
        elif not event.value and keyed_at is not None:
            total += max(0.0, min(event.t, until) - keyed_at)
            keyed_at = None
    if keyed_at is not None:
        total += until - keyed_at
    return total


def renew(
    cut: ConsoleUnderTest, channel: str, seconds: float, every: float
) -> list[dict[str, Any]]:
    replies = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        replies.append(cut.ptt(channel, "on", duration_s=30, transaction="renewer"))
        time.sleep(every)
    return replies


def faults(cut: ConsoleUnderTest, kind: str, code: str) -> list[dict[str, Any]]:
    return [e for e in cut.sub.events(kind) if e["data"]["fault"] == code]


@pytest.mark.slow
def test_a_renewing_client_cannot_beat_the_time_out_timer(
    console_factory: Callable[..., ConsoleUnderTest],
) -> None:
    cut = console_factory(fire="tx_timeout_s = 3\nmax_lease_s = 2")
    started = time.monotonic()
    # 20 s of renewals a second: past the time-out (3 s) and four times its reset wait (5 s).
    replies = renew(cut, "fire", 20, every=1.0)
    ended = time.monotonic()
    assert replies[0]["status"] == "ok" and replies[0]["data"]["ptt"] is True
    refused = [r for r in replies if r["status"] == "error"]
    assert len(refused) >= 16 and all("time-out" in r["error"] for r in refused)
    assert all(r["code"] == "refused" for r in refused)
    assert len(cut.sub.events("ptt.on")) == 1
    keyed = keyed_seconds(cut, "fire", started, ended)
    assert 2.9 <= keyed <= 3.0 + 0.25, keyed  # one poll interval and a command of slack
    assert len(faults(cut, "fault.raised", "stuck_ptt")) == 1
    assert faults(cut, "fault.cleared", "stuck_ptt") == []
    assert "stuck_ptt" in cut.channel_state("fire")["faults"]
    # Only the release ends it; then the channel keys again.
    assert cut.ptt("fire", "off")["status"] == "ok"
    cut.sub.wait_event("fault.cleared", fault="stuck_ptt", source_id="fire")
    assert cut.ptt("fire", "on")["data"]["ptt"] is True
    assert cut.ptt("fire", "off")["data"]["ptt"] is False


def test_lease_equal_to_time_out_holds_the_fault_until_the_requester_goes_quiet(
    console_factory: Callable[..., ConsoleUnderTest],
) -> None:
    cut = console_factory(ems="tx_timeout_s = 1.5\nmax_lease_s = 1.5\ntx_timeout_reset_s = 2")
    started = time.monotonic()
    replies = renew(cut, "ems", 6, every=0.4)
    ended = time.monotonic()
    assert [r["status"] for r in replies[:3]] == ["ok", "ok", "ok"]
    assert all(r["status"] == "error" for r in replies[5:])
    assert keyed_seconds(cut, "ems", started, ended) <= 1.5 + 0.25
    assert faults(cut, "fault.cleared", "stuck_ptt") == []
    assert len(cut.sub.events("ptt.on")) == 1
    # A requester that stops asking: after tx_timeout_reset_s quiet, the fault clears.
    cleared = cut.sub.wait_event("fault.cleared", fault="stuck_ptt", timeout=5)
    assert "no PTT request for 2 s" in cleared["data"]["message"]
    assert cut.ptt("ems", "on")["data"]["ptt"] is True
    assert cut.ptt("ems", "off")["data"]["ptt"] is False


# -- property: random messages under the prefix ----------------------------------------

_LEVELS = st.one_of(
    st.sampled_from(
        [
            *("request", "channels", "alarms", "modules", "fire", "ems", "police", "nope"),
            *("status", "ptt", "rebirth", "recall", "tty", "ack", "response", "state", ""),
        ]
    ),
    # MQTT forbids control characters in topics; brokers drop a client that sends them.
    st.text(
        st.characters(
            min_codepoint=0x20,
            max_codepoint=0x2FF,
            exclude_categories=["Cc"],
            exclude_characters="/+#",
        ),
        max_size=12,
    ),
)
_TOPICS = st.one_of(
    st.tuples(st.just("request"), _LEVELS).map("/".join),
    st.tuples(
        st.sampled_from(["channels", "alarms", "modules"]), _LEVELS, st.just("request"), _LEVELS
    ).map("/".join),
    st.lists(_LEVELS, min_size=1, max_size=5).map("/".join),
)
_FIELDS = st.sampled_from(["transaction", "state", "duration_s", "seconds", "text", "x", ""])
_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**80), max_value=2**80),
        st.floats(),
        st.text(max_size=20),
        st.sampled_from(["off", "maybe", "ON", "\ud800", "on "]),
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_FIELDS, inner)),
    max_leaves=8,
)
# `state: "on"` only with something invalid beside it: a valid PTT must not come from here.
_INVALID_ON = st.one_of(
    st.fixed_dictionaries({"state": st.just("on"), "duration_s": st.sampled_from([True, "5", -1])}),
    st.fixed_dictionaries({"state": st.just("on"), "force": _VALUES}),
    st.fixed_dictionaries({"state": st.just("on"), "transaction": st.just([1])}),
)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")


_PAYLOADS = st.one_of(
    st.dictionaries(_FIELDS, _VALUES, max_size=4).map(_dumps),
    _INVALID_ON.map(_dumps),
    st.binary(max_size=200),
    st.integers(min_value=30, max_value=3000).map(nested),
    st.sampled_from([b"", b"null", b"[]", SURROGATE_STATUS, b"7" * 5000, b"{" * 10_000]),
    st.just(b"[" * (1 << 20)),
)


def is_request_topic(levels: list[str]) -> bool:
    return (len(levels) == 2 and levels[0] == "request") or (
        len(levels) == 4
        and levels[0] in ("channels", "alarms", "modules")
        and levels[2] == "request"
    )


@pytest.mark.slow
def test_random_messages_get_one_answer_each_and_key_nothing(
    console_factory: Callable[..., ConsoleUnderTest], broker: Broker
) -> None:
    cut = console_factory()
    sent: list[tuple[str, bytes, bool]] = []  # (reply topic, correlation, retained)
    ours: set[tuple[str, bytes]] = set()  # what the test published off the request topics

    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(_TOPICS, _PAYLOADS, st.sampled_from([0, 1, 2]), st.integers(0, 19))
    def send(suffix: str, payload: bytes, qos: int, dice: int) -> None:
        retain = dice == 0  # about one in twenty retained
        topic = f"{cut.prefix}/{suffix}"
        levels = suffix.split("/")
        correlation = uuid.uuid4().bytes
        publish(cut, topic, payload, qos=qos, retain=retain, correlation=correlation)
        if not is_request_topic(levels):
            ours.add((topic, payload))
            return
        reply = topic.replace("/request/", "/response/", 1)
        if levels[0] != "request":
            reply = "/".join([cut.prefix, levels[0], levels[1], "response", levels[3]])
        if retain and not payload:
            return  # an empty retained message is a deletion: nothing to answer
        sent.append((reply, correlation, retain))
        found = wait_for(lambda: answers(cut, reply, correlation), 10, f"response on {reply}")
        body = found[0].json()
        assert body["status"] in ("ok", "error")
        if retain:
            assert body["status"] == "error"
        no_radio_keyed(cut)

    send()
    time.sleep(1.0)  # time for any second answer to show
    # What the test itself sent elsewhere under the prefix is no message of the gateway's:
    # keep it out of the checks below and the contract check on all the subscriber saw.
    with cut.sub._lock:
        cut.sub.messages = [m for m in cut.sub.messages if (m.topic, m.payload) not in ours]
    counts = [len(answers(cut, reply, corr)) for reply, corr, _ in sent]
    assert len(sent) >= 50
    assert counts == [1] * len(sent)
    alive(cut)
    no_radio_keyed(cut)
    assert not cut.sub.events("ptt.on")
    assert "Traceback" not in cut.daemon.log()
    # Every retained request was cleared from the broker.
    probe = Subscriber(broker.host, broker.port, [f"{cut.prefix}/#"])
    time.sleep(0.5)
    try:
        kept = [m.topic for m in probe.snapshot() if m.retain and m.payload]
    finally:
        probe.close()
    prefix = len(cut.prefix) + 1
    assert not [t for t in kept if is_request_topic(t[prefix:].split("/"))]
