"""OpenAPI documentation Litestar cannot infer: request bodies our handlers decode
themselves, and our error responses.

The OpenAI endpoints read the raw body (see :mod:`api.validation` for why), so Litestar
cannot infer their request schema; it is generated here from the ``protocol`` Structs.
Every error answers OpenAI's ``ErrorResponse`` (see :mod:`api.errors`), not Litestar's
default shape, so :data:`ERRORS` documents it for each status a route may answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Operation, RequestBody

from protocol.batches import BatchCreate
from protocol.openai import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    ErrorResponse,
)

_PREFIX = "#/$defs/"

_ERROR_STATUSES = {
    400: "Invalid request: the body, a parameter or a cap (error.param names the field)",
    401: "No valid API key",
    403: "The key lacks the route's scope",
    404: "No such model or object",
    408: "The request's headers or body did not arrive in time (the connection is closed)",
    413: "Request body too large",
    429: "Rate limit reached; see Retry-After",
    503: "The job store is unavailable or full; retry after Retry-After",
}
ERRORS = {
    status: ResponseSpec(ErrorResponse, description=text, generate_examples=False)
    for status, text in _ERROR_STATUSES.items()
}
"""``responses=`` of every keyed route: the error statuses, each in OpenAI's shape."""


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


def _ok(cls: type[msgspec.Struct]) -> OpenAPIResponse:
    """200: the whole answer as JSON, or (``stream: true``) server-sent events."""
    json_media = OpenAPIMediaType(schema=request_schema(cls))  # type: ignore[arg-type]  # raw JSON schema
    sse = OpenAPIMediaType(schema={"type": "string"})  # type: ignore[arg-type]
    return OpenAPIResponse(
        description="The completion, or its chunks as `text/event-stream` when `stream` is true",
        content={"application/json": json_media, "text/event-stream": sse},
    )


@dataclass
class CompletionOperation(Operation):
    def __post_init__(self) -> None:
        self.request_body = _body(CompletionRequest)
        self.responses = {**(self.responses or {}), "200": _ok(CompletionResponse)}


@dataclass
class ChatOperation(Operation):
    def __post_init__(self) -> None:
        self.request_body = _body(ChatCompletionRequest)
        self.responses = {**(self.responses or {}), "200": _ok(ChatCompletionResponse)}


@dataclass
class BatchCreateOperation(Operation):
    def __post_init__(self) -> None:
        self.request_body = _body(BatchCreate)


@dataclass
class FileUploadOperation(Operation):
    def __post_init__(self) -> None:
        schema = {
            "type": "object",
            "required": ["file", "purpose"],
            "properties": {
                "file": {"type": "string", "format": "binary", "description": "JSONL"},
                "purpose": {"type": "string", "enum": ["batch"]},
            },
        }
        media = OpenAPIMediaType(schema=schema)  # type: ignore[arg-type]  # raw JSON schema
        self.request_body = RequestBody(content={"multipart/form-data": media}, required=True)
