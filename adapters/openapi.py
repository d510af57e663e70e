"""The adapter's OpenAPI 3.1 document, generated from the contracts.

``POST /v1/messages`` takes one of the message contracts: for each ``(message type, contract
version)`` an object of the header fields a sender decides (``MessageDraft``), the type and
version, the recipients and the body (that contract's JSON Schema). The committed copy is
``adapters/openapi.json`` (served at ``GET /openapi.json``); ``schakel adapter openapi``
writes it again, and a test fails when it is stale.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from schakel.contracts.bodies import BODIES
from schakel.contracts.header import MessageDraft
from schakel.contracts.ids import MESSAGE_ID_PATTERN, ORG_ID_PATTERN
from schakel.contracts.notice import DeliveryState

__all__ = ["COMMITTED", "openapi_document", "rendered"]

COMMITTED: Final = Path(__file__).with_name("openapi.json")
_REF: Final = "#/components/schemas/{model}"


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": _REF.format(model="Problem")}}},
    }


def openapi_document() -> dict[str, Any]:
    """The document, from the contracts as they are now."""
    models: list[type[BaseModel]] = [MessageDraft, DeliveryState, *BODIES.values()]
    _, top = models_json_schema([(m, "validation") for m in models], ref_template=_REF)
    schemas: dict[str, Any] = dict(top["$defs"])
    draft = schemas["MessageDraft"]
    # What the adapter takes for a lifetime: an ISO 8601 duration, or seconds (both bounded
    # by the contract: more than nothing, at most 365 days).
    draft["properties"]["lifetime"] = {
        "anyOf": [
            {"type": "string", "format": "duration"},
            {"type": "number", "exclusiveMinimum": 0, "maximum": 365 * 86400},
        ],
        "default": "P7D",
        "title": "Lifetime",
    }
    variants = []
    for (message_type, version), model in sorted(BODIES.items()):
        name = f"Send{message_type.value}v{version}"
        schemas[name] = {
            "type": "object",
            "title": f"{message_type.value} {message_type.title} (contract v{version})",
            "additionalProperties": False,
            "required": ["message_type", "recipients", "body", *draft.get("required", [])],
            "properties": {
                "message_type": {"const": message_type.value},
                "contract_version": {"const": version, "default": 1},
                "recipients": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 64,
                    "items": {"type": "string", "pattern": ORG_ID_PATTERN},
                },
                **draft["properties"],
                "body": {"$ref": _REF.format(model=model.__name__)},
            },
        }
        variants.append({"$ref": _REF.format(model=name)})
    schemas["SendRequest"] = {"oneOf": variants}
    schemas["Sent"] = {
        "type": "object", "required": ["message_id"],
        "properties": {"message_id": {"type": "string", "pattern": MESSAGE_ID_PATTERN},
                       "case_id": {"type": ["string", "null"]}},
    }  # fmt: skip
    schemas["Problem"] = {
        "type": "object", "required": ["type", "title", "status"],
        "properties": {
            "type": {"type": "string"}, "title": {"type": "string"},
            "status": {"type": "integer"}, "detail": {"type": "string"},
            "errors": {"type": "array", "items": {
                "type": "object", "required": ["field", "rule"],
                "properties": {"field": {"type": "string"}, "rule": {"type": "string"}},
            }},
        },
    }  # fmt: skip
    schemas["Inbox"] = {
        "type": "object", "required": ["items"],
        "properties": {"items": {"type": "array", "items": {"type": "object", "required": [
            "id", "kind", "message_id"]}}},
    }  # fmt: skip
    bearer: list[dict[str, list[str]]] = [{"bearer": []}, {}]  # token, or loopback without
    unauthorized = {
        "401": _problem("no or a wrong bearer token"),
        "403": _problem("a request a web page made (Origin, Sec-Fetch-Site): not served"),
        "421": _problem("without a token: a Host that does not name loopback"),
        "500": _problem("the adapter failed; nothing was sent"),
    }
    item = {"name": "item_id", "in": "path", "required": True,
            "schema": {"type": "string", "maxLength": 200}}  # fmt: skip
    paths: dict[str, Any] = {
        "/v1/messages": {"post": {
            "summary": "Send a message (validated against its contract, sealed, published)",
            "security": bearer,
            "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                            "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"}}],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": _REF.format(model="SendRequest")}}}},
            "responses": {
                "202": {"description": "stored for the hub", "content": {"application/json": {
                    "schema": {"$ref": _REF.format(model="Sent")}}}},
                "400": _problem("a header of the request is malformed"),
                **unauthorized,
                "409": _problem("the Idempotency-Key was used for another request"),
                "413": _problem("the request is too large"),
                "415": _problem("the body is not application/json"),
                "422": _problem("the message breaks its contract: every field and rule"),
                "503": _problem("the hub cannot be reached, or has not caught up"),
            },
        }},
        "/v1/messages/{message_id}": {"get": {
            "summary": "What became of one of our messages",
            "security": bearer,
            "parameters": [{"name": "message_id", "in": "path", "required": True,
                            "schema": {"type": "string", "maxLength": 200}}],
            "responses": {
                "200": {"description": "its state", "content": {"application/json": {
                    "schema": {"type": "object"}}}},
                **unauthorized,
                "404": _problem("no such message of ours"),
                "503": _problem("the hub cannot be reached"),
            },
        }},
        "/v1/inbox": {"get": {
            "summary": "Deliveries and refusal notices not yet acknowledged (long poll)",
            "security": bearer,
            "parameters": [{"name": "wait", "in": "query", "required": False,
                            "schema": {"type": "number", "minimum": 0, "maximum": 30}}],
            "responses": {
                "200": {"description": "the items", "content": {"application/json": {
                    "schema": {"$ref": _REF.format(model="Inbox")}}}},
                "400": _problem("wait is not a number of seconds"),
                **unauthorized,
                "409": _problem("the adapter gives items to a webhook or a folder instead"),
                "429": _problem("too many long polls at once; poll again"),
                "503": _problem("the hub cannot be reached"),
            },
        }},
        "/v1/inbox/{item_id}/ack": {"post": {
            "summary": "The back office has the item: acknowledge it (and send the receipt)",
            "security": bearer, "parameters": [item],
            "responses": {"204": {"description": "acknowledged"}, **unauthorized,
                          "415": _problem("a body that is not application/json"),
                          "404": _problem("no such item waiting"),
                          "503": _problem("the hub cannot be reached")},
        }},
        "/v1/inbox/{item_id}/retry": {"post": {
            "summary": "Not now: hand the delivery out again later",
            "security": bearer, "parameters": [item],
            "responses": {"204": {"description": "it comes back later"}, **unauthorized,
                          "415": _problem("a body that is not application/json"),
                          "404": _problem("no such delivery waiting"),
                          "503": _problem("the hub cannot be reached")},
        }},
        "/healthz": {"get": {"summary": "The process is up", "responses": {
            "200": {"description": "up"}, **unauthorized}}},
        "/readyz": {"get": {"summary": "NATS connected, key directory fresh, own keys valid",
                            "security": bearer, "responses": {
            "200": {"description": "ready"}, **unauthorized,
            "503": _problem("not ready: which of the three")}}},
        "/metrics": {"get": {"summary": "Prometheus metrics (no case ids, no content)",
                             "security": bearer, "responses": {
            "200": {"description": "the metrics", "content": {"text/plain": {
                "schema": {"type": "string"}}}}, **unauthorized}}},
        "/openapi.json": {"get": {"summary": "This document", "security": bearer,
                                  "responses": {"200": {"description": "OpenAPI 3.1"},
                                                **unauthorized}}},
    }  # fmt: skip
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Schakel adapter",
            "version": "1",
            "description": "The HTTP API a back office uses to take part in Schakel "
            "(docs/ADAPTER.md).",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def rendered() -> str:
    """The document as committed: sorted keys, two-space indent, a final newline."""
    return json.dumps(openapi_document(), indent=2, sort_keys=True, ensure_ascii=True) + "\n"
