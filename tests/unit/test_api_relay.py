"""The stream relay against a real Redis; the test itself plays the worker with XADD."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from api.relay import QUEUE_SIZE, Relay, RelayUnavailable, Subscription
from protocol.events import DoneEvent, Event, TokenEvent, encode_event, is_final
from protocol.keys import EVENT_FIELD, entry_id, events_key
from protocol.openai import Usage
from uml.redis_server import free_port

USAGE = Usage(prompt_tokens=1, completion_tokens=1, total_tokens=2)
BLOCK_MS = 2000


@pytest.fixture
async def relay(redis_url: str) -> AsyncIterator[Relay]:
    relay = Relay(redis_url, block_ms=BLOCK_MS, socket_timeout_s=5)
    await relay.start()
    yield relay
    await relay.stop()


async def emit(redis: aioredis.Redis, job_id: str, seq: int, final: bool = False) -> None:
    event: Event = (
        DoneEvent(seq=seq, finish_reason="stop", usage=USAGE)
        if final
        else TokenEvent(seq=seq, text=f"t{seq}")
    )
    await redis.xadd(events_key(job_id), {EVENT_FIELD: encode_event(event)}, id=entry_id(seq))


async def wait_blocked(redis: aioredis.Redis) -> None:
    """Wait until some client (the relay's reader) is blocked in XREAD."""
    async with asyncio.timeout(5):
        while not any("b" in c["flags"] and c["cmd"] == "xread" for c in await redis.client_list()):
            await asyncio.sleep(0.005)


async def drain(sub: Subscription, timeout: float = 10) -> list[int]:
    seqs: list[int] = []
    async with asyncio.timeout(timeout):
        async for event in sub.events():
            assert event is not None
            seqs.append(event.seq)
    return seqs


async def test_late_subscribers_get_the_whole_log(relay: Relay, redis: aioredis.Redis) -> None:
    for seq in range(1, 5):
        await emit(redis, "j1", seq, final=seq == 4)
    assert await drain(await relay.subscribe("j1")) == [1, 2, 3, 4]
    assert await drain(await relay.subscribe("j1", after_seq=2)) == [3, 4]
    assert relay.subscriber_count == 0


async def test_live_and_late_subscribers_share_a_key(relay: Relay, redis: aioredis.Redis) -> None:
    early = await relay.subscribe("j2")
    await emit(redis, "j2", 1)
    await emit(redis, "j2", 2)
    assert (await early.get(5)) == TokenEvent(seq=1, text="t1")
    late = await relay.subscribe("j2", after_seq=1)
    await emit(redis, "j2", 3, final=True)
    assert await drain(early) == [2, 3]
    assert await drain(late) == [2, 3]


async def test_new_subscription_wakes_the_blocked_reader(
    relay: Relay, redis: aioredis.Redis
) -> None:
    latencies = []
    for i in range(20):
        await wait_blocked(redis)  # the reader sits in XREAD BLOCK without this job's key
        job = f"wake{i}"
        await emit(redis, job, 1, final=True)
        start = time.perf_counter()
        sub = await relay.subscribe(job)
        assert await drain(sub) == [1]
        latencies.append(time.perf_counter() - start)
    latencies.sort()
    assert latencies[-1] < BLOCK_MS / 1000 / 4, latencies
    assert latencies[len(latencies) // 2] < 0.005, latencies


async def test_many_subscribers_interleaved(relay: Relay, redis: aioredis.Redis) -> None:
    jobs = [f"m{i}" for i in range(40)]
    subs = [await relay.subscribe(job, after_seq=k) for job in jobs for k in (0, 3)]
    for seq in range(1, 11):
        for job in jobs:
            await emit(redis, job, seq, final=seq == 10)
    results = await asyncio.gather(*(drain(sub) for sub in subs))
    for i, seqs in enumerate(results):
        assert seqs == list(range(1 if i % 2 == 0 else 4, 11))
    assert relay.subscriber_count == 0


async def test_slow_subscriber_is_paused_not_dropped(relay: Relay, redis: aioredis.Redis) -> None:
    total = QUEUE_SIZE * 3
    slow = await relay.subscribe("slow")
    fast = await relay.subscribe("slow")
    fast_task = asyncio.create_task(drain(fast))
    async with redis.pipeline(transaction=False) as pipe:
        for seq in range(1, total + 1):
            event: Event = (
                DoneEvent(seq=seq, finish_reason="stop", usage=USAGE)
                if seq == total
                else TokenEvent(seq=seq, text="x")
            )
            pipe.xadd(events_key("slow"), {EVENT_FIELD: encode_event(event)}, id=entry_id(seq))
        await pipe.execute()
    assert await fast_task == list(range(1, total + 1))
    async with asyncio.timeout(5):
        while not slow.paused:
            await asyncio.sleep(0.01)
    assert slow.queue.qsize() == QUEUE_SIZE
    assert await drain(slow) == list(range(1, total + 1))


async def test_idle_ticks(relay: Relay, redis: aioredis.Redis) -> None:
    sub = await relay.subscribe("idle")
    events = sub.events(idle_s=0.05)
    assert await anext(events) is None
    await emit(redis, "idle", 1, final=True)
    async with asyncio.timeout(5):
        event = await anext(events)
        while event is None:
            event = await anext(events)
    assert is_final(event)


async def test_redis_down_fails_subscribers_clearly() -> None:
    relay = Relay(
        f"redis://127.0.0.1:{free_port()}/0", block_ms=100, socket_timeout_s=1, fail_after_s=0.3
    )
    await relay.start()
    try:
        sub = await relay.subscribe("gone")
        with pytest.raises(RelayUnavailable):
            await drain(sub)
    finally:
        await relay.stop()


def test_block_must_stay_below_socket_timeout() -> None:
    with pytest.raises(ValueError):
        Relay("redis://127.0.0.1:1/0", block_ms=5000, socket_timeout_s=5)
