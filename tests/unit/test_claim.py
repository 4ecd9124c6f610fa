"""The worker's claim (workers.claim): its script and its answer, on a real Redis."""

from __future__ import annotations

import time

import msgspec
import pytest
import redis

from protocol.events import decode_event, expired_unstarted
from protocol.jobs import JobRecord, record_to_hash
from protocol.keys import LEASES, QUEUED, events_key, job_key
from protocol.states import JobStatus
from workers.claim import Claim, Claimer


@pytest.fixture
def claimer(sync_redis: redis.Redis) -> Claimer:
    return Claimer(sync_redis, "w-1", lease_s=15, retention_s=600)


def queued(sync_redis: redis.Redis, job_id: str, **fields: str | float) -> None:
    record = JobRecord(id=job_id, model="m", status=JobStatus.QUEUED)
    sync_redis.hset(job_key(job_id), mapping=record_to_hash(record))  # type: ignore[arg-type]
    sync_redis.hset(job_key(job_id), mapping={"msg": "m", **fields})


def test_claim_script_expires_a_job_past_its_deadline(
    sync_redis: redis.Redis, claimer: Claimer
) -> None:
    now = time.time()
    queued(sync_redis, "late", deadline=now - 1)
    queued(sync_redis, "ok", deadline=now + 60)
    assert claimer.claim("late")[:3] == ("expired", 0, 1)
    fields = sync_redis.hgetall(job_key("late"))
    assert fields[b"status"] == b"expired" and b"msg" not in fields
    assert b"started_at" not in fields and 0 < sync_redis.ttl(job_key("late")) <= 600
    [(entry_id, data)] = sync_redis.xrange(events_key("late"))
    assert entry_id == b"1-1"
    assert decode_event(data[b"data"]) == msgspec.structs.replace(expired_unstarted(), seq=1)
    assert claimer.claim("late").outcome == "skip:expired"
    assert sync_redis.zscore(LEASES, "late") is None
    sync_redis.zadd(QUEUED, {"ok": 1})
    assert claimer.claim("ok")[:2] == ("claimed", 1)
    assert sync_redis.hget(job_key("ok"), "msg") is None
    assert sync_redis.hget(job_key("ok"), "task") == b"m"  # the reaper re-sends it
    assert sync_redis.zscore(LEASES, "ok") is not None
    assert sync_redis.zscore(QUEUED, "ok") is None


def test_a_claim_answers_the_spec_the_meter_and_the_last_seq(
    sync_redis: redis.Redis, claimer: Claimer
) -> None:
    queued(sync_redis, "j", spec='{"kind": "completion"}', meter="uml:meter:k")
    sync_redis.xadd(events_key("j"), {"data": "{}"}, id="3-1")  # an earlier attempt's log
    assert claimer.claim("j") == Claim("claimed", 1, 3, b'{"kind": "completion"}', "uml:meter:k")
    assert sync_redis.hget(job_key("j"), "worker") == b"w-1"
    assert claimer.claim("j") == Claim("skip:running", 0, 3, None, None)


def test_a_cancelled_or_missing_job_is_not_claimed(
    sync_redis: redis.Redis, claimer: Claimer
) -> None:
    queued(sync_redis, "c", cancel="1")
    assert claimer.claim("c") == Claim("cancelled", 0, 0, None, None)
    assert sync_redis.hget(job_key("c"), "status") == b"cancelled"
    assert claimer.claim("nope") == Claim("missing", 0, 0, None, None)
