"""Every field of every payload in docs/asyncapi.yaml says what it means."""

from __future__ import annotations

from gateway.asyncapi import build_document


def test_every_field_has_a_description() -> None:
    schemas = build_document()["components"]["schemas"]
    missing = [
        f"{name}.{field}"
        for name, schema in schemas.items()
        for field, prop in (schema.get("properties") or {}).items()
        if "description" not in prop
    ]
    assert not missing, f"fields without a description: {', '.join(missing)}"


def test_every_command_has_a_documented_response() -> None:
    doc = build_document()
    requests = [k.split("Request_", 1) for k in doc["channels"] if "Request_" in k]
    for noun, name in requests:
        assert f"{noun}Response_{name}" in doc["channels"], f"{noun} {name}: no response model"
