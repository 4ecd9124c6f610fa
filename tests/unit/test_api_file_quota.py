"""The per-key storage quota of /v1/files (Litestar's AsyncTestClient, real Redis): bytes and
files, checked with the write (concurrent uploads cannot both squeeze in), given back on
delete and when a file expires, and counting a batch's outputs without refusing them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.state import Resources
from protocol.auth import BOOTSTRAP_ID
from protocol.keys import file_key, file_sizes_key, file_usage_key
from protocol.settings import (
    BatchSettings,
    RedisSettings,
    SecuritySettings,
    ServerSettings,
    Settings,
    WorkerSettings,
)
from tests.auth import ADMIN_KEY, AUTH
from tests.unit.test_api_files import lines, upload

OWNER = BOOTSTRAP_ID
"""The id the bootstrap admin key (the tests' key) stores its files under."""
FILE = lines(4)
"""One upload; the quota below holds three of them."""


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[AsyncTestClient[Any]]:
    batch = BatchSettings(max_lines=1000, quota_bytes=3 * len(FILE), quota_files=5)
    cfg = Settings(
        redis=RedisSettings(url=redis_url, block_ms=500, socket_timeout_s=2),
        server=ServerSettings(),
        worker=WorkerSettings(),
        security=SecuritySettings(admin_key=ADMIN_KEY),
        batch=batch,
    )
    async with AsyncTestClient(create_app(cfg)) as client:
        client.headers.update(AUTH)
        yield client


def refused(response: Any) -> bool:
    error = response.json()["error"]
    return (
        response.status_code == 400
        and error["code"] == "storage_quota_exceeded"
        and error["param"] == "file"
        and error["type"] == "invalid_request_error"
    )


async def stored(redis: aioredis.Redis) -> int:
    return len([k async for k in redis.scan_iter("uml:file:*")])


async def test_bytes_past_the_quota_are_refused_and_nothing_is_stored(
    client: AsyncTestClient[Any], redis: aioredis.Redis
) -> None:
    for _ in range(3):
        assert (await upload(client, FILE)).status_code == 200
    response = await upload(client, FILE)
    assert refused(response), response.text
    assert "at most" in response.json()["error"]["message"]
    assert await stored(redis) == 3
    assert await redis.zcard(file_usage_key(OWNER)) == 3


async def test_files_past_the_quota_are_refused(client: AsyncTestClient[Any]) -> None:
    for _ in range(5):
        assert (await upload(client, lines(1))).status_code == 200
    assert refused(await upload(client, lines(1)))


async def test_a_delete_gives_the_room_back(client: AsyncTestClient[Any]) -> None:
    ids = [(await upload(client, FILE)).json()["id"] for _ in range(3)]
    assert refused(await upload(client, FILE))
    assert (await client.delete(f"/v1/files/{ids[0]}")).status_code == 200
    assert (await upload(client, FILE)).status_code == 200


async def test_an_expired_file_gives_the_room_back(
    client: AsyncTestClient[Any], redis: aioredis.Redis
) -> None:
    ids = [(await upload(client, FILE)).json()["id"] for _ in range(3)]
    assert refused(await upload(client, FILE))
    # what the file retention does to the first file, without waiting for it
    usage = file_usage_key(OWNER)
    await redis.zadd(usage, {ids[0]: int(time.time()) - 1}, xx=True)
    await redis.delete(file_key(ids[0]))
    assert (await upload(client, FILE)).status_code == 200
    assert ids[0].encode() not in await redis.hkeys(file_sizes_key(OWNER))


async def test_concurrent_uploads_cannot_both_squeeze_in(
    client: AsyncTestClient[Any], redis: aioredis.Redis
) -> None:
    assert (await upload(client, FILE)).status_code == 200
    answers = await asyncio.gather(*(upload(client, FILE) for _ in range(8)))
    assert sorted(a.status_code for a in answers) == [200, 200] + [400] * 6
    assert await stored(redis) == 3


async def test_batch_outputs_count_but_are_never_refused(
    client: AsyncTestClient[Any], redis: aioredis.Redis
) -> None:
    files = Resources.of(client.app.state).files
    for n in range(4):  # more than the quota holds, as a batch runner writes them
        obj = files.fields(OWNER, f"out-{n}.jsonl", "batch_output", FILE)
        async with redis.pipeline(transaction=True) as pipe:
            files.write(pipe, OWNER, obj, FILE)
            await pipe.execute()
    assert await stored(redis) == 4
    assert refused(await upload(client, lines(1)))
