"""Key shares of a model's slots (workers.fairness): the rule, the lane's use of it, and
the script that finds a waiting key's job (on a real Redis)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import redis
import redis.asyncio as aioredis

from api.services.job_store import JobStore, QueueBounds
from protocol.jobs import JobSpec, SamplingParams, queued_record
from protocol.queued import keys_index_key
from protocol.settings import WorkerSettings
from protocol.states import Priority
from workers.fairness import Finder, KeyShares, Verdict, decide, reserve_slots
from workers.lane import Lane, LanePolicy

SPEC = JobSpec(kind="completion", model="m", prompt="hi", sampling=SamplingParams(max_tokens=2))


def test_decide() -> None:
    # slots 16, reserve 2: three keys share the 14 others, 4 each.
    assert decide(16, 2, free=0, held=0, keys=1) == Verdict(False)
    assert decide(16, 2, free=1, held=0, keys=4) == Verdict(True)  # a new key: the reserve
    assert decide(16, 2, free=2, held=5, keys=3) == Verdict(False, 1)  # only new keys now
    assert decide(16, 2, free=5, held=3, keys=3) == Verdict(True)  # under its share
    assert decide(16, 2, free=5, held=4, keys=3) == Verdict(True, 4)  # at it: others first
    assert decide(16, 2, free=1, held=15, keys=1) == Verdict(True)  # alone: every slot
    assert decide(4, 0, free=1, held=2, keys=2) == Verdict(True, 2)  # no reserve


def test_reserve_slots() -> None:
    assert [reserve_slots(n, -1) for n in (2, 4, 8, 16, 32)] == [0, 0, 1, 2, 4]
    assert reserve_slots(16, 3) == 3 and reserve_slots(4, 0) == 0
    assert reserve_slots(4, 10) == 3  # one slot always left to the keys holding some


def test_key_shares_count_per_model() -> None:
    shares = KeyShares()
    for owner in ("a", "a", "b"):
        shares.hold("m", owner)
    shares.hold("n", "a")
    assert shares.held("m") == {"a": 2, "b": 1}
    # 8 slots, 1 kept for new keys: "c" is new; "a" holds slots, so may not take the last
    assert shares.verdict("m", "c", slots=8, reserve=1, free=1) == Verdict(True)
    assert shares.verdict("m", "a", slots=8, reserve=1, free=1) == Verdict(False, 1)
    # keys with queued jobs count too: a, b and c share 7, 2 each
    waiting = frozenset({"c"})
    assert shares.verdict("m", "a", slots=8, reserve=1, free=4, waiting=waiting) == Verdict(True, 2)
    shares.release("m", "b")
    assert dict(shares.held("m")) == {"a": 2}
    alone = shares.verdict("m", "a", slots=8, reserve=1, free=1)
    assert alone == Verdict(True)  # a key alone on the model takes every slot


def lane(slots: int, reserve: int) -> Lane[SimpleNamespace]:
    worker = WorkerSettings(interactive_slots=0, key_reserve_slots=reserve)
    models = {"m": SimpleNamespace(state="ready", inflight=0, batch_inflight=0)}
    return Lane(LanePolicy.of(slots, worker), threading.Lock(), models)


def test_the_last_slots_wait_for_a_new_key_once_keys_share_the_model() -> None:
    ln = lane(slots=16, reserve=2)
    b_waits = frozenset({"b"})
    for _ in range(14):
        assert ln.take("m", True, "a", b_waits) is not None
    assert ln.take("m", True, "a", b_waits) is None  # the last two are kept
    assert ln.take("m", True, "b", b_waits) is not None
    assert ln.take("m", True, "c") is not None
    assert ln.take("m", True, "d") is None  # full
    assert dict(ln.shares.held("m")) == {"a": 14, "b": 1, "c": 1}


def test_a_key_alone_takes_every_slot() -> None:
    ln = lane(slots=16, reserve=2)
    for _ in range(16):
        assert ln.take("m", True, "a") is not None


async def test_finder_takes_the_longest_waiting_key_short_of_its_share(
    redis: aioredis.Redis, sync_redis: redis.Redis
) -> None:
    store = JobStore(redis, retention_s=600, bounds=QueueBounds(interactive=50, batch=50))

    async def submit(owner: str) -> str:
        return (await store.submit(queued_record(SPEC, owner, Priority.INTERACTIVE))).job_id

    a1, b1, b2, c1 = [await submit(o) for o in ("a", "b", "b", "c")]
    finder = Finder(sync_redis)
    found = finder.find("m", True, {"a": 3, "b": 1}, below=2)
    assert found in ((b1, "b"), (b2, "b"))  # b's oldest (two in one millisecond tie)
    assert finder.find("m", True, {"a": 3, "b": 1}, below=1) == (c1, "c")  # new keys only
    assert finder.find("m", True, {"a": 0}, below=1) == (a1, "a")
    assert finder.find("m", False, {}, below=1) is None  # no batch job queued
    await store.cancel(c1, "c")
    assert finder.find("m", True, {"a": 3, "b": 1}, below=1) is None
    members = sync_redis.zrange(keys_index_key(Priority.INTERACTIVE, "m"), 0, -1)
    assert members == [b"a", b"b"]


async def test_a_task_over_its_share_takes_a_waiting_keys_job(
    redis: aioredis.Redis, sync_redis: redis.Redis
) -> None:
    store = JobStore(redis, retention_s=600, bounds=QueueBounds(interactive=50, batch=50))
    ln, finder = lane(slots=4, reserve=1), Finder(sync_redis)

    def find(held: dict[str, int], below: int) -> tuple[str, str] | None:
        return finder.find("m", True, held, below)

    for _ in range(3):
        assert ln.take("m", True, "a") is not None
    assert ln.take_for_another("m", True, "a", frozenset(), find) is None  # nobody waits
    job_id = (await store.submit(queued_record(SPEC, "d", Priority.INTERACTIVE))).job_id
    meta = finder.meta(job_id, "m", True)
    assert (meta.model, meta.owner, meta.waiting) == ("m", "d", frozenset({"d"}))
    taken = ln.take_for_another("m", True, "a", meta.waiting, find)
    assert taken is not None and taken[1:] == (job_id, "d")
    assert dict(ln.shares.held("m")) == {"a": 3, "d": 1}
    assert ln.take_for_another("m", True, "a", meta.waiting, find) is None  # no slot left
