"""Events of a job's log, the Redis stream ``uml:job:{id}:events``.

Each entry holds one JSON event in its ``data`` field under the explicit id ``{seq}-1``;
``seq`` counts from 1 per job. SSE, OpenAI chunks and WebSocket frames are renderings of
this log.
"""

from __future__ import annotations

import msgspec
from msgspec import Struct

from protocol.openai import ErrorInfo, Usage
from protocol.queued import QUEUED_LUA
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
    """``event`` encoded with ``seq`` 0, for :data:`FINALIZE_LUA` to number."""
    return encode_event(msgspec.structs.replace(event, seq=0)).decode()


FINALIZE_LUA = (
    QUEUED_LUA
    + """
local function finalize(job, events, status, now, template, retention)
  unmark_queued(job)
  local last = redis.call('XREVRANGE', events, '+', '-', 'COUNT', 1)
  local seq = 1
  if last[1] then seq = tonumber(string.match(last[1][1], '^(%d+)')) + 1 end
  local event = string.gsub(template, '"seq":0', '"seq":' .. seq, 1)
  redis.call('XADD', events, seq .. '-1', 'data', event)
  redis.call('HSET', job, 'status', status, 'finished_at', now)
  redis.call('HDEL', job, 'msg')
  redis.call('EXPIRE', job, retention)
  redis.call('EXPIRE', events, retention)
  return seq
end
"""
)
"""A Lua function that ends the log of a job no worker runs (cancelled or expired while
queued): it appends ``template`` (see :func:`template`) as the next event, sets the final
status and the retention TTL, and drops the job from the live queued count
(:mod:`protocol.queued`, whose snippets it brings along). The API's cancel and read scripts,
the worker's claim script and the reaper all prepend it, so every path ends a log the same
way."""


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
