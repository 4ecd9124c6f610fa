"""The whole path over real processes: HTTP → Celery → worker → Redis stream → SSE."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
import redis

from tests.auth import ADMIN_KEY, AUTH
from tests.integration.conftest import MODEL

pytestmark = pytest.mark.timeout(180)


def sse_data(response: httpx.Response) -> Iterator[str]:
    for line in response.iter_lines():
        if line.startswith("data: "):
            yield line[len("data: ") :]


def stream_completion(http: httpx.Client, body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    chunks: list[dict[str, Any]] = []
    with http.stream("POST", "/v1/completions", json={**body, "stream": True}) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        data = list(sse_data(response))
    assert data[-1] == "[DONE]"
    chunks = [json.loads(item) for item in data[:-1]]
    text = "".join(choice["text"] for chunk in chunks for choice in chunk["choices"])
    return text, chunks


def test_completion_non_stream(http: httpx.Client) -> None:
    body = {"model": MODEL, "prompt": "Hello", "max_tokens": 12, "temperature": 0}
    response = http.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    payload = response.json()
    assert payload["object"] == "text_completion"
    choice = payload["choices"][0]
    assert choice["finish_reason"] in {"stop", "length"}
    usage = payload["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    if choice["finish_reason"] == "length":
        assert usage["completion_tokens"] == 12


def test_chat_non_stream(http: httpx.Client) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say hi"}],
        "max_tokens": 10,
        "temperature": 0,
    }
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    payload = response.json()
    assert payload["object"] == "chat.completion"
    assert payload["choices"][0]["message"]["role"] == "assistant"
    assert isinstance(payload["choices"][0]["message"]["content"], str)
    assert payload["usage"]["prompt_tokens"] > 0


def test_stream_equals_non_stream(http: httpx.Client) -> None:
    body = {"model": MODEL, "prompt": "The", "max_tokens": 40, "temperature": 0}
    whole = http.post("/v1/completions", json=body).json()
    text, chunks = stream_completion(http, body)
    assert text == whole["choices"][0]["text"]
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]


def test_chat_stream_with_usage(http: httpx.Client) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Go"}],
        "max_tokens": 16,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        data = list(sse_data(response))
    assert data[-1] == "[DONE]"
    chunks = [json.loads(item) for item in data[:-1]]
    assert chunks[0]["choices"][0]["delta"].get("role") == "assistant"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finish[-1] in {"stop", "length"}
    if finish[-1] == "length":
        assert usage_chunk["usage"]["completion_tokens"] == 16


def test_openai_sdk_unchanged(api_url: str) -> None:
    client = openai.OpenAI(base_url=f"{api_url}/v1", api_key=ADMIN_KEY)
    models = [m.id for m in client.models.list()]
    assert MODEL in models
    chat = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=8, temperature=0
    )
    assert chat.choices[0].message.content is not None
    pieces = []
    for chunk in client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=8,
        temperature=0,
        stream=True,
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
    assert "".join(pieces) == chat.choices[0].message.content
    completion = client.completions.create(model=MODEL, prompt="x", max_tokens=5, temperature=0)
    assert completion.choices[0].finish_reason in {"stop", "length"}
    client.close()


def test_32_concurrent_streams_complete(api_url: str) -> None:
    async def one(client: httpx.AsyncClient, i: int) -> tuple[int, str, dict[str, Any], str]:
        body = {
            "model": MODEL,
            "prompt": f"stream {i}",
            "max_tokens": 48,
            "temperature": 0.8,
            "seed": i,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        parts: list[str] = []
        usage: dict[str, Any] = {}
        finish = ""
        async with client.stream("POST", "/v1/completions", json=body) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                for choice in chunk["choices"]:
                    parts.append(choice["text"])
                    finish = choice["finish_reason"] or finish
                usage = chunk.get("usage") or usage
        return i, "".join(parts), usage, finish

    async def run_all() -> list[tuple[int, str, dict[str, Any], str]]:
        async with httpx.AsyncClient(base_url=api_url, timeout=120, headers=AUTH) as client:
            return await asyncio.gather(*(one(client, i) for i in range(32)))

    results = asyncio.run(run_all())
    assert len(results) == 32
    with httpx.Client(base_url=api_url, timeout=60, headers=AUTH) as http:
        for i, text, _, _ in results[:4]:
            body = {
                "model": MODEL,
                "prompt": f"stream {i}",
                "max_tokens": 48,
                "temperature": 0.8,
                "seed": i,
            }
            assert http.post("/v1/completions", json=body).json()["choices"][0]["text"] == text
    for _, _, usage, finish in results:
        assert finish in {"stop", "length"}
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        if finish == "length":
            assert usage["completion_tokens"] == 48
        else:
            assert 0 < usage["completion_tokens"] <= 48


def _stop_candidate(text: str) -> str | None:
    for i in range(4, len(text) - 3):
        if "\ufffd" not in text[i : i + 3]:
            return text[i : i + 3]
    return None


def test_stop_string_split_across_tokens(http: httpx.Client) -> None:
    # Each token of the tiny model's byte-level vocabulary is one byte, so any stop string
    # of several characters is necessarily split across tokens.
    for seed in range(20):
        base = {"model": MODEL, "prompt": "stop test", "max_tokens": 64, "seed": seed}
        text = http.post("/v1/completions", json=base).json()["choices"][0]["text"]
        stop = _stop_candidate(text)
        if stop:
            break
    else:
        pytest.fail("no seed gave a text with a usable stop string")
    expected = text[: text.index(stop)]
    for stream in (False, True):
        if stream:
            got, chunks = stream_completion(http, {**base, "stop": [stop]})
            finish = chunks[-1]["choices"][0]["finish_reason"]
        else:
            payload = http.post("/v1/completions", json={**base, "stop": stop}).json()
            got, finish = payload["choices"][0]["text"], payload["choices"][0]["finish_reason"]
        assert got == expected
        assert finish == "stop"


def test_multibyte_text_survives_streaming(http: httpx.Client) -> None:
    for seed in range(20):
        body = {
            "model": MODEL,
            "prompt": "héllo wörld ✓ 你好",
            "max_tokens": 200,
            "temperature": 1.0,
            "seed": seed,
        }
        whole = http.post("/v1/completions", json=body).json()["choices"][0]["text"]
        if any(ord(ch) > 127 and ch != "\ufffd" for ch in whole):
            break
    else:
        pytest.fail("no seed produced a multi-byte character")
    streamed, chunks = stream_completion(http, body)
    assert streamed == whole
    # No chunk may end in the middle of a character: each decodes on its own.
    for chunk in chunks:
        for choice in chunk["choices"]:
            choice["text"].encode("utf-8")


def test_seeded_sampling_is_reproducible(http: httpx.Client) -> None:
    body = {
        "model": MODEL,
        "prompt": "Once",
        "max_tokens": 32,
        "temperature": 1.0,
        "top_p": 0.9,
        "top_k": 50,
    }
    first = http.post("/v1/completions", json={**body, "seed": 7}).json()["choices"][0]["text"]
    again = http.post("/v1/completions", json={**body, "seed": 7}).json()["choices"][0]["text"]
    other = http.post("/v1/completions", json={**body, "seed": 8}).json()["choices"][0]["text"]
    assert first == again
    assert first != other


def test_unknown_model_is_404_and_nothing_is_queued(http: httpx.Client, stack: Any) -> None:
    response = http.post("/v1/completions", json={"model": "nope", "prompt": "x"})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["param"] == "model"
    assert error["type"]
    assert "nope" in error["message"]
    client = redis.Redis.from_url(stack.redis_url)
    assert not client.keys("model.nope*")
    client.close()


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/completions", {"model": MODEL}, "prompt"),
        ("/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": "many"}, "max_tokens"),
        ("/v1/completions", {"model": MODEL, "prompt": "x", "temperature": 9}, "temperature"),
        ("/v1/chat/completions", {"model": MODEL, "messages": []}, "messages"),
        (
            "/v1/chat/completions",
            {"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]},
            "messages[0].role",
        ),
        (
            "/v1/chat/completions",
            {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "n": 3},
            "n",
        ),
    ],
)
def test_malformed_bodies_get_openai_errors(
    http: httpx.Client, path: str, body: dict[str, Any], param: str
) -> None:
    response = http.post(path, json=body)
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    assert error["message"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


def test_invalid_json_gets_openai_error(http: httpx.Client) -> None:
    response = http.post(
        "/v1/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_prompt_longer_than_the_context_is_a_clear_400(http: httpx.Client) -> None:
    body = {"model": MODEL, "prompt": "a" * 3000, "max_tokens": 10}
    response = http.post("/v1/completions", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert error["param"] == "prompt"
    assert "context" in error["message"]
