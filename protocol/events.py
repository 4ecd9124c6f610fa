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
