"""The wire types of OpenAI's Files and Batch APIs (``/v1/files``, ``/v1/batches``).

A batch input file is JSONL, one request per line::

    {"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions", "body": {...}}

Each output line answers one input line by ``custom_id`` (the order is not the input's)::

    {"id": "batch_req_…", "custom_id": "r1",
     "response": {"status_code": 200, "request_id": "job-…", "body": {...}}, "error": null}

Lines that could not run (invalid, cancelled, expired) carry ``response: null`` and an
``error`` with a ``code``. See docs/batches.md.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from protocol.jobs import MAX_METADATA_PAIRS, Metadata

FilePurpose = Literal["batch", "batch_output"]
BatchEndpoint = Literal["/v1/chat/completions", "/v1/completions"]
BATCH_ENDPOINTS: tuple[str, ...] = ("/v1/chat/completions", "/v1/completions")
COMPLETION_WINDOW_S = {"24h": 24 * 3600}
MAX_BATCH_METADATA_PAIRS = MAX_METADATA_PAIRS


class BatchStatus:
    """OpenAI's batch states, as plain strings (the SDK's ``Literal``)."""

    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


BATCH_TERMINAL = frozenset(
    {BatchStatus.FAILED, BatchStatus.COMPLETED, BatchStatus.EXPIRED, BatchStatus.CANCELLED}
)
"""States a batch never leaves."""


class FileObject(Struct, kw_only=True):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"] = "processed"
    expires_at: int | None = None
    status_details: str | None = None


class FileList(Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[FileObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class FileDeleted(Struct, kw_only=True):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


class BatchCreate(Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/batches``; an unknown field is refused, not silently ignored."""

    input_file_id: str
    endpoint: Annotated[str, Meta(extra_json_schema={"enum": list(BATCH_ENDPOINTS)})]
    """Checked by the API (400 ``unsupported_parameter`` naming the endpoints it serves)."""
    completion_window: Annotated[
        str, Meta(extra_json_schema={"enum": list(COMPLETION_WINDOW_S)})
    ] = "24h"
    metadata: Metadata | None = None
    output_expires_after: dict[str, Any] | None = None
    """Accepted for SDK compatibility; output files expire with the file retention."""


class BatchError(Struct, kw_only=True, omit_defaults=True):
    code: str | None = None
    message: str | None = None
    param: str | None = None
    line: int | None = None


class BatchErrors(Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[BatchError] = msgspec.field(default_factory=list)


class RequestCounts(Struct, kw_only=True):
    total: int = 0
    completed: int = 0
    failed: int = 0


class TokenDetails(Struct, kw_only=True):
    cached_tokens: int = 0


class OutputTokenDetails(Struct, kw_only=True):
    reasoning_tokens: int = 0


class BatchUsage(Struct, kw_only=True):
    input_tokens: int = 0
    input_tokens_details: TokenDetails = msgspec.field(default_factory=TokenDetails)
    output_tokens: int = 0
    output_tokens_details: OutputTokenDetails = msgspec.field(default_factory=OutputTokenDetails)
    total_tokens: int = 0


class Batch(Struct, kw_only=True):
    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: BatchErrors | None = None
    input_file_id: str
    completion_window: str
    status: str
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: RequestCounts = msgspec.field(default_factory=RequestCounts)
    usage: BatchUsage = msgspec.field(default_factory=BatchUsage)
    metadata: dict[str, str] | None = None
    model: str | None = None


class BatchList(Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[Batch]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class InputLine(Struct, kw_only=True, forbid_unknown_fields=True):
    """One line of a batch input file."""

    custom_id: str
    method: str
    url: str
    body: msgspec.Raw


class LineError(Struct, kw_only=True):
    code: str
    message: str


class LineResponse(Struct, kw_only=True):
    status_code: int
    request_id: str
    body: msgspec.Raw


class OutputLine(Struct, kw_only=True):
    id: str
    custom_id: str | None
    response: LineResponse | None = None
    error: LineError | None = None
