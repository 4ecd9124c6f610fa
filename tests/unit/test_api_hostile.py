"""Hostile input over HTTP (AsyncTestClient, real Redis): every bad body is a 4xx in
OpenAI's shape, never a 5xx or a stack trace; the caps from settings hold."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from api.app import create_app
from tests.auth import AUTH
from tests.unit.test_api_http import error_of, settings

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
HEAD = b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}]'


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[AsyncTestClient[Any]]:
    cfg = settings(
        redis_url,
        max_body_bytes=1_000_000,
        max_messages=3,
        max_prompt_chars=100,
        max_stop=2,
        max_stop_chars=8,
    )
    async with AsyncTestClient(create_app(cfg)) as client:
        client.headers.update(AUTH)
        yield client


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], **fields}


def user(n: int, text: str = "hi") -> list[dict[str, str]]:
    return [{"role": "user", "content": text}] * n


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (CHAT, chat(messages=user(4)), "messages"),
        (CHAT, chat(messages=user(2, "x" * 51)), "messages"),
        (
            CHAT,
            chat(messages=[{"role": "user", "content": [{"type": "text", "text": "x" * 101}]}]),
            "messages",
        ),
        (COMPLETIONS, {"model": "tiny", "prompt": "x" * 101}, "prompt"),
        (COMPLETIONS, {"model": "tiny", "prompt": ["x" * 101]}, "prompt"),
        (CHAT, chat(stop=["a", "b", "c"]), "stop"),
        (CHAT, chat(stop="x" * 9), "stop"),
        (CHAT, chat(n=129), "n"),
        (CHAT, chat(n=2), "n"),
        (CHAT, chat(max_tokens=65), "max_tokens"),
        (CHAT, chat(top_k=2**40), "top_k"),
        (CHAT, chat(max_tokens=10**400), "max_tokens"),
        (CHAT, chat(seed=-(10**30)), "seed"),
        (CHAT, chat(temperature="hot"), "temperature"),
        (CHAT, chat(messages="hi"), "messages"),
        (CHAT, chat(messages=[]), "messages"),
        (CHAT, chat(stream="yes"), "stream"),
        (COMPLETIONS, {"model": "tiny", "prompt": [1, 2]}, "prompt"),
        (COMPLETIONS, {"model": ["tiny"], "prompt": "x"}, "model"),
    ],
)
async def test_caps_and_wrong_types_are_400_naming_the_field(
    client: AsyncTestClient[Any], path: str, body: dict[str, Any], param: str
) -> None:
    error = error_of(await client.post(path, json=body), 400)
    assert error["param"] == param and error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "body",
    [
        HEAD + b', "tool_choice": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        HEAD + b', "response_format": {"a": ' + b"{" * 50_000 + b"}" * 50_000 + b"}}",
        HEAD + b', "tool_choice": 1' + b"0" * 5000 + b"}",
        HEAD + b', "temperature": 1e400}',
        HEAD + b', "user": "\xc3\x28"}',
        HEAD + b', "user": "\\ud800"}',
        b'{"model": "tiny\xff", "prompt": "x"}',
        b"\xff\xfe{}",
        b"",
        b"null",
        b"[]",
        b'"just a string"',
    ],
)
async def test_hostile_bodies_are_400_never_500(client: AsyncTestClient[Any], body: bytes) -> None:
    for path in (CHAT, COMPLETIONS):
        resp = await client.post(path, content=body)
        error = error_of(resp, 400)
        assert error["type"] == "invalid_request_error"
        assert "Traceback" not in resp.text and 'File "' not in resp.text


async def test_oversized_body_is_413(redis_url: str) -> None:
    async with AsyncTestClient(create_app(settings(redis_url, max_body_bytes=2048))) as client:
        client.headers.update(AUTH)
        resp = await client.post(CHAT, json=chat(messages=user(1, "x" * 4000)))
        assert error_of(resp, 413)["code"] == "request_too_large"


BAD_UTF8 = [
    HEAD + b', "x\xff": 1}',  # an unknown field's name
    HEAD + b', "x": "\xc3\x28"}',  # an unknown field's value
    HEAD + b', "x": {"y\xfe": [1, "\xed\xa0\x80"]}}',  # deep inside an unknown field
    HEAD + b', "response_format": {"type": "text", "k\xff": 1}}',  # a free-form field's key
]


@pytest.mark.parametrize("body", BAD_UTF8)
async def test_invalid_utf8_anywhere_in_the_body_is_400(
    client: AsyncTestClient[Any], body: bytes
) -> None:
    """msgspec skips unknown fields without reading their bytes as text: checked before."""
    error = error_of(await client.post(CHAT, content=body), 400)
    assert "UTF-8" in error["message"]
    job = b'{"type": "chat", "body": ' + body + b', "z\xff": 0}'
    error = error_of(await client.post("/v1/jobs", content=job), 400)
    assert "UTF-8" in error["message"]
