"""The job: what to generate (:class:`JobSpec`), what happened (:class:`JobRecord`), and
the wire types of ``/v1/jobs``: a submission (:class:`JobSubmission`), a job as read
(:class:`Job`), a page of jobs (:class:`JobList`).

A job record lives in the Redis hash ``uml:job:{id}``. Scalar fields are stored as
strings; structured fields (``spec``, ``usage``, ``error``) as JSON. :func:`to_hash` and
:func:`from_hash` are the only translation between the two.

A submission wraps an ordinary ``/v1/completions`` or ``/v1/chat/completions`` body::

    {"type": "chat", "body": {"model": "tiny", "messages": [...]},
     "priority": "batch", "deadline": 1767225600, "metadata": {"run": "7"}}

Unknown top-level fields are refused (a mistyped ``priorty`` must not silently fall back to
the default); the body follows the OpenAI endpoints' rules. See docs/jobs.md.
"""

from __future__ import annotations

import secrets
import time
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from protocol.openai import ChatMessage, ErrorInfo, Usage
from protocol.states import JobStatus, Priority


class SamplingParams(Struct, kw_only=True, frozen=True):
    """Normalised sampling controls, engine-independent."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()


class JobSpec(Struct, kw_only=True, frozen=True):
    """Everything a worker needs to run a job; written once, at submission."""

    kind: Literal["completion", "chat"]
    model: str
    sampling: SamplingParams
    prompt: str | None = None
    messages: list[ChatMessage] | None = None


MIN_PROMPT_TOKENS = 1
"""The fewest prompt tokens a job that can run has (an engine refuses an empty prompt): what
the API counts a prompt as, having no tokenizer."""


def exceeds_context(prompt_tokens: int, max_tokens: int, context: int) -> bool:
    """Does a job of ``prompt_tokens`` plus ``max_tokens`` overflow a model context of
    ``context`` tokens? ``context`` 0 means unknown: nothing overflows it."""
    return context > 0 and prompt_tokens + max_tokens > context


class JobRecord(Struct, kw_only=True):
    id: str
    model: str
    status: JobStatus = JobStatus.QUEUED
    priority: Priority = Priority.BATCH
    attempt: int = 0
    worker: str | None = None
    created_at: float = 0.0
    started_at: float | None = None
    first_token_at: float | None = None
    finished_at: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    text: str | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    error: ErrorInfo | None = None
    spec: JobSpec | None = None
    cancel: bool = False
    owner: str | None = None
    """The id of the API key that submitted the job; other keys get 404 for it."""
    kind: Literal["completion", "chat"] | None = None
    """``spec.kind``, kept apart so reads need not fetch the (possibly large) spec."""
    deadline: float | None = None
    """Unix seconds; a job still queued then becomes ``expired`` and never runs."""
    metadata: dict[str, str] | None = None
    meter: str | None = None
    """The token window (``protocol.meter``) the worker charges the job's tokens to when it
    ends; None for a batch line, which, as at OpenAI, does not spend per-minute limits."""


def queued_record(
    spec: JobSpec,
    owner: str,
    priority: Priority,
    deadline: float | None = None,
    metadata: dict[str, str] | None = None,
    meter: str | None = None,
) -> JobRecord:
    """A new job as submitted: ``queued`` now; :meth:`JobStore.submit` gives it its id."""
    return JobRecord(
        id="",
        model=spec.model,
        kind=spec.kind,
        status=JobStatus.QUEUED,
        priority=priority,
        created_at=time.time(),
        spec=spec,
        owner=owner,
        deadline=deadline,
        metadata=metadata or None,
        meter=meter,
    )


_JSON_FIELDS = frozenset({"usage", "error", "spec", "metadata"})


def new_job_id() -> str:
    """A job id: sortable by creation time, unguessable."""
    return f"job-{int(time.time() * 1000):012x}{secrets.token_hex(8)}"


def to_hash(values: dict[str, Any]) -> dict[str, str]:
    """Encode a partial record (field name → value) into Redis hash fields."""
    out: dict[str, str] = {}
    for name, value in values.items():
        if value is None:
            continue
        if name in _JSON_FIELDS:
            out[name] = msgspec.json.encode(value).decode()
        elif isinstance(value, bool):
            out[name] = "1" if value else "0"
        else:
            out[name] = str(value)
    return out


def record_to_hash(record: JobRecord) -> dict[str, str]:
    return to_hash(msgspec.structs.asdict(record))


def from_hash(raw: dict[Any, Any]) -> JobRecord:
    """Decode a Redis hash (bytes or str keys and values) into a :class:`JobRecord`."""
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.decode() if isinstance(key, bytes) else key
        text = value.decode() if isinstance(value, bytes) else value
        if name in _JSON_FIELDS:
            values[name] = msgspec.json.decode(text)
        elif name == "cancel":
            values[name] = text == "1"
        else:
            values[name] = text
    return msgspec.convert(values, JobRecord, strict=False)


# ---- /v1/jobs on the wire -------------------------------------------------------------

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
