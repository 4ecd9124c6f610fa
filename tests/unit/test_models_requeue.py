"""A job that reaches a worker after its model was unloaded goes back to its queue."""

from __future__ import annotations

from collections.abc import Iterator

import msgspec
import pytest
import redis

from api.enqueue import queue_list, task_message
from protocol.keys import CELERY_PRIORITY_BATCH, TASK_GENERATE, job_key, queue_name
from protocol.settings import RedisSettings, ServerSettings, Settings, WorkerSettings
from workers.runtime import Runtime


@pytest.fixture
def runtime(redis_url: str) -> Iterator[Runtime]:
    settings = Settings(
        redis=RedisSettings(url=redis_url), server=ServerSettings(), worker=WorkerSettings()
    )
    made = Runtime(settings, slots=2)
    yield made
    made.redis.close()


def _queued(client: redis.Redis, job_id: str, priority: int) -> bytes:
    message = task_message(TASK_GENERATE, job_id, [job_id], queue_name("gone"), priority)
    client.hset(job_key(job_id), mapping={"status": "queued", "model": "gone", "msg": message})
    return message


@pytest.mark.parametrize("priority", [0, CELERY_PRIORITY_BATCH])
def test_a_job_for_a_model_not_held_is_requeued_at_the_head(
    runtime: Runtime, redis_url: str, priority: int
) -> None:
    client = redis.Redis.from_url(redis_url)
    target = queue_list(queue_name("gone"), priority)
    client.lpush(target, b"older")
    before = _queued(client, "job-1", priority)
    assert runtime.run_job("job-1", "gone") == "requeued"
    assert client.hget(job_key("job-1"), "status") == b"queued"
    moved = client.hget(job_key("job-1"), "msg")
    assert client.lrange(target, 0, -1) == [b"older", moved]  # kombu pops from the right
    old, new = msgspec.json.decode(before), msgspec.json.decode(moved or b"{}")
    assert new["properties"]["delivery_tag"] != old["properties"]["delivery_tag"]
    assert new["headers"] == old["headers"] and new["body"] == old["body"]
    client.close()


def test_the_model_comes_from_the_job_when_the_queue_is_unknown(
    runtime: Runtime, redis_url: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    _queued(client, "job-2", 0)
    assert runtime.run_job("job-2") == "requeued"
    assert client.llen(queue_list(queue_name("gone"), 0)) == 1
    client.close()


def test_a_job_no_longer_queued_is_left_alone(runtime: Runtime, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    _queued(client, "job-3", 0)
    client.hset(job_key("job-3"), "status", "running")
    client.hdel(job_key("job-3"), "msg")
    assert runtime.run_job("job-3", "gone") == "skip"
    assert client.llen(queue_list(queue_name("gone"), 0)) == 0
    client.close()
