"""A subscriber that attaches after generation began still gets every token from the first.

The job runs on the real worker through the real API; a second, late subscriber reads the
same event log through a relay of its own once the first client has seen tokens.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from api.relay import Relay
from protocol.events import DoneEvent, StatusEvent, TokenEvent
from tests.auth import AUTH
from tests.integration.conftest import MODEL
from tests.integration.stack import Stack

pytestmark = pytest.mark.timeout(120)


async def _run(api_url: str, redis_url: str) -> None:
    body = {"model": MODEL, "prompt": "late", "max_tokens": 400, "stream": True, "seed": 3}
    relay = Relay(redis_url, block_ms=1000, socket_timeout_s=5)
    await relay.start()
    try:
        async with httpx.AsyncClient(base_url=api_url, timeout=60, headers=AUTH) as client:
            async with client.stream("POST", "/v1/completions", json=body) as response:
                lines = response.aiter_lines()
                first = await _next_chunk(lines)
                late = await relay.subscribe(first["id"], after_seq=0)
                early_text = first["choices"][0]["text"] + await _rest(lines)
        seqs, texts, tokens = [], [], 0
        async with asyncio.timeout(30):
            async for event in late.events():
                assert event is not None
                seqs.append(event.seq)
                if isinstance(event, TokenEvent):
                    texts.append(event.text)
                    tokens += event.tokens
                elif isinstance(event, DoneEvent):
                    usage = event.usage
        assert seqs == list(range(1, len(seqs) + 1)), "gap or duplicate in the log"
        assert "".join(texts) == early_text
        assert tokens == usage.completion_tokens
    finally:
        await relay.stop()


async def _next_chunk(lines: object) -> dict[str, object]:
    async for line in lines:  # type: ignore[attr-defined]
        if line.startswith("data: {"):
            chunk: dict[str, object] = json.loads(line[6:])
            return chunk
    raise AssertionError("stream ended before its first chunk")


async def _rest(lines: object) -> str:
    text = []
    async for line in lines:  # type: ignore[attr-defined]
        if line.startswith("data: {"):
            text += [c["text"] for c in json.loads(line[6:])["choices"]]
    return "".join(text)


def test_late_subscriber_gets_the_whole_log(api_url: str, stack: Stack) -> None:
    asyncio.run(_run(api_url, stack.redis_url))


def test_log_starts_with_running_status(api_url: str, stack: Stack) -> None:
    async def run() -> None:
        relay = Relay(stack.redis_url, block_ms=1000, socket_timeout_s=5)
        await relay.start()
        try:
            async with httpx.AsyncClient(base_url=api_url, timeout=60, headers=AUTH) as client:
                body = {"model": MODEL, "prompt": "x", "max_tokens": 4}
                job_id = (await client.post("/v1/completions", json=body)).json()["id"]
            sub = await relay.subscribe(job_id, after_seq=0)
            events = [e async for e in sub.events()]
        finally:
            await relay.stop()
        assert isinstance(events[0], StatusEvent) and events[0].status == "running"
        assert isinstance(events[-1], DoneEvent)

    asyncio.run(run())
