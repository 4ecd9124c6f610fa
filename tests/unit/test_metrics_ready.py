"""``/ready`` and ``/health`` in-process (AsyncTestClient, real Redis, fake heartbeats)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.controllers.health import unready_reason
from protocol.keys import WORKERS_SET
from protocol.settings import ModelSettings
from protocol.workers import ModelState, WorkerInfo
from tests.unit.test_api_http import error_of, heartbeat, settings
from uml.redis_server import free_port


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(create_app(settings(redis_url))) as client:
        yield client


def worker(*models: str) -> WorkerInfo:
    held = [ModelState(name=m, engine="torch", device="cpu") for m in models]
    return WorkerInfo(id="w", host="h", pid=1, slots=1, models=held)


def test_unready_reason() -> None:
    assert unready_reason([], [], True) == "No live worker"
    assert unready_reason([worker()], [], False) is None
    assert unready_reason([worker("a")], ["a", "b", "c"], False) == "No live worker holds `b`, `c`"
    assert unready_reason([worker("a")], ["a", "b"], True) is None
    assert unready_reason([worker("a"), worker("b")], ["a", "b"], False) is None


async def test_ready_needs_a_live_worker(
    client: AsyncTestClient[Any], redis: aioredis.Redis
) -> None:
    resp = await client.get("/ready")  # no API key: public, like /health
    error = error_of(resp, 503)
    assert error["type"] == "service_unavailable" and "No live worker" in error["message"]
    assert resp.headers["retry-after"] == "5"
    await redis.sadd(WORKERS_SET, "dead")  # listed, but its heartbeat has expired
    error_of(await client.get("/ready"), 503)
    await heartbeat(redis, "w1", ("tiny", "ready"))
    resp = await client.get("/ready")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ready", "workers": 1, "models": ["tiny"]}
    health = await client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"


async def test_ready_is_503_and_health_200_when_redis_is_down() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    async with AsyncTestClient(create_app(settings(url))) as client:
        resp = await client.get("/ready")
        assert "Redis" in error_of(resp, 503)["message"]
        assert resp.headers["retry-after"] == "5"
        health = await client.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "redis_down"


async def test_ready_is_public_in_the_schema(client: AsyncTestClient[Any]) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    assert schema["paths"]["/ready"]["get"]["security"] == [{}]
    assert schema["paths"]["/health"]["get"]["security"] == [{}]


@pytest.mark.parametrize("on_demand", [False, True])
async def test_ready_wants_every_registered_model_unless_loaded_on_demand(
    redis_url: str, redis: aioredis.Redis, tmp_path: Path, on_demand: bool
) -> None:
    registry = tmp_path / "models.toml"
    registry.write_text('[models.tiny]\npath = "tiny"\n\n[models.big]\npath = "big"\n')
    models = ModelSettings(models=str(registry), load_on_demand=on_demand)
    cfg = msgspec.structs.replace(settings(redis_url), models=models)
    async with AsyncTestClient(create_app(cfg)) as client:
        await heartbeat(redis, "w1", ("tiny", "ready"))
        resp = await client.get("/ready")
        if on_demand:  # the live worker can load `big` when a request asks for it
            assert resp.status_code == 200, resp.text
        else:
            assert error_of(resp, 503)["message"] == "Not ready: No live worker holds `big`"
        await heartbeat(redis, "w1", ("tiny", "ready"), ("big", "ready"))
        assert (await client.get("/ready")).status_code == 200
