"""The reaper's decisions and the sink's attempt fence, on a real Redis (no worker)."""

from __future__ import annotations

import logging

import msgspec
import pytest
import redis

from protocol.events import StatusEvent, TokenEvent, decode_event
from protocol.keys import LEASES, QUEUED, events_key, job_key
from protocol.meter import token_meter
from protocol.states import JobStatus
from workers.prepare import ResumeState, resume_state
from workers.reaper import Reaper
from workers.requeue import list_of
from workers.sink import JobWrite, RedisSink

TASK = msgspec.json.encode({"properties": {"priority": 6, "delivery_tag": "t1"}}).decode()


def running(sync_redis: redis.Redis, job_id: str, attempt: int = 1, lease_ms: int = -1000) -> None:
    """A job claimed by a worker, whose lease ends ``lease_ms`` from now (Redis time)."""
    sync_redis.hset(
        job_key(job_id),
        mapping={"status": "running", "attempt": attempt, "model": "tiny", "task": TASK},
    )
    seconds, micros = sync_redis.time()
    sync_redis.zadd(LEASES, {job_id: seconds * 1000 + micros // 1000 + lease_ms})


def test_a_lapsed_lease_goes_back_to_the_head_of_its_queue(sync_redis: redis.Redis) -> None:
    running(sync_redis, "j1")
    reaper = Reaper(sync_redis, lease_s=2, max_attempts=3, retention_s=60)
    assert reaper.reap("me") == {"j1": "requeued"}
    fields = sync_redis.hgetall(job_key("j1"))
    assert fields[b"status"] == b"queued" and fields[b"msg"] == TASK.encode()
    queue = list_of("model.tiny", 6)
    assert sync_redis.lrange(queue, -1, -1) == [TASK.encode()]  # kombu pops from the right
    assert sync_redis.zscore(LEASES, "j1") is None


def test_renewed_ended_cancelled_and_capped_jobs(sync_redis: redis.Redis) -> None:
    running(sync_redis, "fresh", lease_ms=60_000)
    running(sync_redis, "ended")
    sync_redis.hset(job_key("ended"), "status", "succeeded")
    running(sync_redis, "cancelled")
    sync_redis.hset(job_key("cancelled"), "cancel", "1")
    running(sync_redis, "capped", attempt=3)
    reaper = Reaper(sync_redis, lease_s=2, max_attempts=3, retention_s=60)
    outcomes = reaper.reap("me")
    assert outcomes == {"ended": "ended", "cancelled": "cancelled", "capped": "failed"}
    assert sync_redis.zscore(LEASES, "fresh") is not None
    capped = sync_redis.hgetall(job_key("capped"))
    assert capped[b"status"] == b"failed"
    assert msgspec.json.decode(capped[b"error"])["code"] == "worker_lost"
    [(_, fields)] = sync_redis.xrange(events_key("capped"))
    assert decode_event(fields[b"data"]).seq == 1
    assert sync_redis.hget(job_key("cancelled"), "status") == b"cancelled"


def test_renew_extends_only_existing_leases(sync_redis: redis.Redis) -> None:
    running(sync_redis, "mine", lease_ms=100)
    reaper = Reaper(sync_redis, lease_s=30, max_attempts=3, retention_s=60)
    before = sync_redis.zscore(LEASES, "mine")
    reaper.renew(["mine", "finished"])
    assert sync_redis.zscore(LEASES, "mine") > before + 20_000  # type: ignore[operator]
    assert sync_redis.zscore(LEASES, "finished") is None


def test_one_reaper_pass_at_a_time(sync_redis: redis.Redis) -> None:
    running(sync_redis, "j")
    sync_redis.set("uml:reaper", "someone else", px=5000)
    assert Reaper(sync_redis, lease_s=2, max_attempts=3, retention_s=60).reap("me") == {}


def test_the_sink_fences_writes_of_an_older_attempt(sync_redis: redis.Redis) -> None:
    running(sync_redis, "j", attempt=2, lease_ms=60_000)
    sink = RedisSink(sync_redis, retention_s=60)
    stale = JobWrite("j", [TokenEvent(seq=1, text="old")], {"text": "old"}, True, attempt=1)
    assert sink.flush([stale], []) == {"j"}  # the stale worker is told to drop the job
    assert sync_redis.xlen(events_key("j")) == 0 and sync_redis.hget(job_key("j"), "text") is None
    current = JobWrite("j", [TokenEvent(seq=1, text="new")], {"text": "new"}, True, attempt=2)
    assert sink.flush([current], []) == set()
    assert sync_redis.hget(job_key("j"), "text") == b"new"
    assert sync_redis.zscore(LEASES, "j") is None  # the final write ends the lease


def test_resume_state_has_the_logged_token_ids(sync_redis: redis.Redis) -> None:
    """Token events carry their ids in the stream entry; the next attempt forces exactly
    those (a text re-encode could differ), and a log without them falls back to text."""
    running(sync_redis, "r", lease_ms=60_000)
    sink = RedisSink(sync_redis, retention_s=60)
    events = [
        StatusEvent(seq=1, status=JobStatus.RUNNING, attempt=1, worker="w"),
        TokenEvent(seq=2, text="ab", tokens=2),
        TokenEvent(seq=3, text="\ufffd", tokens=1),
    ]
    ids = {2: [70, 71], 3: [200]}
    assert sink.flush([JobWrite("r", events, {}, False, 1, ids)], []) == set()
    assert resume_state(sync_redis, "r", 3) == ResumeState("ab\ufffd", 3, [70, 71, 200])
    assert resume_state(sync_redis, "r", 2) == ResumeState("ab", 2, [70, 71])
    entry = sync_redis.xrange(events_key("r"), "2-1", "2-1")[0][1]
    assert decode_event(entry[b"data"]) == events[1]  # what clients read is unchanged
    sync_redis.xadd(events_key("r"), {"data": b'{"type":"token","seq":4,"text":"c"}'}, id="4-1")
    assert resume_state(sync_redis, "r", 4) == ResumeState("ab\ufffdc", 4, None)


def test_a_final_write_charges_the_jobs_tokens_to_its_meter_once(sync_redis: redis.Redis) -> None:
    running(sync_redis, "m", lease_ms=60_000)
    sink = RedisSink(sync_redis, retention_s=60)
    meter = token_meter("key-1")
    partial = JobWrite("m", [], {"prompt_tokens": 5, "completion_tokens": 3}, False, 1)
    sink.flush([partial], [])
    assert not sync_redis.exists(meter)  # a handed-back or running job pays at its end
    done = {"status": "succeeded", "completion_tokens": 9}
    final = JobWrite("m", [], done, True, 1, meter=meter)
    sink.flush([final], [])
    sink.flush([final], [])  # a retried flush (the reply was lost) charges nothing more
    assert sync_redis.hget(meter, "c") == b"14"
    running(sync_redis, "b", lease_ms=60_000)  # a batch line carries no meter
    sink.flush([JobWrite("b", [], {"completion_tokens": 50}, True, 1)], [])
    assert sync_redis.hget(meter, "c") == b"14"


def test_the_sweep_restores_a_queued_job_whose_message_vanished(sync_redis: redis.Redis) -> None:
    queue = list_of("model.tiny", 6)
    for job_id in ("lost", "waiting", "delivered"):
        sync_redis.hset(job_key(job_id), mapping={"status": "queued", "model": "tiny"})
        sync_redis.zadd(QUEUED, {job_id: 0})  # unseen since the epoch
    lost, waiting = TASK.replace("t1", "t-lost"), TASK.replace("t1", "t-wait")
    delivered = TASK.replace("t1", "t-held")
    sync_redis.hset(job_key("lost"), "msg", lost)
    sync_redis.hset(job_key("waiting"), "msg", waiting)
    sync_redis.hset(job_key("delivered"), "msg", delivered)
    sync_redis.lpush(queue, waiting)
    sync_redis.hset("unacked", "t-held", "[]")
    reaper = Reaper(sync_redis, lease_s=2, max_attempts=3, retention_s=60)
    assert reaper.reap("me") == {"lost": "restored"}
    assert sync_redis.lrange(queue, 0, -1) == [waiting.encode(), lost.encode()]
    assert reaper.reap("me") == {}  # seen now: not looked at again for a while


def test_the_sweep_restores_a_message_delivered_long_ago_but_never_claimed(
    sync_redis: redis.Redis,
) -> None:
    """A worker that died with a message prefetched, or dropped it on a broker disconnect,
    leaves it in kombu's unacked set for the visibility timeout (days): the sweep pushes
    the job back once the delivery is older than the orphan age, and keeps a fresh one."""
    queue = list_of("model.tiny", 6)
    seconds, _ = sync_redis.time()
    for job_id, delivered_at in (("stranded", seconds - 60), ("fresh", seconds - 1)):
        msg = TASK.replace("t1", f"t-{job_id}")
        sync_redis.hset(job_key(job_id), mapping={"status": "queued", "model": "tiny", "msg": msg})
        sync_redis.zadd(QUEUED, {job_id: 0})
        sync_redis.hset("unacked", f"t-{job_id}", "[]")
        sync_redis.zadd("unacked_index", {f"t-{job_id}": delivered_at})
    reaper = Reaper(sync_redis, lease_s=2, max_attempts=3, retention_s=60)  # orphan age: 4 s
    assert reaper.reap("me") == {"stranded": "stranded"}
    assert sync_redis.lrange(queue, 0, -1) == [TASK.replace("t1", "t-stranded").encode()]
    assert sync_redis.hkeys("unacked") == [b"t-fresh"]
    assert sync_redis.zrange("unacked_index", 0, -1) == [b"t-fresh"]


def test_worker_log_lines_about_a_job_carry_its_id(
    sync_redis: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """The JSON log's ``job_id`` (api/logs.py's filter keeps an id a line brings along)."""
    running(sync_redis, "h", lease_ms=60_000)
    with caplog.at_level(logging.INFO, logger="workers.reaper"):
        Reaper(sync_redis, lease_s=30, max_attempts=3, retention_s=60).hand_back("h", 1)
    [record] = [r for r in caplog.records if "handed back" in r.getMessage()]
    assert getattr(record, "job_id", None) == "h"
