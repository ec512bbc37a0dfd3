"""Generates docs/asyncapi.yaml (AsyncAPI 3) from the models and commands the daemon uses."""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel

from gateway.alarms import AlarmState, ModuleState
from gateway.audio import AudioLevels
from gateway.commands import GATEWAY, Scope
from gateway.config import Config
from gateway.events import (
    EVENT_TYPES,
    ChannelState,
    Event,
    GatewayState,
    ResponsePayload,
    StatusPayload,
)
from gateway.tty import TtyState

_REF = "#/components/schemas/{model}"
_BASE = "consolegw/{gateway_id}"


def _noun(scope: Scope) -> str:
    """`channels` -> `channel`: what one target of the scope is called."""
    return scope if scope == GATEWAY else scope.removesuffix("s")


def _scope_path(scope: Scope) -> str:
    return _BASE if scope == GATEWAY else f"{_BASE}/{scope}/{{{_noun(scope)}_id}}"


def _response_schema(
    key: str, data: type[BaseModel], envelope: dict[str, str], schemas: dict[str, Any]
) -> dict[str, str]:
    """The response envelope with `data` as the command's own response model when ok."""
    schemas[key] = {
        "title": key,
        "description": f"The response envelope; with status ok, `data` is a {data.__name__}.",
        "allOf": [
            envelope,
            {
                "if": {"properties": {"status": {"const": "ok"}}},
                "then": {"properties": {"data": _schema(data, schemas)}},
            },
        ],
    }
    return {"$ref": _REF.format(model=key)}


def _schema(model: type[BaseModel], schemas: dict[str, Any]) -> dict[str, str]:
    full = model.model_json_schema(ref_template=_REF)
    for name, sub in full.pop("$defs", {}).items():
        schemas[name] = sub
    schemas[model.__name__] = full
    return {"$ref": _REF.format(model=model.__name__)}


def _event_schema(schemas: dict[str, Any]) -> dict[str, str]:
    envelope = Event.model_json_schema(ref_template=_REF)
    envelope["properties"]["type"]["enum"] = sorted(EVENT_TYPES)
    # Each event type's data has its own schema, tied to `type` so validation is exact.
    envelope["allOf"] = [
        {
            "if": {"properties": {"type": {"const": name}}},
            "then": {"properties": {"data": _schema(model, schemas)}},
        }
        for name, model in sorted(EVENT_TYPES.items())
    ]
    schemas["Event"] = envelope
    return {"$ref": _REF.format(model="Event")}


def _params(address: str) -> dict[str, Any]:
    names = [part[1:-1] for part in address.split("/") if part.startswith("{")]
    return {name: {"description": f"The {name.replace('_', ' ')}"} for name in names}


def build_document() -> dict[str, Any]:
    from gateway.app import Gateway

    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}

    def add(
        key: str,
        address: str,
        payload: dict[str, str],
        *,
        action: str,
        summary: str,
        retain: bool = False,
    ) -> None:
        messages[key] = {
            "name": key,
            "title": summary,
            "contentType": "application/json",
            "payload": payload,
            "bindings": {"mqtt": {"qos": 1, "retain": retain}},
        }
        channels[key] = {
            "address": address,
            "parameters": _params(address),
            "messages": {key: {"$ref": f"#/components/messages/{key}"}},
        }
        operations[f"{action}_{key}"] = {
            "action": action,
            "summary": summary,
            "channel": {"$ref": f"#/channels/{key}"},
            "messages": [{"$ref": f"#/channels/{key}/messages/{key}"}],
        }

    add(
        "status",
        f"{_BASE}/status",
        _schema(StatusPayload, schemas),
        action="send",
        retain=True,
        summary="Birth (online) and Last Will or clean stop (offline), with a session number",
    )
    add(
        "gatewayState",
        f"{_BASE}/state",
        _schema(GatewayState, schemas),
        action="send",
        retain=True,
        summary="The gateway's own health, retained",
    )
    event = _event_schema(schemas)
    add("gatewayEvent", f"{_BASE}/event", event, action="send", summary="Gateway events")
    add(
        "channelState",
        f"{_BASE}/channels/{{channel_id}}/state",
        _schema(ChannelState, schemas),
        action="send",
        retain=True,
        summary="Full channel snapshot, retained",
    )
    add(
        "channelEvent",
        f"{_BASE}/channels/{{channel_id}}/event",
        event,
        action="send",
        summary="Channel events: PTT, COS, faults",
    )
    add(
        "channelAudio",
        f"{_BASE}/channels/{{channel_id}}/audio",
        _schema(AudioLevels, schemas),
        action="send",
        retain=True,
        summary="Channel audio levels and activity, retained, about once a second",
    )
    add(
        "channelTty",
        f"{_BASE}/channels/{{channel_id}}/tty",
        _schema(TtyState, schemas),
        action="send",
        retain=True,
        summary="TTY/TDD on the channel: active, rate, last line; retained",
    )
    add(
        "alarmState",
        f"{_BASE}/alarms/{{alarm_id}}/state",
        _schema(AlarmState, schemas),
        action="send",
        retain=True,
        summary="Full alarm input snapshot, retained",
    )
    add(
        "alarmEvent",
        f"{_BASE}/alarms/{{alarm_id}}/event",
        event,
        action="send",
        summary="Alarm events: raised, restored, acknowledged, cleared, trouble",
    )
    add(
        "moduleState",
        f"{_BASE}/modules/{{module_id}}/state",
        _schema(ModuleState, schemas),
        action="send",
        retain=True,
        summary="IO module snapshot (online, offline), retained",
    )
    add(
        "moduleEvent",
        f"{_BASE}/modules/{{module_id}}/event",
        event,
        action="send",
        summary="IO module events: module.offline, module.online",
    )
    response = _schema(ResponsePayload, schemas)
    gateway = Gateway(Config())
    for scope, commands in gateway.router.command_docs().items():
        base = _scope_path(scope)
        noun = _noun(scope)
        for name, doc in sorted(commands.items()):
            add(
                f"{noun}Request_{name}",
                f"{base}/request/{name}",
                _schema(doc.params, schemas),
                action="receive",
                summary=doc.description or f"{name} request",
            )
        for name, doc in sorted(commands.items()):
            if doc.response is None:
                continue
            key = f"{noun}Response_{name}"
            add(
                key,
                f"{base}/response/{name}",
                _response_schema(
                    f"{noun[0].upper()}{noun[1:]}Response_{name}", doc.response, response, schemas
                ),
                action="send",
                summary=f"The answer to {noun} {name}: {doc.response.__name__} when ok",
            )
        # Last, so a command's own response channel above matches first.
        add(
            f"{noun}Response",
            f"{base}/response/{{command}}",
            response,
            action="send",
            summary=f"The answer to any {noun} request, including refused and unknown ones",
        )
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "consolegw MQTT API",
            "version": gateway.version.split("+")[0],
            "description": (
                "Generated by `consolegw asyncapi` from the daemon's own models: do not edit.\n"
                "The prefix `consolegw/{gateway_id}` is the default and can be changed in the "
                "config (mqtt.prefix).\n"
                "Events are QoS 1 and never retained; a subscriber can see one twice (at least "
                "once delivery) and drops duplicates by `event_id`. `seq` increases by one per "
                "event and continues across restarts. A gap in `seq` has one cause: the outbox "
                "was full (outbox.max_events) and dropped its oldest undelivered droppable "
                "events (cos.*, recall.saved, gateway.started; alarm, module, fault, PTT, "
                "TTY, outbox and unclean-stop events are never dropped). The outbox.full event "
                "and the retained gateway state (`outbox_full`) report it while it lasts, "
                "outbox.ok when it ends, and `outbox_dropped` counts the events dropped.\n"
                "Requests must not be retained (a retained request is refused). Each gets one "
                "response on the matching response topic; MQTT v5 response topic and "
                "correlation data are honoured."
            ),
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": dict(sorted(schemas.items()))},
    }


def render_asyncapi() -> str:
    return yaml.safe_dump(build_document(), sort_keys=False, width=100, allow_unicode=True)
