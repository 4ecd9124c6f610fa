"""/v1/files over HTTP (Litestar's AsyncTestClient, real Redis): the upload cap is its own
(413 beyond it, though far above the other routes' body limit), and files live in Redis."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient

from api.app import create_app
from protocol.keys import file_key
from protocol.settings import (
    BatchSettings,
    RedisSettings,
    SecuritySettings,
    ServerSettings,
    Settings,
    WorkerSettings,
)
from tests.auth import ADMIN_KEY, AUTH

FILE_CAP = 64 * 1024
LINE = json.dumps(
    {
        "custom_id": "a",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]},
    }
).encode()


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[AsyncTestClient[Any]]:
    cfg = Settings(
        redis=RedisSettings(url=redis_url, block_ms=500, socket_timeout_s=2),
        server=ServerSettings(max_body_bytes=4096),
        worker=WorkerSettings(),
        security=SecuritySettings(admin_key=ADMIN_KEY),
        batch=BatchSettings(max_file_bytes=FILE_CAP, max_lines=1000),
    )
    async with AsyncTestClient(create_app(cfg)) as client:
        client.headers.update(AUTH)
        yield client


def lines(n: int) -> bytes:
    return b"\n".join([LINE] * n) + b"\n"


async def upload(client: AsyncTestClient[Any], content: bytes) -> Any:
    return await client.post(
        "/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"}
    )


async def test_a_file_above_the_body_limit_but_under_the_file_cap_is_stored(
    client: AsyncTestClient[Any], redis: aioredis.Redis
) -> None:
    content = lines(FILE_CAP // (len(LINE) + 1) - 1)
    assert 4096 < len(content) <= FILE_CAP
    made = await upload(client, content)
    assert made.status_code == 200, made.text
    body = made.json()
    assert body["object"] == "file" and body["bytes"] == len(content)
    assert body["status"] == "processed" and body["expires_at"] > body["created_at"]
    assert await redis.hget(file_key(body["id"]), "content") == content
    assert await redis.ttl(file_key(body["id"])) > 0
    fetched = await client.get(f"/v1/files/{body['id']}/content")
    assert fetched.content == content


async def test_a_file_over_the_cap_is_413_and_nothing_is_stored(
    client: AsyncTestClient[Any], redis: aioredis.Redis
) -> None:
    content = lines(FILE_CAP // len(LINE) + 10)
    response = await upload(client, content)
    assert response.status_code == 413, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert [k async for k in redis.scan_iter("uml:file:*")] == []


async def test_too_many_lines_is_400(client: AsyncTestClient[Any]) -> None:
    response = await upload(client, b"{}\n" * 1001)
    assert response.status_code == 400
    assert "at most 1000" in response.json()["error"]["message"]


async def test_listing_pages_newest_first_and_filters_by_purpose(
    client: AsyncTestClient[Any],
) -> None:
    ids = [(await upload(client, lines(1))).json()["id"] for _ in range(3)]
    first = (await client.get("/v1/files", params={"limit": 2})).json()
    assert [f["id"] for f in first["data"]] == ids[::-1][:2] and first["has_more"]
    rest = (await client.get("/v1/files", params={"after": first["last_id"]})).json()
    assert [f["id"] for f in rest["data"]] == ids[:1] and not rest["has_more"]
    none = (await client.get("/v1/files", params={"purpose": "batch_output"})).json()
    assert none["data"] == []


def request_line(**fields: Any) -> bytes:
    return json.dumps({**json.loads(LINE), **fields}).encode()


@pytest.mark.parametrize(
    ("junk", "says"),
    [
        (b"not json at all", "not valid JSON"),
        (b"[1, 2]", "Expected `object`"),
        (b'{"custom_id": "a"}', "missing required field"),
        (request_line(custom_id=""), "custom_id must not be empty"),
        (request_line(method="GET"), "method must be POST"),
        (request_line(url="/v1/embeddings"), "url must be one of"),
        (request_line(body="hi"), "body must be a JSON object"),
        (request_line(extra=1), "unknown field"),
        (b'{"custom_id": "\xff", "method": "POST"}', "not UTF-8"),
    ],
)
async def test_a_line_that_is_not_a_request_is_refused_at_upload(
    client: AsyncTestClient[Any], redis: aioredis.Redis, junk: bytes, says: str
) -> None:
    response = await upload(client, LINE + b"\n\r\n" + junk + b"\n" + LINE + b"\n")
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "file" and error["code"] == "invalid_file"
    assert error["message"].startswith("Line 3"), error["message"]
    assert says in error["message"], error["message"]
    assert [k async for k in redis.scan_iter("uml:file:*")] == []


async def test_a_body_that_does_not_suit_its_endpoint_waits_for_the_batch(
    client: AsyncTestClient[Any],
) -> None:
    """Upload checks the line's shape; its body fails only its own line when the batch runs
    (the error file names it), as a sync request with that body would."""
    odd = request_line(body={"model": "tiny", "messages": [], "temperature": 9})
    assert (await upload(client, LINE + b"\n" + odd + b"\n")).status_code == 200
