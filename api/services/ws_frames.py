"""What one ``/ws`` socket sends and reads, apart from its session: the bounded
:class:`Outbox` its frames wait in, a job's log events rendered as server frames, errors as
``error`` frames, and a ``generate`` body parsed as a job spec. The session that uses them
is :mod:`api.services.ws`; the messages themselves are :mod:`protocol.ws`.
"""

from __future__ import annotations

import asyncio

import msgspec

from api import validation
from api.errors import APIError, invalid_request
from api.state import Resources
from protocol import ws
from protocol.events import DoneEvent, ErrorEvent, Event, TokenEvent
from protocol.jobs import JobSpec

OUTBOX_SIZE = 1024
"""Frames buffered per socket before a slow reader's socket is closed."""


class Overflow(Exception):
    """The socket's outbox is full: its reader is too slow."""


class Outbox:
    """The bounded queue of frames a socket has yet to send."""

    def __init__(self, size: int = OUTBOX_SIZE) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(size)
        self.overflowed = asyncio.Event()

    def put(self, message: ws.ServerMessage) -> None:
        """Queue ``message``; a full outbox raises :class:`Overflow` (and stays overflowed)."""
        if self.overflowed.is_set():
            raise Overflow
        try:
            self.queue.put_nowait(ws.encode(message))
        except asyncio.QueueFull:
            self.overflowed.set()
            raise Overflow from None


def error_frame(exc: APIError, ref: str | None = None, job_id: str | None = None) -> ws.Error:
    """The ``error`` frame of a refused message (or of the job it names)."""
    return ws.Error(error=exc.info, ref=ref, job_id=job_id, status=exc.status)


def render(job_id: str, event: Event) -> ws.ServerMessage | None:
    """The frame of one log event; ``None`` for events the socket does not show."""
    if isinstance(event, TokenEvent):
        return ws.Token(job_id=job_id, seq=event.seq, text=event.text) if event.text else None
    if isinstance(event, DoneEvent):
        return ws.Done(
            job_id=job_id, seq=event.seq, finish_reason=event.finish_reason, usage=event.usage
        )
    if isinstance(event, ErrorEvent):
        return ws.Error(job_id=job_id, seq=event.seq, error=event.error)
    return None


def parse_generate(msg: ws.Generate, res: Resources) -> JobSpec:
    """The generate body as a job spec, by the same rules as the HTTP endpoints."""
    raw = bytes(msg.body)
    kind = msg.kind
    if kind is None:
        try:
            decoded = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            raise invalid_request("body is not valid JSON", param="body") from None
        kind = "chat" if isinstance(decoded, dict) and "messages" in decoded else "completion"
    cfg = res.settings.server
    try:
        return (validation.chat(raw, cfg) if kind == "chat" else validation.completion(raw, cfg))[1]
    except APIError as exc:
        if exc.info.param:
            exc.info.param = f"body.{exc.info.param}"
        raise
