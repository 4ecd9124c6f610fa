"""A finished job's line in its batch's output or error file (pure).

:func:`result_line` maps the job hash fields :data:`JOB_FIELDS` (as one ``HMGET`` reads them)
to the line, in OpenAI's shapes: a succeeded job's response body goes to the output file,
status 200; a failed job's error body to the error file, with the status its sync call would
have answered; a job that never ran (the batch stopped, the job cancelled, expired or its
record gone) gets an error line with a ``code``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, NamedTuple

import msgspec

from api.render import chat_response, completion_response
from api.services.generation import Result, status_for_error
from protocol.batches import LineError, LineResponse, OutputLine
from protocol.keys import reply_text
from protocol.openai import ErrorInfo, ErrorResponse, Usage
from protocol.states import JobStatus

JOB_FIELDS = (
    "status",
    "text",
    "finish_reason",
    "usage",
    "error",
    "metadata",
    "created_at",
    "model",
)
"""The job hash fields a result line is made of."""

STOPPED = {
    "cancelled": ("batch_cancelled", "The batch was cancelled before this request finished"),
    "expired": (
        "batch_expired",
        "This request could not be executed before the completion window expired",
    ),
}
"""The error (code, message) of a request its batch's stop left unfinished, by reason."""

_encode = msgspec.json.encode

Job = Mapping[str, bytes | str | None]
"""A finished job's :data:`JOB_FIELDS`, ``None`` where the hash has none."""


class ResultLine(NamedTuple):
    target: Literal["out", "err"]
    """The output file (``out``) or the error file (``err``)."""
    line: OutputLine
    usage: Usage | None
    """The job's usage, counted into the batch's."""


def result_line(endpoint: str, job_id: str, job: Job, reason: str | None) -> ResultLine:
    """The line of a finished job of a batch on ``endpoint``; ``reason`` is why the batch
    stopped (``cancelled`` / ``expired``), ``None`` while it runs."""
    metadata = msgspec.json.decode(job["metadata"]) if job["metadata"] else {}
    custom_id = metadata.get("custom_id")
    line_id = f"batch_req_{job_id}"
    status = reply_text(job["status"])
    usage = msgspec.json.decode(job["usage"], type=Usage) if job["usage"] else None
    if status == JobStatus.SUCCEEDED:
        response = _succeeded(endpoint, job_id, job, usage)
        line = OutputLine(id=line_id, custom_id=custom_id, response=response)
        return ResultLine("out", line, usage)
    if status == JobStatus.FAILED and job["error"]:
        response = _failed(job_id, msgspec.json.decode(job["error"], type=ErrorInfo))
        line = OutputLine(id=line_id, custom_id=custom_id, response=response)
        return ResultLine("err", line, usage)
    code, message = _unfinished(status, reason)
    line = OutputLine(id=line_id, custom_id=custom_id, error=LineError(code=code, message=message))
    return ResultLine("err", line, usage)


def _succeeded(endpoint: str, job_id: str, job: Job, usage: Usage | None) -> LineResponse:
    """The response of a succeeded job: the body its sync call would have answered."""
    result = Result(
        text=reply_text(job["text"]),
        finish_reason=reply_text(job["finish_reason"]) or "stop",
        usage=usage or Usage(prompt_tokens=0, completion_tokens=0, total_tokens=0),
    )
    created = int(float(reply_text(job["created_at"]) or 0))
    render = chat_response if endpoint == "/v1/chat/completions" else completion_response
    body = render(job_id, reply_text(job["model"]), created, result)
    return LineResponse(status_code=200, request_id=job_id, body=msgspec.Raw(_encode(body)))


def _failed(job_id: str, info: ErrorInfo) -> LineResponse:
    """The response of a failed job: its error, with its sync call's status."""
    body = msgspec.Raw(_encode(ErrorResponse(error=info)))
    return LineResponse(status_code=status_for_error(info), request_id=job_id, body=body)


def _unfinished(status: str, reason: str | None) -> tuple[str, str]:
    """The error (code, message) of a job that produced no response."""
    if reason:
        return STOPPED[reason]
    if status == JobStatus.EXPIRED:
        return STOPPED["expired"]
    if status == JobStatus.CANCELLED:
        return "cancelled", "The request's job was cancelled"
    return "job_lost", "The request's job record is gone"
