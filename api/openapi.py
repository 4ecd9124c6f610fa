"""OpenAPI documentation Litestar cannot infer: request bodies our handlers decode
themselves, and our error responses.

Handlers that read the raw body (see :mod:`api.validation` for why) document it with an
``operation_class`` from here; the schemas come from :mod:`api.request_schemas`, narrowed to
what the API serves. Documents are built with the default settings; :func:`docs_router`
writes an app's own caps in before its document first goes out.
Every error answers OpenAI's ``ErrorResponse`` (see :mod:`api.errors`), not Litestar's
default shape, so :data:`ERRORS` documents it for each status a route may answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Request, Router
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    Encoding,
    OpenAPI,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    RequestBody,
    Schema,
)

from api import request_schemas
from api.request_schemas import request_schema, served_request
from protocol.batches import BatchCreate
from protocol.openai import ChatCompletionResponse, CompletionResponse, ErrorResponse
from protocol.settings import ServerSettings

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

MIN_0 = {"minimum": 0}
"""``schema_extra`` for a parameter with ``ge=0``: Litestar drops a bound that is falsy."""


def _body(cls: type[msgspec.Struct], required: bool = True) -> RequestBody:
    return _json_body(request_schema(cls), required)


def _json_body(schema: dict[str, Any], required: bool = True) -> RequestBody:
    media = OpenAPIMediaType(schema=schema)  # type: ignore[arg-type]  # raw JSON schema
    return RequestBody(content={"application/json": media}, required=required)


def json_body(cls: type[msgspec.Struct], required: bool = True) -> type[Operation]:
    """An ``operation_class`` documenting a JSON body of ``cls`` that the handler decodes
    itself (Litestar cannot see it); ``required=False`` where an empty body is accepted."""
    body = _body(cls, required)

    @dataclass
    class BodyOperation(Operation):
        def __post_init__(self) -> None:
            self.request_body = body

    return BodyOperation


@dataclass
class JobSubmissionOperation(Operation):
    def __post_init__(self) -> None:
        self.request_body = _json_body(request_schemas.job_submission(ServerSettings()))


def sse_event(data: str) -> dict[str, Any]:
    """The schema of one server-sent event, as an EventSource parses it (before OpenAPI 3.2
    a ``text/event-stream`` schema describes each event); ``data`` says what its data holds."""
    return {
        "type": "object",
        "properties": {
            "event": {"type": "string"},
            "id": {"type": "string"},
            "retry": {"type": "integer"},
            "data": {"type": "string", "description": data},
        },
    }


def _sse(data: str) -> OpenAPIMediaType:
    return OpenAPIMediaType(schema=sse_event(data))  # type: ignore[arg-type]  # raw JSON schema


def _ok(cls: type[msgspec.Struct], chunk: str) -> OpenAPIResponse:
    """200: the whole answer as JSON, or (``stream: true``) server-sent events."""
    json_media = OpenAPIMediaType(schema=request_schema(cls))  # type: ignore[arg-type]  # raw JSON schema
    data = f"A `{chunk}` as JSON; the last event's data is `[DONE]`."
    return OpenAPIResponse(
        description="The completion, or its chunks as `text/event-stream` when `stream` is true",
        content={"application/json": json_media, "text/event-stream": _sse(data)},
    )


@dataclass
class EventsOperation(Operation):
    """``GET /v1/jobs/{id}/events``: the job's event log as server-sent events."""

    def __post_init__(self) -> None:
        data = "One event of the job's log as JSON (`token`, `status`, `done`, `error`)"
        self.responses = {
            **(self.responses or {}),
            "200": OpenAPIResponse(
                description="The job's events after `Last-Event-ID` (or `after`), to its end",
                content={"text/event-stream": _sse(data)},
            ),
        }


@dataclass
class CompletionOperation(Operation):
    def __post_init__(self) -> None:
        self.request_body = _json_body(served_request("completion", ServerSettings()))
        self.responses = {
            **(self.responses or {}),
            "200": _ok(CompletionResponse, "text_completion"),
        }


@dataclass
class ChatOperation(Operation):
    def __post_init__(self) -> None:
        self.request_body = _json_body(served_request("chat", ServerSettings()))
        self.responses = {
            **(self.responses or {}),
            "200": _ok(ChatCompletionResponse, "chat.completion.chunk"),
        }


@dataclass
class BatchCreateOperation(Operation):
    def __post_init__(self) -> None:
        self.request_body = _body(BatchCreate)


@dataclass
class FileUploadOperation(Operation):
    def __post_init__(self) -> None:
        file = {
            "type": "string",
            "pattern": r"\S",
            "description": "UTF-8 JSONL: one batch request per line, at least one, at most "
            "UML_BATCH_MAX_LINES; sent as a file part (with a filename).",
        }
        schema = {
            "type": "object",
            "required": ["file", "purpose"],
            "properties": {"file": file, "purpose": {"type": "string", "enum": ["batch"]}},
        }
        disposition = OpenAPIHeader(
            schema=Schema(type=OpenAPIType.STRING),
            example='form-data; name="file"; filename="batch.jsonl"',
        )
        encoding = Encoding(headers={"Content-Disposition": disposition})
        media = OpenAPIMediaType(schema=schema, encoding={"file": encoding})  # type: ignore[arg-type]
        self.request_body = RequestBody(content={"multipart/form-data": media}, required=True)


def document_settings(openapi: OpenAPI, cfg: ServerSettings) -> None:
    """Write this app's caps (``cfg``) into the generation bodies documented with defaults."""
    bodies = {
        "/v1/completions": served_request("completion", cfg),
        "/v1/chat/completions": served_request("chat", cfg),
        "/v1/jobs": request_schemas.job_submission(cfg),
    }
    for path, schema in bodies.items():
        item = (openapi.paths or {}).get(path)
        if item is not None and item.post is not None:
            item.post.request_body = _json_body(schema)


def docs_router(cfg: ServerSettings) -> Router:
    """The router serving ``/schema``: before it first answers, :func:`document_settings`
    writes this app's caps into the document (Litestar builds it lazily, with no hook after
    the build, and keeps it), so an app that is never asked for its document pays nothing."""
    done: list[bool] = []

    async def with_settings(request: Request[Any, Any, Any]) -> None:
        if not done:
            document_settings(request.app.openapi_schema, cfg)
            done.append(True)

    return Router(
        "/schema",
        route_handlers=[],
        include_in_schema=False,
        before_request=with_settings,
    )
