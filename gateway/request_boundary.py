"""What a request payload must be before anything reads it, and quiet logs for refusals.

Every check here runs before a handler sees the request, so nothing a requester sends can
reach a code path (the JSON parser's recursion, int() of 5,000 digits, a lone surrogate
in an event) that fails in a way the boundary does not expect.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.errors import BadRequest

log = logging.getLogger("gateway.commands")

MAX_TRANSACTION_CHARS = 128
_INT_LIMIT = 2**63  # beyond int64 no CAD system means a number
_MAX_INT_DIGITS = 20
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class RequestLimits:
    max_bytes: int = 65_536
    max_depth: int = 32


def decode_request(payload: bytes, limits: RequestLimits) -> dict[str, Any]:
    """The request body as a JSON object, or BadRequest saying what is wrong with it."""
    if len(payload) > limits.max_bytes:
        raise BadRequest(f"payload is {len(payload)} bytes; the limit is {limits.max_bytes}")
    try:
        text = payload.decode("utf-8")  # strict: encoded surrogates are invalid UTF-8 too
    except UnicodeDecodeError as exc:
        raise BadRequest(f"payload is not valid UTF-8 (byte {exc.start})") from None
    if not text.strip():
        return {}
    if _deeper_than(text, limits.max_depth):
        raise BadRequest(f"JSON nested more than {limits.max_depth} levels deep")
    try:
        body = json.loads(
            text,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_refuse_constant,
            object_pairs_hook=_unique_keys,
        )
    except json.JSONDecodeError as exc:
        raise BadRequest(f"payload is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("payload must be a JSON object")
    _refuse_surrogates(body)
    return body


def check_transaction(value: Any) -> str | int | None:
    """`transaction` is echoed and logged, so it is a short string or an integer."""
    if value is None:
        return None
    if isinstance(value, str) and len(value) <= MAX_TRANSACTION_CHARS:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value  # _parse_int bounds it already
    raise BadRequest(
        f"transaction must be a string of at most {MAX_TRANSACTION_CHARS} characters or an integer"
    )


def _deeper_than(text: str, limit: int) -> bool:
    """Whether [ and { nest more than `limit` deep outside strings, found without recursion."""
    if text.count("[") + text.count("{") <= limit:
        return False  # the common, flat request: no scan
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _parse_int(digits: str) -> int:
    if len(digits.lstrip("-")) > _MAX_INT_DIGITS:
        raise BadRequest(f"number with {len(digits)} digits is out of range")
    value = int(digits)
    if not -_INT_LIMIT <= value < _INT_LIMIT:
        raise BadRequest(f"number {digits} is out of range")
    return value


def _parse_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise BadRequest(f"number {literal[:32]} is out of range")
    return value


def _refuse_constant(name: str) -> Any:
    raise BadRequest(f"{name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A command such as {"state": "off", "state": "on"} must not act on a guess.
    body = dict(pairs)
    if len(body) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise BadRequest(f"key {_printable(key)!r} appears twice")
            seen.add(key)
    return body


def _refuse_surrogates(body: dict[str, Any]) -> None:
    # JSON's \ud800 escape decodes to a lone surrogate, which no UTF-8 encoder takes: it
    # would fail later, in an event or a log line, far from here.
    stack: list[Any] = [body]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            if isinstance(key, str) and _SURROGATE.search(key):
                raise BadRequest("a key is not valid Unicode (lone surrogate)")
            if isinstance(value, str):
                if _SURROGATE.search(value):
                    where = f" in {_printable(key)!r}" if isinstance(key, str) else ""
                    raise BadRequest(f"a string{where} is not valid Unicode (lone surrogate)")
            elif isinstance(value, dict | list):
                stack.append(value)


def _printable(text: str) -> str:
    return _SURROGATE.sub("\ufffd", text[:40])


class RefusalLog:
    """One WARNING per refused request, at most `burst` per window, then a summary line.

    Any client can send a thousand bad requests a second; the log must stay readable for
    the technician who needs it, so the rest are counted and summed up once per window. A
    refusal the window has logged already (the same topic and reason: a dispatcher pressing
    PTT again while the radio is offline) is counted too, not logged again.
    """

    def __init__(
        self,
        *,
        burst: int = 5,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._burst = burst
        self._window_s = window_s
        self._clock = clock
        self._window_start = clock()
        self._logged = 0
        self._suppressed = 0
        self._suppressed_bugs = 0
        self._last = ""
        self._seen: set[tuple[str, str]] = set()
        self._timer: asyncio.TimerHandle | None = None

    def refused(self, topic: str, reason: str, *, told: bool = False) -> None:
        """`told`: the cause is a fault the log has told, whose owner counts the refusals."""
        if told:
            log.debug("request %s refused: %s", _printable_topic(topic), reason[:300])
            return
        self._roll()
        seen = (topic, reason) in self._seen
        if self._logged < self._burst and not seen:
            self._logged += 1
            self._seen.add((topic, reason))
            log.warning("request %s refused: %s", _printable_topic(topic), reason[:300])
        else:
            self._suppressed += 1
            self._last = f"{_printable_topic(topic)}: {reason[:120]}"
            self._schedule_summary()

    def failed(self, topic: str) -> None:
        """A handler bug: the traceback once per window, the count in the summary."""
        self._roll()
        if self._logged < self._burst:
            self._logged += 1
            log.exception("request %s failed (answered with internal_error)", topic)
        else:
            self._suppressed_bugs += 1
            self._schedule_summary()

    def flush(self) -> None:
        """Write the summary of what was suppressed, if anything was (idempotent)."""
        if self._suppressed or self._suppressed_bugs:
            bugs = f" and {self._suppressed_bugs} failed" if self._suppressed_bugs else ""
            log.warning(
                "refused %s more requests%s in the last %.0f s (last: %s)",
                f"{self._suppressed:,}",
                bugs,
                self._clock() - self._window_start,
                self._last,
            )
        self._suppressed = self._suppressed_bugs = 0

    def _roll(self) -> None:
        now = self._clock()
        if now - self._window_start >= self._window_s:
            self.flush()
            self._window_start = now
            self._logged = 0
            self._seen.clear()

    def _schedule_summary(self) -> None:
        # The summary is due at the window's end even when the flood stops before it.
        if self._timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a direct call): the next refusal rolls the window
        delay = max(0.0, self._window_start + self._window_s - self._clock())
        self._timer = loop.call_later(delay, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        self.flush()
        self._window_start = self._clock()
        self._logged = 0


def _printable_topic(topic: str) -> str:
    return topic if len(topic) <= 200 else topic[:200] + "..."
