"""Events of a job's log, the Redis stream ``uml:job:{id}:events``.

Each entry holds one JSON event in its ``data`` field under the explicit id ``{seq}-1``;
``seq`` counts from 1 per job. SSE, OpenAI chunks and WebSocket frames are renderings of
this log.
"""

from __future__ import annotations

import msgspec
from msgspec import Struct

from protocol.openai import ErrorInfo, Usage
from protocol.states import JobStatus


class StatusEvent(Struct, kw_only=True, tag="status", tag_field="type"):
    seq: int
    status: JobStatus
    attempt: int = 1
    worker: str | None = None


class TokenEvent(Struct, kw_only=True, tag="token", tag_field="type"):
    """New text. ``tokens`` is how many generated tokens this text completes."""

    seq: int
    text: str
    tokens: int = 1


class DoneEvent(Struct, kw_only=True, tag="done", tag_field="type"):
    seq: int
    finish_reason: str
    usage: Usage


class ErrorEvent(Struct, kw_only=True, tag="error", tag_field="type"):
    seq: int
    error: ErrorInfo


Event = StatusEvent | TokenEvent | DoneEvent | ErrorEvent
FINAL_EVENTS = (DoneEvent, ErrorEvent)

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Event)


def encode_event(event: Event) -> bytes:
    return _encoder.encode(event)


def decode_event(data: bytes | str) -> Event:
    event: Event = _decoder.decode(data)
    return event


def is_final(event: Event) -> bool:
    """Whether ``event`` ends the log (``done`` or ``error``)."""
    return isinstance(event, FINAL_EVENTS)


def template(event: Event) -> str:
    """``event`` encoded with ``seq`` 0, for a script's ``finalize`` to number
    (``protocol/scripts/includes/finalize.lua``)."""
    return encode_event(msgspec.structs.replace(event, seq=0)).decode()


def cancelled_unstarted() -> DoneEvent:
    """The final event of a job cancelled before it started."""
    return DoneEvent(
        seq=0,
        finish_reason="cancelled",
        usage=Usage(prompt_tokens=0, completion_tokens=0, total_tokens=0),
    )


def expired_unstarted() -> ErrorEvent:
    """The final event of a job whose deadline passed while it was queued."""
    error = ErrorInfo(
        message="The job's deadline passed before it started",
        type="expired",
        code="deadline_exceeded",
    )
    return ErrorEvent(seq=0, error=error)
