"""The wire types of the jobs API (``/v1/jobs``): a submission, a job as read, a page of jobs.

A submission wraps an ordinary ``/v1/completions`` or ``/v1/chat/completions`` body::

    {"type": "chat", "body": {"model": "tiny", "messages": [...]},
     "priority": "batch", "deadline": 1767225600, "metadata": {"run": "7"}}

Unknown top-level fields are refused (a mistyped ``priorty`` must not silently fall back to
the default); the body follows the OpenAI endpoints' rules. See docs/jobs.md.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

from protocol.openai import ErrorInfo, Usage
from protocol.states import JobStatus, Priority

MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512

_MetadataValue = Annotated[str, Meta(extra_json_schema={"maxLength": MAX_METADATA_VALUE_CHARS})]
Metadata = Annotated[
    dict[str, _MetadataValue],
    Meta(
        extra_json_schema={
            "maxProperties": MAX_METADATA_PAIRS,
            "propertyNames": {"maxLength": MAX_METADATA_KEY_CHARS},
        }
    ),
]
"""String pairs within OpenAI's limits (documented here, checked by the API with messages
that name the key at fault)."""
Deadline = float | Annotated[str, Meta(extra_json_schema={"format": "date-time"})] | None


class JobSubmission(Struct, kw_only=True, forbid_unknown_fields=True):
    type: Literal["chat", "completion"]
    body: msgspec.Raw
    priority: Priority = Priority.BATCH
    deadline: Deadline = None
    """Unix seconds, or an ISO 8601 time (UTC unless it names an offset)."""
    metadata: Metadata = msgspec.field(default_factory=dict)


class JobTimings(Struct, kw_only=True):
    """Unix seconds; ``created_at`` is also when the job was queued."""

    created_at: float
    started_at: float | None = None
    first_token_at: float | None = None
    finished_at: float | None = None


class Job(Struct, kw_only=True):
    """A job as ``GET /v1/jobs/{id}`` shows it."""

    id: str
    object: Literal["job"] = "job"
    type: Literal["chat", "completion"] | None = None
    model: str
    status: JobStatus
    priority: Priority
    queue_position: int | None = None
    """0 is next on its model; ``None`` unless queued."""
    completion_tokens: int = 0
    """Tokens generated so far (the final count once done)."""
    text: str | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    error: ErrorInfo | None = None
    deadline: float | None = None
    metadata: dict[str, str] = msgspec.field(default_factory=dict)
    attempt: int = 0
    timings: JobTimings


class JobList(Struct, kw_only=True):
    """A page of the caller's jobs, newest first; pass ``last_id`` as ``after`` for the next."""

    object: Literal["list"] = "list"
    data: list[Job]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False
