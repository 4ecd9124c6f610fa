"""``JobStore.cancel``, the API's one cancel path, on a real Redis: owner-scoped for
``POST /v1/jobs/{id}/cancel`` and a WebSocket ``cancel``, any owner's for the API's own cancel
of a call its client abandoned."""

from __future__ import annotations

from typing import Any, cast

import pytest
import redis.asyncio as aioredis

from api.services.job_store import JobStore, QueueBounds
from protocol.events import DoneEvent, decode_event
from protocol.jobs import JobSpec, SamplingParams, queued_record
from protocol.keys import events_key, job_key
from protocol.queued import live_key
from protocol.states import JobStatus, Priority

SPEC = JobSpec(kind="completion", model="m", prompt="hi", sampling=SamplingParams(max_tokens=2))


@pytest.fixture
def store(redis: aioredis.Redis) -> JobStore:
    return JobStore(redis, retention_s=600, bounds=QueueBounds(interactive=10, batch=10))


async def submit(store: JobStore, owner: str = "a") -> str:
    record = queued_record(SPEC, owner, Priority.INTERACTIVE)
    return (await store.submit(record)).job_id


async def fields(store: JobStore, job_id: str) -> dict[bytes, bytes]:
    return cast(dict[bytes, bytes], await store.redis.hgetall(job_key(job_id)))


@pytest.mark.parametrize("owner", ["a", None])
async def test_a_queued_job_ends_at_once(store: JobStore, owner: str | None) -> None:
    job_id = await submit(store)
    assert await store.cancel(job_id, owner) == (JobStatus.CANCELLED, 1)
    h = await fields(store, job_id)
    assert (h[b"status"], h[b"cancel"]) == (b"cancelled", b"1")
    assert not await store.redis.zcard(live_key(Priority.INTERACTIVE, "m"))
    entries = cast(list[Any], await store.redis.xrange(events_key(job_id)))
    [(_, entry)] = entries
    event = decode_event(entry[b"data"])
    assert isinstance(event, DoneEvent) and event.finish_reason == "cancelled"


@pytest.mark.parametrize("owner", ["a", None])
async def test_a_running_job_is_flagged_for_its_worker(store: JobStore, owner: str | None) -> None:
    job_id = await submit(store)
    await store.redis.hset(job_key(job_id), "status", "running")
    assert await store.cancel(job_id, owner) == (JobStatus.RUNNING, 0)
    h = await fields(store, job_id)
    assert (h[b"status"], h[b"cancel"]) == (b"running", b"1")


@pytest.mark.parametrize("owner", ["a", None])
async def test_a_finished_job_is_left_as_it_is(store: JobStore, owner: str | None) -> None:
    job_id = await submit(store)
    await store.redis.hset(job_key(job_id), "status", "succeeded")
    assert await store.cancel(job_id, owner) == (JobStatus.SUCCEEDED, 0)
    assert (await fields(store, job_id)).get(b"cancel", b"0") == b"0"


async def test_another_keys_job_is_not_found_and_untouched(store: JobStore) -> None:
    job_id = await submit(store, owner="b")
    assert await store.cancel(job_id, "a") is None
    assert await store.cancel(job_id, "") is None  # no key is not any key
    h = await fields(store, job_id)
    assert (h[b"status"], h.get(b"cancel", b"0")) == (b"queued", b"0")


@pytest.mark.parametrize("owner", ["a", None])
async def test_a_missing_job_is_not_found(store: JobStore, owner: str | None) -> None:
    assert await store.cancel("job-000000000000missing", owner) is None
    assert not await store.redis.exists(job_key("job-000000000000missing"))
