"""The live queued count (protocol.queued) on a real Redis: exact through every path a job
takes into and out of ``queued``, and the bounds it enforces exact too."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator

import msgspec
import pytest
import redis
import redis.asyncio as aioredis

from api.services.job_store import JobStore, KeyShareFull, QueueBounds, QueueFull
from protocol.jobs import JobSpec, SamplingParams, queued_record
from protocol.keys import LEASES, QUEUED, job_key, queue_name
from protocol.queued import key_live_key, keys_index_key, live_key
from protocol.settings import RedisSettings, ServerSettings, Settings, WorkerSettings
from protocol.states import Priority
from workers.requeue import Requeuer, list_of
from workers.runtime import Runtime

MODEL = "m"
SPEC = JobSpec(kind="completion", model=MODEL, prompt="hi", sampling=SamplingParams(max_tokens=2))
WIDE = QueueBounds(interactive=100, batch=100, share=1.0)


@pytest.fixture
async def store(redis: aioredis.Redis) -> AsyncIterator[JobStore]:
    yield JobStore(redis, retention_s=600, bounds=WIDE)


async def submit(
    store: JobStore, owner: str, priority: Priority = Priority.INTERACTIVE, **extra: float
) -> str:
    record = queued_record(SPEC, owner, priority, deadline=extra.get("deadline"))
    return (await store.submit(record)).job_id


def truth(client: redis.Redis) -> Counter[tuple[str, str]]:
    """(priority, owner) of every job whose record says ``queued``, read off the records."""
    found: Counter[tuple[str, str]] = Counter()
    for key in client.scan_iter("uml:job:*"):
        if key.endswith(b":events"):
            continue
        status, priority, owner = client.hmget(key, ["status", "priority", "owner"])
        if status == b"queued":
            found[(priority.decode(), owner.decode())] += 1  # type: ignore[union-attr]
    return found


def assert_exact(client: redis.Redis) -> None:
    expected = truth(client)
    for priority in Priority:
        total = sum(n for (p, _), n in expected.items() if p == priority.value)
        assert client.zcard(live_key(priority, MODEL)) == total, priority
        owners = {o for (p, o), n in expected.items() if p == priority.value and n}
        index = {m.decode() for m in client.zrange(keys_index_key(priority, MODEL), 0, -1)}
        assert index == owners, priority
        for owner in owners | {"a", "b"}:
            mine = client.zcard(key_live_key(priority, owner, MODEL))
            assert mine == expected[(priority.value, owner)], (priority, owner)


def worker(redis_url: str) -> Runtime:
    settings = Settings(
        redis=RedisSettings(url=redis_url, retention_s=600),
        server=ServerSettings(),
        worker=WorkerSettings(lease_s=1),
    )
    return Runtime(settings, slots=4)


async def test_the_count_is_exact_through_every_path(
    store: JobStore, sync_redis: redis.Redis, redis_url: str
) -> None:
    a = [await submit(store, "a") for _ in range(4)]
    b = [await submit(store, "b") for _ in range(2)]
    batch = [await submit(store, "a", Priority.BATCH) for _ in range(3)]
    late = await submit(store, "b", deadline=time.time() - 1)
    assert_exact(sync_redis)
    assert (await store.cancel(a[0], "a")) is not None  # cancel, as POST /v1/jobs/{id}/cancel
    assert (await store.cancel(a[0], "a")) is not None  # twice changes nothing
    await store.cancel(b[0], None)  # a sync call's client went away
    await store.read(late, "b")  # expires it
    assert_exact(sync_redis)
    rt = worker(redis_url)
    try:
        assert rt.claimer.claim(a[1]).outcome == "claimed"
        assert rt.claimer.claim(a[1]).outcome == "skip:running"
        assert rt.claimer.claim(a[0]).outcome == "skip:cancelled"
        assert rt.claimer.claim(batch[0]).outcome == "claimed"
        assert_exact(sync_redis)
        # Its worker died: the lease lapses and the reaper puts the job back in the queue.
        sync_redis.zadd(LEASES, {a[1]: 0})
        assert rt.reaper.reap("test") == {a[1]: "requeued"}
        assert_exact(sync_redis)
        assert rt.claimer.claim(a[1]).outcome == "claimed"
        # A worker shutting down hands a running job back.
        assert rt.reaper.hand_back(batch[0], 1) == "handed_back"
        assert_exact(sync_redis)
        assert rt.claimer.claim(batch[0]).outcome == "claimed"
        assert_exact(sync_redis)
    finally:
        rt.redis.close()


async def test_the_orphan_sweep_repairs_a_count_that_drifted(
    store: JobStore, sync_redis: redis.Redis, redis_url: str
) -> None:
    kept = await submit(store, "a")
    gone = await submit(store, "a")
    await store.cancel(gone, "a")
    sync_redis.zrem(live_key(Priority.INTERACTIVE, MODEL), kept)  # drifted: a queued job uncounted
    sync_redis.zadd(live_key(Priority.INTERACTIVE, MODEL), {gone: 1})  # and a cancelled one counted
    sync_redis.zadd(QUEUED, {kept: 0, gone: 0})  # both look long-queued to the sweep
    rt = worker(redis_url)
    try:
        rt.reaper.reap("test")
    finally:
        rt.redis.close()
    assert_exact(sync_redis)


async def test_a_message_in_a_workers_hands_still_counts(
    redis: aioredis.Redis, sync_redis: redis.Redis
) -> None:
    """The bound reached 10,001: a message popped by a worker was in no list, so ``LLEN``
    admitted one more, then the interactive lane gave the popped one back."""
    store = JobStore(redis, retention_s=600, bounds=QueueBounds(interactive=3, batch=3))
    for _ in range(3):
        await submit(store, "a", Priority.BATCH)
    queue = list_of(queue_name(MODEL), 6)
    popped = sync_redis.rpop(queue)  # a worker fetched one (kombu pops from the right)
    assert popped is not None
    with pytest.raises(QueueFull):
        await submit(store, "b", Priority.BATCH)
    job_id = msgspec.json.decode(popped)["headers"]["id"]
    assert Requeuer(sync_redis).give_back(job_id, MODEL) == "requeued"  # the lane gives it back
    assert sync_redis.zcard(live_key(Priority.BATCH, MODEL)) == 3
    assert sync_redis.llen(queue) == 3


async def test_concurrent_submissions_stop_exactly_at_the_bound(redis: aioredis.Redis) -> None:
    store = JobStore(redis, retention_s=600, bounds=QueueBounds(interactive=25, batch=25))
    outcomes = await asyncio.gather(
        *(submit(store, f"k{i % 5}") for i in range(40)), return_exceptions=True
    )
    assert sum(isinstance(o, str) for o in outcomes) == 25
    assert all(isinstance(o, QueueFull) for o in outcomes if not isinstance(o, str))
    assert await redis.zcard(live_key(Priority.INTERACTIVE, MODEL)) == 25


async def test_bounds_are_per_priority_and_shares_per_key(redis: aioredis.Redis) -> None:
    store = JobStore(redis, retention_s=600, bounds=QueueBounds(interactive=4, batch=4, share=0.5))
    assert store.bounds.per_key(Priority.BATCH) == 2
    for owner in ("a", "a", "b", "b"):
        await submit(store, owner, Priority.BATCH)
    with pytest.raises(KeyShareFull) as share:
        await submit(store, "a", Priority.BATCH)
    assert (share.value.queued, share.value.limit) == (2, 2)
    with pytest.raises(QueueFull) as full:
        await submit(store, "c", Priority.BATCH)
    assert not isinstance(full.value, KeyShareFull) and full.value.limit == 4
    await submit(store, "a")  # the batch backlog takes none of interactive work's room
    await submit(store, "c")
    assert QueueBounds(interactive=3, batch=3, share=0.1).per_key(Priority.BATCH) == 1


async def test_stale_members_are_trimmed_at_submission(
    redis: aioredis.Redis, sync_redis: redis.Redis
) -> None:
    """A member older than the retention is a job whose record expired: it holds no room."""
    store = JobStore(redis, retention_s=60, bounds=QueueBounds(interactive=1, batch=1))
    sync_redis.zadd(live_key(Priority.INTERACTIVE, MODEL), {"job-gone": 1})
    sync_redis.zadd(key_live_key(Priority.INTERACTIVE, "a", MODEL), {"job-gone": 1})
    await submit(store, "a")
    assert sync_redis.zrange(key_live_key(Priority.INTERACTIVE, "a", MODEL), 0, -1) != [b"job-gone"]
    assert sync_redis.zcard(live_key(Priority.INTERACTIVE, MODEL)) == 1
    assert sync_redis.ttl(live_key(Priority.INTERACTIVE, MODEL)) > 0
    assert sync_redis.hget(job_key("job-gone"), "status") is None
