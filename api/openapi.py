"""OpenAPI documentation of the request bodies our handlers decode themselves.

The OpenAI endpoints read the raw body (see :mod:`api.validation` for why), so Litestar
cannot infer their request schema; it is generated here from the ``protocol`` Structs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody

from protocol.openai import ChatCompletionRequest, CompletionRequest

_PREFIX = "#/$defs/"


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """Replace every ``$ref`` by its definition (the request types are not recursive)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_PREFIX):
            return _inline(defs[ref.removeprefix(_PREFIX)], defs)
        return {k: _inline(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def request_schema(cls: type[msgspec.Struct]) -> dict[str, Any]:
    """The JSON schema of ``cls`` with no references left."""
    schema = msgspec.json.schema(cls)
    defs = schema.pop("$defs", {})
    inlined: dict[str, Any] = _inline(schema, defs)
    return inlined


def _body(cls: type[msgspec.Struct]) -> RequestBody:
    media = OpenAPIMediaType(schema=request_schema(cls))  # type: ignore[arg-type]  # raw JSON schema
    return RequestBody(content={"application/json": media}, required=True)


@dataclass
class CompletionOperation(Operation):
    def __post_init__(self) -> None:
        self.request_body = _body(CompletionRequest)


@dataclass
class ChatOperation(Operation):
    def __post_init__(self) -> None:
        self.request_body = _body(ChatCompletionRequest)
