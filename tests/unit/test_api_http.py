"""The API over HTTP (Litestar's AsyncTestClient, real Redis): error shapes, health, models.

Nothing here needs a worker: every request either fails before it is queued or reads
heartbeats the test writes itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from httpx import Response
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.errors import APIError
from api.services.models import LiveModels
from api.state import open_resources
from protocol.keys import AUDIT_STREAM, WORKERS_SET, worker_key
from protocol.settings import (
    RedisSettings,
    SecuritySettings,
    ServerSettings,
    Settings,
    WorkerSettings,
)
from protocol.workers import ModelState, WorkerInfo
from tests.auth import ADMIN_KEY, AUTH
from uml.redis_server import free_port

CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "hi"}]


def settings(url: str, **server: Any) -> Settings:
    return Settings(
        redis=RedisSettings(url=url, block_ms=500, socket_timeout_s=2),
        server=ServerSettings(**{"max_body_bytes": 4096, "max_tokens_cap": 64, **server}),
        worker=WorkerSettings(),
        security=SecuritySettings(admin_key=ADMIN_KEY),
    )


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(create_app(settings(redis_url, models_cache_s=60))) as client:
        client.headers.update(AUTH)
        yield client


async def heartbeat(redis: aioredis.Redis, worker: str, *models: tuple[str, str]) -> None:
    info = WorkerInfo(
        id=worker,
        host="test",
        pid=1,
        slots=4,
        models=[ModelState(name=n, engine="torch", device="cpu", state=s) for n, s in models],  # type: ignore[arg-type]
    )
    await redis.sadd(WORKERS_SET, worker)
    await redis.set(worker_key(worker), msgspec.json.encode(info), ex=30)


def error_of(response: Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


async def test_unknown_model_is_404_and_nothing_is_queued(
    client: AsyncTestClient[Any], redis: aioredis.Redis
) -> None:
    await heartbeat(redis, "w1", ("tiny", "ready"), ("big", "loading"))
    for model in ("nope", "big"):
        resp = await client.post(CHAT, json={"model": model, "messages": USER})
        error = error_of(resp, 404)
        assert (error["type"], error["param"], error["code"]) == (
            "invalid_request_error",
            "model",
            "model_not_found",
        )
    keys = {k.decode() for k in await redis.keys("*")} - {AUDIT_STREAM}
    assert keys == {WORKERS_SET, worker_key("w1")}


async def test_model_cache_rechecks_redis_before_404(redis: aioredis.Redis) -> None:
    models = LiveModels(redis, cache_s=60)
    assert (await models.snapshot()).models == frozenset()  # cached, empty
    await heartbeat(redis, "w1", ("tiny", "ready"))
    assert (await models.snapshot()).models == frozenset()  # still the cached answer
    await models.require("tiny")  # a miss re-reads Redis once
    assert (await models.snapshot()).models == {"tiny"}
    with pytest.raises(APIError) as info:
        await models.require("nope")
    assert info.value.status == 404


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{oops", None),
        (b'{"model": "tiny", "messages": [{"role": 1}]}', "messages[0].role"),
        (b'{"model": "tiny", "prompt": "x"}', "messages"),
        (b'{"model": "tiny", "messages": [{"role": "user"}], "n": 2}', "n"),
        (b'{"model": "tiny", "messages": [{"role": "user", "content": "\xff\xfe"}]}', None),
        (b'{"model": "tiny", "messages": [{"role": "user"}], "max_tokens": 1e400}', "max_tokens"),
        (b"[" * 1000 + b"]" * 1000, None),
    ],
)
async def test_bad_bodies_are_400_naming_the_field(
    client: AsyncTestClient[Any], body: bytes, param: str | None
) -> None:
    error = error_of(await client.post(CHAT, content=body), 400)
    assert error["param"] == param and error["type"] == "invalid_request_error"


async def test_litestar_errors_are_openai_shaped(client: AsyncTestClient[Any]) -> None:
    assert error_of(await client.get("/v1/nothing"), 404)["type"] == "not_found_error"
    error_of(await client.delete("/v1/models"), 405)
    big = b'{"model": "tiny", "prompt": "' + b"x" * 5000 + b'"}'
    assert (
        error_of(await client.post("/v1/completions", content=big), 413)["code"]
        == "request_too_large"
    )


async def test_health_tracks_workers(client: AsyncTestClient[Any], redis: aioredis.Redis) -> None:
    assert (await client.get("/health")).json() == {
        "status": "no_workers",
        "redis": True,
        "workers": 0,
        "models": [],
    }
    await heartbeat(redis, "w1", ("tiny", "ready"))
    await redis.sadd(WORKERS_SET, "dead")  # listed, but its heartbeat key has expired
    resp = await client.get("/health")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok", "redis": True, "workers": 1, "models": ["tiny"]}
    assert await redis.smembers(WORKERS_SET) == {b"w1"}


async def test_redis_down_is_503_and_health_says_so() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    async with AsyncTestClient(create_app(settings(url))) as client:
        client.headers.update(AUTH)
        resp = await client.post(CHAT, json={"model": "tiny", "messages": USER})
        assert error_of(resp, 503)["type"] == "service_unavailable"
        assert resp.headers["retry-after"] == "1"
        health = await client.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "redis_down"


async def test_openapi_and_docs(client: AsyncTestClient[Any]) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    assert {"/v1/completions", "/v1/chat/completions", "/v1/models", "/health"} <= set(
        schema["paths"]
    )
    body = schema["paths"]["/v1/chat/completions"]["post"]["requestBody"]
    properties = body["content"]["application/json"]["schema"]["properties"]
    assert {"model", "messages", "max_tokens", "stream"} <= set(properties)
    docs = await client.get("/docs", follow_redirects=True)
    assert docs.status_code == 200 and "<html" in docs.text


async def test_a_burst_beyond_redis_pys_default_pool_waits_instead_of_failing(
    redis_url: str,
) -> None:
    """redis-py's default async pool raises on the 101st concurrent command; ours waits."""
    async with open_resources(settings(redis_url)) as res:
        replies = await asyncio.gather(*(res.redis.get(f"nothing-{i}") for i in range(300)))
    assert replies == [None] * 300
