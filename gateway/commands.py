"""Request/response routing for MQTT commands.

Topics: `<prefix>/request/<cmd>` for the gateway, `<prefix>/<scope>/<id>/request/<cmd>` for a
channel or alarm. Every request gets exactly one response, on the matching `.../response/<cmd>`
topic (and on the MQTT v5 response topic, with its correlation data, when the request has
one). Nothing a requester sends can crash the daemon: bad input becomes an error response.

The boundary is total: the payload is checked (gateway.request_boundary) and validated
strictly before a handler runs, and whatever fails after that, in the handler or while
building the response, still ends in exactly one response.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.errors import (
    BadRequest,
    CommandError,
    RefusedWhileLost,
    UnknownCommand,
    UnknownTarget,
)
from gateway.events import ResponsePayload
from gateway.request_boundary import (
    RefusalLog,
    RequestLimits,
    check_transaction,
    decode_request,
)

log = logging.getLogger(__name__)

Scope = str
"""`gateway`, or the first topic level of a kind of target (`channels`, `alarms`, ...): the
scopes are whatever the subsystems register, nothing is listed here."""

GATEWAY: Scope = "gateway"


class Request(BaseModel):
    """Base of every command's parameters. Unknown fields are refused, not ignored, and
    types are strict: `true` or `"5"` is no number, on a command that keys a transmitter."""

    model_config = ConfigDict(extra="forbid", strict=True)
    transaction: str | int | None = Field(
        default=None,
        description="Any string of at most 128 characters or an integer; echoed in the "
        "response, and named in the events the command causes (requested_by, acknowledged_by)",
    )
    """Echoed in the response; checked by the boundary before the model sees it."""


class StatusRequest(Request):  # `status`, which every scope answers: no parameters
    pass


@dataclass(frozen=True, slots=True)
class RequestContext:
    target: str
    """Channel or alarm id; the gateway id for gateway commands."""
    command: str
    client: str | None
    """Who asked: the transaction, for logs and events."""


P = TypeVar("P", bound=Request)

Handler = Callable[[P, RequestContext], Awaitable[BaseModel | dict[str, Any]]]
"""A command's handler: its own parameters model in, its response model out (the `data` of
the response). A plain dict is accepted for tests and ad hoc commands, undocumented."""


@dataclass(frozen=True, slots=True)
class _Command:
    params: type[Request]
    handler: Handler[Any]
    description: str
    response: type[BaseModel] | None


@dataclass(frozen=True, slots=True)
class CommandDoc:
    """What is registered for one command, for documentation."""

    params: type[Request]
    response: type[BaseModel] | None
    description: str


@dataclass(frozen=True, slots=True)
class Reply:
    topic: str
    payload: bytes
    correlation_data: bytes | None = None


class CommandRouter:
    """Routes request topics to registered handlers and builds their responses."""

    def __init__(
        self, *, prefix: str, gateway_id: str, limits: RequestLimits | None = None
    ) -> None:
        self._prefix = prefix
        self._limits = limits or RequestLimits()
        self.refusals = RefusalLog()
        self._gateway_id = gateway_id
        # Scopes appear as they are registered, in that order; the gateway's is always there.
        self._commands: dict[Scope, dict[str, _Command]] = {GATEWAY: {}}
        self._targets: dict[Scope, Callable[[], Collection[str]]] = {GATEWAY: lambda: (gateway_id,)}
        # One lock per target keeps commands for one channel in arrival order.
        self._locks: dict[tuple[Scope, str], asyncio.Lock] = {}

    @property
    def scopes(self) -> list[Scope]:
        """Every registered scope, the gateway's first."""
        return list(self._commands)

    @property
    def subscriptions(self) -> list[str]:
        return [
            f"{self._prefix}/request/+"
            if scope == GATEWAY
            else f"{self._prefix}/{scope}/+/request/+"
            for scope in self._commands
        ]

    def _scope(self, scope: Scope) -> dict[str, _Command]:
        if scope not in self._commands:
            if not _SCOPE_NAME.fullmatch(scope):
                raise ValueError(f"bad command scope {scope!r}: lowercase letters and _ only")
            self._commands[scope] = {}
            self._targets.setdefault(scope, _no_targets)
        return self._commands[scope]

    def set_targets(self, scope: Scope, targets: Callable[[], Collection[str]]) -> None:
        """The ids a scope answers for (`<prefix>/<scope>/<id>/request/<cmd>`)."""
        if scope == GATEWAY:
            raise ValueError("the gateway scope has one target, the gateway itself")
        self._scope(scope)
        self._targets[scope] = targets

    def register(
        self,
        scope: Scope,
        name: str,
        params: type[P],
        handler: Handler[P],
        *,
        response: type[BaseModel] | None = None,
        description: str = "",
    ) -> None:
        """Add a command; `response` is the model of its answer's `data` (documented)."""
        commands = self._scope(scope)
        if name in commands:
            raise ValueError(f"command {scope}/{name} registered twice")
        commands[name] = _Command(params, handler, description, response)

    def commands(self) -> dict[Scope, dict[str, tuple[type[Request], str]]]:
        """What is registered: parameters and description per command, by scope."""
        return {
            scope: {name: (c.params, c.description) for name, c in cmds.items()}
            for scope, cmds in self._commands.items()
        }

    def command_docs(self) -> dict[Scope, dict[str, CommandDoc]]:
        """What is registered, with response models, for the AsyncAPI document."""
        return {
            scope: {
                name: CommandDoc(c.params, c.response, c.description) for name, c in cmds.items()
            }
            for scope, cmds in self._commands.items()
        }

    async def handle(
        self,
        topic: str,
        payload: bytes,
        *,
        retained: bool,
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
    ) -> list[Reply]:
        """Handle one request message; returns the replies to publish (never raises)."""
        parsed = self._parse_topic(topic)
        if parsed is None:
            return []  # not a request topic of ours; nothing sensible to answer on
        scope, target, name, reply_topic = parsed
        transaction: str | int | None = None
        try:
            body = decode_request(payload, self._limits)
            transaction = check_transaction(body.get("transaction"))
            if retained:
                raise BadRequest(
                    "retained requests are refused: a stale command must never act; "
                    "publish requests with retain=false"
                )
            response = await self._run(scope, target, name, body)
            response.transaction = transaction
        except CommandError as exc:
            told = isinstance(exc, RefusedWhileLost)
            self.refusals.refused(topic, f"{exc.code}: {exc}", told=told)
            response = ResponsePayload(
                status="error", transaction=transaction, code=exc.code, error=f"{exc.code}: {exc}"
            )
        except Exception:
            self.refusals.failed(topic)
            response = ResponsePayload(
                status="error",
                transaction=transaction,
                code="internal_error",
                error="internal_error: the gateway failed on this request (see its log)",
            )
        data = self._serialise(topic, response)
        replies = [Reply(reply_topic, data, correlation_data)]
        if response_topic and response_topic != reply_topic and _valid_topic(response_topic):
            replies.append(Reply(response_topic, data, correlation_data))
        return replies

    def _serialise(self, topic: str, response: ResponsePayload) -> bytes:
        try:
            return response.model_dump_json(exclude_none=False).encode()
        except Exception:
            # A handler returned data that does not serialise: still one answer.
            self.refusals.failed(topic)
            return _MINIMAL_ERROR

    async def _run(
        self, scope: Scope, target: str, name: str, body: dict[str, Any]
    ) -> ResponsePayload:
        commands = self._commands.get(scope, {})
        command = commands.get(name)
        if command is None:
            known = ", ".join(sorted(commands)) or "none"
            raise UnknownCommand(f"unknown command {name[:64]!r} (known: {known})")
        if target not in self._targets.get(scope, _no_targets)():
            noun = scope if scope == "gateway" else scope[:-1]
            raise UnknownTarget(f"unknown {noun} {target[:64]!r}")
        try:
            params = command.params.model_validate(body)
        except ValidationError as exc:
            raise BadRequest(_describe_validation(exc)) from None
        context = RequestContext(
            target=target,
            command=name,
            client=None if params.transaction is None else str(params.transaction),
        )
        lock = self._locks.get((scope, target))
        if lock is None:
            lock = self._locks[(scope, target)] = asyncio.Lock()
        async with lock:
            result = await command.handler(params, context)
        data = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
        return ResponsePayload(status="ok", data=data)

    def _parse_topic(self, topic: str) -> tuple[Scope, str, str, str] | None:
        if not topic.startswith(self._prefix + "/"):
            return None
        parts = topic[len(self._prefix) + 1 :].split("/")
        if len(parts) == 2 and parts[0] == "request":
            reply = f"{self._prefix}/response/{parts[1]}"
            return "gateway", self._gateway_id, parts[1], reply
        if (
            len(parts) == 4
            and parts[0] != GATEWAY
            and _SCOPE_NAME.fullmatch(parts[0])
            and parts[2] == "request"
        ):
            scope = parts[0]
            reply = f"{self._prefix}/{parts[0]}/{parts[1]}/response/{parts[3]}"
            return scope, parts[1], parts[3], reply
        return None


_SCOPE_NAME = re.compile(r"[a-z_]+")


def _no_targets() -> Collection[str]:
    return ()


_MINIMAL_ERROR = (
    ResponsePayload(
        status="error",
        code="internal_error",
        error="internal_error: the response could not be built (see the gateway log)",
    )
    .model_dump_json(exclude_none=False)
    .encode()
)


def _describe_validation(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "payload"
        msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        problems.append(f"{field[:64]}: {msg}")
        if len(problems) == 5:
            break
    return "invalid parameters: " + "; ".join(problems)


def _valid_topic(topic: str) -> bool:
    return bool(topic) and "+" not in topic and "#" not in topic and len(topic) < 65536
