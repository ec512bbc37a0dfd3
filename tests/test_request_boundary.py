"""The request boundary in process: any payload ends in exactly one well-formed response.

The router is the real one with real handlers' shapes; the daemon-level properties (real
mosquitto, real daemon) are in test_mqtt_boundary.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import Field

from gateway.commands import CommandRouter, Request, RequestContext
from gateway.errors import BadRequest
from gateway.request_boundary import RefusalLog, RequestLimits, decode_request

PREFIX = "consolegw/gw"
LIMITS = RequestLimits(max_bytes=4096, max_depth=8)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def deep(levels: int, opener: str = "[") -> bytes:
    closer = "]" if opener == "[" else "}"
    inner = '{"a":' if opener == "{" else "["
    if opener == "{":
        return ('{"transaction":' + inner * levels + "1" + closer * (levels + 1)).encode()
    return ('{"transaction":' + opener * levels + "1" + closer * levels + "}").encode()


hostile_payloads = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v, allow_nan=True).encode()),
    st.dictionaries(st.text(max_size=8), json_values, max_size=5).map(
        lambda v: json.dumps(v, allow_nan=True).encode()
    ),
    st.integers(min_value=1, max_value=3000).map(deep),
    st.integers(min_value=1, max_value=3000).map(lambda n: deep(n, "{")),
    st.integers(min_value=1, max_value=6000).map(lambda n: b'{"transaction": ' + b"9" * n + b"}"),
    st.sampled_from(
        [
            b'{"transaction": "\\ud800"}',
            b'{"\\udfff": 1}',
            b'{"transaction": "a\\udc00b"}',
            b'{"transaction": NaN}',
            b'{"transaction": -Infinity}',
            b'{"transaction": 1e999}',
            b'{"state": "off", "state": "on"}',
            b'{"transaction": "\xed\xa0\x80"}',  # a surrogate encoded as UTF-8: invalid
            b"\xff\xfe{}",
            b"null",
            b"[]",
            b'"text"',
            b"   ",
            b"",
        ]
    ),
)


@settings(max_examples=400, deadline=None)
@given(hostile_payloads)
def test_decode_request_accepts_or_refuses_with_bad_request(payload: bytes) -> None:
    try:
        body = decode_request(payload, LIMITS)
    except BadRequest as exc:
        assert str(exc)
        return
    assert isinstance(body, dict)
    json.dumps(body).encode("utf-8")  # what passes serialises, strictly


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=10), json_values, max_size=6))
def test_a_plain_object_decodes_as_json_does(body: dict[str, Any]) -> None:
    payload = json.dumps(body, allow_nan=True).encode()
    try:
        decoded = decode_request(payload, RequestLimits(max_bytes=1 << 20, max_depth=32))
    except BadRequest:
        return  # NaN, infinities, big numbers, surrogates, duplicates: refused by design
    assert decoded == json.loads(payload)


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (b"x" * 5000, "limit is 4096"),
        (deep(9), "more than 8 levels"),
        (b'{"transaction": "\\ud800"}', "lone surrogate"),
        (b'{"transaction": ' + b"1" * 4000 + b"}", "out of range"),
        (b'{"transaction": 1e400}', "out of range"),
        (b'{"transaction": NaN}', "not a JSON number"),
        (b'{"state": "off", "state": "on"}', "appears twice"),
        (b"\xed\xa0\x80", "not valid UTF-8"),
        (b"[1]", "JSON object"),
        (b"{", "not valid JSON"),
    ],
)
def test_named_refusals(payload: bytes, says: str) -> None:
    with pytest.raises(BadRequest, match=says):
        decode_request(payload, LIMITS)


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    body = decode_request(b'{"transaction": "[[[[[[[[[[[[{{{{{{{{\\"]"}', LIMITS)
    assert body["transaction"].startswith("[[[[")


class _Ptt(Request):
    state: Literal["on", "off"]
    duration_s: float | None = Field(default=None, gt=0, le=3600)


def _router() -> tuple[CommandRouter, list[_Ptt]]:
    router = CommandRouter(prefix=PREFIX, gateway_id="gw", limits=LIMITS)
    acted: list[_Ptt] = []

    async def ptt(params: _Ptt, ctx: RequestContext) -> dict[str, Any]:
        acted.append(params)
        return {"keyed": params.state == "on", "by": ctx.client}

    async def broken(params: Request, ctx: RequestContext) -> dict[str, Any]:
        raise RuntimeError("a bug")

    async def unserialisable(params: Request, ctx: RequestContext) -> dict[str, Any]:
        return {"value": object()}

    router.set_targets("channels", lambda: ("fire",))
    router.register("channels", "ptt", _Ptt, ptt)
    router.register("gateway", "broken", Request, broken)
    router.register("gateway", "unserialisable", Request, unserialisable)
    return router, acted


def _answer(router: CommandRouter, topic: str, payload: bytes, **kw: Any) -> dict[str, Any]:
    replies = asyncio.run(router.handle(topic, payload, retained=kw.pop("retained", False), **kw))
    assert len(replies) == 1
    body: dict[str, Any] = json.loads(replies[0].payload)
    assert body["status"] in ("ok", "error")
    assert (body["status"] == "error") == (body["code"] is not None)
    return body


@pytest.mark.parametrize(
    "body",
    [
        {"state": "on", "duration_s": True},
        {"state": "on", "duration_s": "5"},
        {"state": "on", "duration_s": 1e308 * 10},
        {"state": "on", "duration_s": 5000},
        {"state": "ON"},
        {"state": "on", "transaction": ["x"]},
        {"state": "on", "transaction": 1.5},
        {"state": "on", "transaction": True},
        {"state": "on", "transaction": "x" * 129},
        {"state": "on", "force": True},
    ],
)
def test_a_malformed_safety_command_never_acts(body: dict[str, Any]) -> None:
    router, acted = _router()
    answer = _answer(router, f"{PREFIX}/channels/fire/request/ptt", json.dumps(body).encode())
    assert answer["code"] == "bad_request" and answer["error"].startswith("bad_request: ")
    assert acted == []


def test_integer_durations_and_transactions_are_numbers() -> None:
    router, acted = _router()
    answer = _answer(
        router,
        f"{PREFIX}/channels/fire/request/ptt",
        b'{"state": "on", "duration_s": 5, "transaction": 42}',
    )
    assert answer["status"] == "ok" and answer["transaction"] == 42
    assert acted[0].duration_s == 5.0 and answer["data"]["by"] == "42"


def test_a_handler_bug_is_still_answered_once(caplog: pytest.LogCaptureFixture) -> None:
    router, _ = _router()
    caplog.set_level(logging.WARNING)
    broken = _answer(router, f"{PREFIX}/request/broken", b'{"transaction": "t"}')
    assert broken["code"] == "internal_error" and broken["transaction"] == "t"
    assert "Traceback" in caplog.text  # a genuine bug: the traceback is logged
    odd = _answer(router, f"{PREFIX}/request/unserialisable", b"{}")
    assert odd["code"] == "internal_error"


def test_retained_request_is_refused_before_anything_acts() -> None:
    router, acted = _router()
    answer = _answer(
        router, f"{PREFIX}/channels/fire/request/ptt", b'{"state": "on"}', retained=True
    )
    assert answer["code"] == "bad_request" and "retained" in answer["error"]
    assert acted == []


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    st.sampled_from(
        [
            f"{PREFIX}/channels/fire/request/ptt",
            f"{PREFIX}/channels/nope/request/ptt",
            f"{PREFIX}/request/broken",
            f"{PREFIX}/request/x",
            f"{PREFIX}/alarms/fire/request/ptt",
        ]
    ),
    hostile_payloads,
    st.booleans(),
)
def test_every_request_gets_exactly_one_answer(topic: str, payload: bytes, retained: bool) -> None:
    router, acted = _router()
    logging.getLogger("gateway.commands").disabled = True  # thousands of refusals
    try:
        answer = _answer(router, topic, payload, retained=retained)
    finally:
        logging.getLogger("gateway.commands").disabled = False
    assert answer["status"] == "error" or (acted and not retained)
    assert all(p.state != "on" or p.duration_s is None or p.duration_s > 0 for p in acted)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_refusals_log_a_burst_then_a_summary(caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    refusals = RefusalLog(burst=5, window_s=60, clock=clock)
    caplog.set_level(logging.INFO, logger="gateway.commands")
    for n in range(1000):
        clock.now = n * 0.05  # 1,000 bad requests in 50 s
        refusals.refused("consolegw/gw/request/x", f"bad_request: nope {n}")
    assert len(caplog.records) == 5
    assert all("Traceback" not in r.getMessage() for r in caplog.records)
    clock.now = 61.0
    refusals.refused("consolegw/gw/request/x", "bad_request: nope")
    summary = caplog.records[5].getMessage()
    assert "refused 995 more requests in the last 61 s" in summary
    assert len(caplog.records) == 7  # the summary, then the next window's first line


def test_a_refusal_repeated_is_logged_once_a_window(caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    refusals = RefusalLog(burst=5, window_s=60, clock=clock)
    caplog.set_level(logging.INFO, logger="gateway.commands")
    offline = "refused: channel fire: radio interface offline"
    for n in range(10):  # a dispatcher pressing PTT again and again during an outage
        clock.now = n * 2.0
        refusals.refused("consolegw/gw/channels/fire/request/ptt", offline)
    refusals.refused("consolegw/gw/channels/ems/request/ptt", offline)
    assert [r.getMessage() for r in caplog.records] == [
        f"request consolegw/gw/channels/fire/request/ptt refused: {offline}",
        f"request consolegw/gw/channels/ems/request/ptt refused: {offline}",
    ]
    clock.now = 60.0
    refusals.refused("consolegw/gw/channels/fire/request/ptt", offline)  # a new window
    assert "refused 9 more requests in the last 60 s" in caplog.records[2].getMessage()
    assert caplog.records[3].getMessage() == caplog.records[0].getMessage()


def test_the_summary_comes_even_when_the_flood_stops(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.commands")

    async def flood() -> None:
        refusals = RefusalLog(burst=2, window_s=0.2)
        for n in range(50):
            refusals.refused("consolegw/gw/request/x", f"bad_request: nope {n}")
        await asyncio.sleep(0.4)

    asyncio.run(flood())
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3 and "refused 48 more requests" in messages[-1]


def test_a_refusal_the_fault_has_told_is_debug_only(caplog: pytest.LogCaptureFixture) -> None:
    refusals = RefusalLog(burst=5, window_s=60, clock=_Clock())
    caplog.set_level(logging.DEBUG, logger="gateway.commands")
    offline = "refused: channel fire: radio interface offline"
    for _ in range(10):
        refusals.refused("consolegw/gw/channels/fire/request/ptt", offline, told=True)
    assert {r.levelno for r in caplog.records} == {logging.DEBUG}
    refusals.flush()  # and no summary: the device's recovery line counts them
    assert {r.levelno for r in caplog.records} == {logging.DEBUG}
    refusals.refused("consolegw/gw/request/x", "bad_request: nope")  # others still warn
    assert caplog.records[-1].levelno == logging.WARNING
