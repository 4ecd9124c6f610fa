"""Events → OpenAI SSE chunks and whole responses."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from api.render import ChunkRenderer, chat_response, completion_response
from api.services.generation import Result
from protocol.events import DoneEvent, ErrorEvent, Event, StatusEvent, TokenEvent
from protocol.openai import ErrorInfo, Usage
from protocol.states import JobStatus

USAGE = Usage(prompt_tokens=2, completion_tokens=2, total_tokens=4)
EVENTS: list[Event | None] = [
    StatusEvent(seq=1, status=JobStatus.RUNNING),
    TokenEvent(seq=2, text="Hel"),
    None,
    TokenEvent(seq=3, text="lo"),
    DoneEvent(seq=4, finish_reason="stop", usage=USAGE),
]


async def _iter(events: list[Event | None]) -> AsyncIterator[Event | None]:
    for event in events:
        yield event


async def _render(kind: str, include_usage: bool, events: list[Event | None]) -> list[Any]:
    renderer = ChunkRenderer(kind, "job-1", "tiny", 123, include_usage)
    raw = b"".join([chunk async for chunk in renderer.stream(_iter(events))]).decode()
    assert raw.endswith("data: [DONE]\n\n")
    out: list[Any] = []
    for block in raw.split("\n\n")[:-1]:
        if block.startswith(":"):
            out.append("ping")
        elif block == "data: [DONE]":
            out.append("[DONE]")
        else:
            assert block.startswith("data: ")
            out.append(json.loads(block[6:]))
    return out


async def test_chat_stream_chunks() -> None:
    chunks = await _render("chat", True, EVENTS)
    assert chunks[0]["object"] == "chat.completion.chunk"
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[1]["choices"][0]["delta"] == {"content": "Hel"}
    assert chunks[2] == "ping"
    assert chunks[3]["choices"][0]["delta"] == {"content": "lo"}
    assert chunks[4]["choices"][0] == {
        "index": 0,
        "delta": {},
        "finish_reason": "stop",
        "logprobs": None,
    }
    assert chunks[5]["choices"] == [] and chunks[5]["usage"]["total_tokens"] == 4
    assert chunks[6] == "[DONE]"
    assert all(c["id"] == "job-1" and c["model"] == "tiny" for c in chunks if isinstance(c, dict))


async def test_completion_stream_without_usage() -> None:
    chunks = await _render("completion", False, EVENTS)
    texts = [c["choices"][0]["text"] for c in chunks if isinstance(c, dict)]
    assert texts == ["Hel", "lo", ""]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert all(c["object"] == "text_completion" for c in chunks if isinstance(c, dict))


async def test_error_event_becomes_openai_error() -> None:
    error = ErrorEvent(seq=2, error=ErrorInfo(message="boom", type="server_error"))
    chunks = await _render("chat", False, [TokenEvent(seq=1, text="x"), error])
    assert chunks[-2] == {
        "error": {"message": "boom", "type": "server_error", "param": None, "code": None}
    }


def test_whole_responses() -> None:
    result = Result(text="Hello", finish_reason="length", usage=USAGE)
    chat = chat_response("job-1", "tiny", 1, result)
    assert chat.choices[0].message.content == "Hello" and chat.usage == USAGE
    text = completion_response("job-1", "tiny", 1, result)
    assert text.choices[0].text == "Hello" and text.choices[0].finish_reason == "length"
