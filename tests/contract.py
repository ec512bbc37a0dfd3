"""Checks published messages against docs/asyncapi.yaml, the document CAD codes against."""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.mqtt_tools import ROOT, Received

_URI = "urn:consolegw:asyncapi"


@cache
def _document() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docs" / "asyncapi.yaml").read_text())
    return loaded


@cache
def _routes() -> list[tuple[re.Pattern[str], Draft202012Validator, str]]:
    doc = _document()
    registry: Registry = Registry().with_resource(
        _URI, Resource.from_contents(doc, default_specification=DRAFT202012)
    )
    routes = []
    for name, channel in doc["channels"].items():
        pattern = re.escape(channel["address"])
        # `*`: a request on an empty id or command level is answered on its mirror too.
        pattern = re.sub(r"\\\{[a-z_]+\\\}", "[^/]*", pattern)
        (message_ref,) = channel["messages"].values()
        message = doc["components"]["messages"][message_ref["$ref"].rsplit("/", 1)[1]]
        schema = {"$ref": _URI + message["payload"]["$ref"]}
        routes.append(
            (re.compile(pattern + "$"), Draft202012Validator(schema, registry=registry), name)
        )
    return routes


def check_messages(messages: list[Received]) -> int:
    """Validate every message the gateway published; requests made by tests are skipped.

    Returns how many were checked; raises AssertionError naming the first bad one.
    """
    checked = 0
    for message in messages:
        if "/request/" in message.topic or not message.payload:
            continue
        if not message.topic.startswith("consolegw/"):
            continue  # a v5 response topic of the requester's choosing: see validate_as
        routes = [r for r in _routes() if r[0].match(message.topic)]
        assert routes, f"topic {message.topic} is not in docs/asyncapi.yaml"
        _, validator, name = routes[0]
        body = json.loads(message.payload)
        errors = sorted(validator.iter_errors(body), key=lambda e: list(e.path))
        assert not errors, (
            f"{message.topic} does not match {name} in docs/asyncapi.yaml: "
            f"{errors[0].message} at {list(errors[0].path)}\n{body}"
        )
        checked += 1
    return checked


def validate_as(channel_name: str, body: Any) -> None:
    """Validate a payload against the message of one AsyncAPI channel, by channel name."""
    for _, validator, name in _routes():
        if name == channel_name:
            errors = list(validator.iter_errors(body))
            assert not errors, f"{channel_name}: {errors[0].message}"
            return
    raise AssertionError(f"no channel {channel_name} in docs/asyncapi.yaml")
