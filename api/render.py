"""Job events → OpenAI responses and SSE chunks (``data: {json}\\n\\n`` … ``data: [DONE]``).

Chat streams open with a chunk carrying ``delta.role = "assistant"``, send one chunk per
token event, close with an empty delta carrying ``finish_reason``, then (with
``stream_options.include_usage``) a chunk with no choices and the usage. An ``error`` event
becomes ``data: {"error": {...}}``, which the openai SDK raises as ``APIError``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from api.services.generation import Result
from protocol.events import DoneEvent, ErrorEvent, Event, TokenEvent
from protocol.openai import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionResponse,
    ChatDelta,
    CompletionChoice,
    CompletionChunk,
    CompletionResponse,
    ErrorResponse,
    Usage,
    encode,
)

DONE = b"data: [DONE]\n\n"
PING = b": ping\n\n"


def sse(obj: Any) -> bytes:
    return b"data: " + encode(obj) + b"\n\n"


def completion_response(
    job_id: str, model: str, created: int, result: Result
) -> CompletionResponse:
    choice = CompletionChoice(index=0, text=result.text, finish_reason=result.finish_reason)
    return CompletionResponse(
        id=job_id, created=created, model=model, choices=[choice], usage=result.usage
    )


def chat_response(job_id: str, model: str, created: int, result: Result) -> ChatCompletionResponse:
    choice = ChatChoice(
        index=0, message=AssistantMessage(content=result.text), finish_reason=result.finish_reason
    )
    return ChatCompletionResponse(
        id=job_id, created=created, model=model, choices=[choice], usage=result.usage
    )


class ChunkRenderer:
    """Turns one job's events into the SSE bytes of its OpenAI stream."""

    def __init__(
        self, kind: str, job_id: str, model: str, created: int, include_usage: bool
    ) -> None:
        self.kind = kind
        self.job_id = job_id
        self.model = model
        self.created = created
        self.include_usage = include_usage

    def _chat(self, delta: ChatDelta, finish_reason: str | None = None) -> bytes:
        choice = ChatChunkChoice(index=0, delta=delta, finish_reason=finish_reason)
        return sse(
            ChatCompletionChunk(
                id=self.job_id, created=self.created, model=self.model, choices=[choice]
            )
        )

    def _text(self, text: str, finish_reason: str | None = None) -> bytes:
        choice = CompletionChoice(index=0, text=text, finish_reason=finish_reason)
        return sse(
            CompletionChunk(
                id=self.job_id, created=self.created, model=self.model, choices=[choice]
            )
        )

    def _usage(self, usage: Usage) -> bytes:
        cls = ChatCompletionChunk if self.kind == "chat" else CompletionChunk
        return sse(
            cls(id=self.job_id, created=self.created, model=self.model, choices=[], usage=usage)
        )

    def opening(self) -> bytes:
        """Sent before the first event: the assistant role (chat only)."""
        if self.kind == "chat":
            return self._chat(ChatDelta(role="assistant", content=""))
        return b""

    def event(self, event: Event) -> bytes:
        """The bytes for one event; ``b""`` for events clients do not see."""
        if isinstance(event, TokenEvent):
            if not event.text:
                return b""
            if self.kind == "chat":
                return self._chat(ChatDelta(content=event.text))
            return self._text(event.text)
        if isinstance(event, DoneEvent):
            if self.kind == "chat":
                out = self._chat(ChatDelta(), event.finish_reason)
            else:
                out = self._text("", event.finish_reason)
            if self.include_usage:
                out += self._usage(event.usage)
            return out + DONE
        if isinstance(event, ErrorEvent):
            return sse(ErrorResponse(error=event.error)) + DONE
        return b""

    async def stream(self, events: AsyncIterator[Event | None]) -> AsyncIterator[bytes]:
        """SSE bytes for ``events``; a ``None`` (an idle tick) becomes a comment ping."""
        opening = self.opening()
        if opening:
            yield opening
        async for event in events:
            out = PING if event is None else self.event(event)
            if out:
                yield out
