"""The API's model admin against a real Redis: what a load sends, overview, operations."""

from __future__ import annotations

import msgspec
import pytest
import redis.asyncio as aioredis

from api.errors import APIError
from api.services.job_store import model_lists
from api.services.model_ops import ModelAdmin
from protocol.keys import model_op_key
from protocol.models import LoadModelRequest, ModelOp, UnloadModelRequest
from protocol.settings import RedisSettings, ServerSettings, Settings, WorkerSettings
from protocol.workers import ModelState, WorkerInfo


def worker(wid: str, free: int, *held: tuple[str, str]) -> WorkerInfo:
    return WorkerInfo(
        id=wid,
        host="h",
        pid=1,
        slots=4,
        memory_free=free,
        memory_total=100,
        registered=["a", "b"],
        models=[ModelState(name=n, engine="torch", device="cpu", state=s) for n, s in held],  # type: ignore[arg-type]
    )


@pytest.fixture
def admin(redis: aioredis.Redis, redis_url: str) -> ModelAdmin:
    settings = Settings(
        redis=RedisSettings(url=redis_url), server=ServerSettings(), worker=WorkerSettings()
    )
    return ModelAdmin(redis, settings)


async def _stored(redis: aioredis.Redis, op: ModelOp) -> ModelOp:
    raw = await redis.get(model_op_key(op.id))
    assert raw is not None
    return msgspec.json.decode(raw, type=ModelOp)


async def test_a_model_already_ready_answers_its_holder(
    admin: ModelAdmin, redis: aioredis.Redis
) -> None:
    workers = [worker("w1", 10, ("a", "ready")), worker("w2", 90)]
    op = await admin.load(LoadModelRequest(model="a"), workers)
    assert (op.worker, op.state, op.done) == ("w1", "ready", True)
    assert (await _stored(redis, op)).state == "ready"


async def test_a_holder_that_is_unloading_does_not_count(
    admin: ModelAdmin, redis: aioredis.Redis
) -> None:
    workers = [worker("w1", 90, ("a", "unloading")), worker("w2", 10)]
    op = await admin.load(LoadModelRequest(model="a"), workers)
    assert (op.worker, op.state) == ("w2", "pending")
    assert (await admin.read_op(op.id, workers)) == op


async def test_unload_targets_every_holder_or_is_404(admin: ModelAdmin) -> None:
    workers = [worker("w1", 1, ("a", "ready")), worker("w2", 1, ("a", "loading")), worker("w3", 1)]
    ops = await admin.unload(UnloadModelRequest(model="a"), workers)
    assert sorted(op.worker for op in ops) == ["w1", "w2"]
    with pytest.raises(APIError) as info:
        await admin.unload(UnloadModelRequest(model="b"), workers)
    assert (info.value.status, info.value.info.code) == (404, "model_not_loaded")


async def test_overview_counts_queued_jobs_per_model(
    admin: ModelAdmin, redis: aioredis.Redis
) -> None:
    lists = model_lists("a")
    await redis.lpush(lists[0], "m1", "m2")
    await redis.lpush(lists[-1], "m3")
    view = await admin.overview([worker("w1", 5, ("a", "ready"))])
    by_name = {m.name: m for m in view.models}
    assert (by_name["a"].queued, by_name["a"].ready, by_name["b"].queued) == (3, True, 0)
    assert by_name["b"].registered and not by_name["b"].ready
    assert [w.id for w in view.workers] == ["w1"]
