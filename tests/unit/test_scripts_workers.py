"""The workers' Redis scripts (protocol/scripts/), each called directly on the real Redis with
the KEYS and ARGV its header names: its answer and its writes for the main cases."""

from __future__ import annotations

from typing import Any

import msgspec
import redis

from protocol.events import StatusEvent, TokenEvent, decode_event, encode_event, template
from protocol.events import cancelled_unstarted as cancelled_event
from protocol.events import expired_unstarted as expired_event
from protocol.keys import LEASES, QUEUED, events_key, job_key
from protocol.meter import token_meter
from protocol.queued import key_live_parts, keys_index_key
from tests.unit.scripts_on_redis import (
    CANCELLED,
    EVENTS,
    EXPIRED,
    JOB,
    LIVE,
    MINE,
    now_ms,
    run,
)

LIST = "model.m"
OWNERS = keys_index_key("batch", "m")


def job(sync_redis: redis.Redis, status: str, **fields: str | int | float) -> None:
    base = {"id": "j", "model": "m", "priority": "batch", "owner": "k", "status": status}
    sync_redis.hset(JOB, mapping={**base, **fields})


def live(sync_redis: redis.Redis) -> tuple[bool, bool, bool]:
    """Whether the job is in its model's live queued set, its key's, and the key in the index."""
    return (
        sync_redis.zscore(LIVE, "j") is not None,
        sync_redis.zscore(MINE, "j") is not None,
        sync_redis.zscore(OWNERS, "k") is not None,
    )


def mark_live(sync_redis: redis.Redis) -> None:
    sync_redis.zadd(LIVE, {"j": 1})
    sync_redis.zadd(MINE, {"j": 1})
    sync_redis.zadd(OWNERS, {"k": 1})


def log(sync_redis: redis.Redis, key: str = EVENTS) -> list[tuple[bytes, Any]]:
    return [(entry, decode_event(f[b"data"])) for entry, f in sync_redis.xrange(key)]


# ---- claim_job-4 -------------------------------------------------------------------------


def claim(sync_redis: redis.Redis, now: int = 1000) -> list[Any]:
    args = ["w-1", now, EXPIRED, 600, 15_000, "j"]
    return list(run(sync_redis, "claim_job", [JOB, EVENTS, LEASES, QUEUED], args))


def test_claim_job_claims_a_queued_job_once(sync_redis: redis.Redis) -> None:
    job(sync_redis, "queued", msg="M", spec="S", meter="W")
    mark_live(sync_redis)
    sync_redis.zadd(QUEUED, {"j": 1})
    sync_redis.xadd(EVENTS, {"data": "{}"}, id="2-1")
    before = now_ms(sync_redis)
    assert claim(sync_redis) == [b"claimed", 1, 2, b"S", b"W"]
    fields = sync_redis.hgetall(JOB)
    assert fields[b"status"] == b"running" and fields[b"worker"] == b"w-1"
    assert fields[b"task"] == b"M" and b"msg" not in fields and fields[b"started_at"] == b"1000"
    assert before + 15_000 <= (sync_redis.zscore(LEASES, "j") or 0) <= now_ms(sync_redis) + 15_000
    assert sync_redis.zscore(QUEUED, "j") is None and live(sync_redis) == (False, False, False)
    assert claim(sync_redis) == [b"skip:running", 0, 2, None]


def test_claim_job_ends_a_cancelled_expired_or_missing_job(sync_redis: redis.Redis) -> None:
    job(sync_redis, "queued", msg="M", cancel="1")
    assert claim(sync_redis) == [b"cancelled", 0, 0, None]
    assert sync_redis.hget(JOB, "status") == b"cancelled" and sync_redis.zscore(LEASES, "j") is None
    sync_redis.delete(JOB)
    job(sync_redis, "queued", msg="M", deadline=999)
    assert claim(sync_redis, now=1000) == [b"expired", 0, 1, None]
    [(entry, event)] = log(sync_redis)
    assert entry == b"1-1" and event == msgspec.structs.replace(expired_event(), seq=1)
    assert sync_redis.hget(JOB, "status") == b"expired" and 0 < sync_redis.ttl(JOB) <= 600
    sync_redis.delete(JOB)
    assert claim(sync_redis) == [b"missing", 0, 0, None]


# ---- reap_job-5, hand_back_job-4, renew_leases-1 -----------------------------------------

TASK = '{"properties": {"priority": 0}}'


def running(sync_redis: redis.Redis, lease_ms: int = -1000, **fields: str | int) -> None:
    job(sync_redis, "running", **{"attempt": 1, "worker": "w-1", "task": TASK, **fields})
    sync_redis.zadd(LEASES, {"j": now_ms(sync_redis) + lease_ms})


def reap(sync_redis: redis.Redis, max_attempts: int = 3) -> bytes:
    failed = template(StatusEvent(seq=0, status="failed"))  # any final event will do here
    args = ["j", max_attempts, 600, failed, '{"code": "worker_lost"}', CANCELLED]
    outcome: bytes = run(sync_redis, "reap_job", [JOB, EVENTS, LEASES, LIST, QUEUED], args)
    return outcome


def test_reap_job_requeues_a_lapsed_job_at_the_head_of_its_queue(sync_redis: redis.Redis) -> None:
    running(sync_redis)
    sync_redis.rpush(LIST, "other")
    assert reap(sync_redis) == b"requeued"
    fields = sync_redis.hgetall(JOB)
    assert fields[b"status"] == b"queued" and fields[b"msg"] == TASK.encode()
    assert b"worker" not in fields and sync_redis.lrange(LIST, -1, -1) == [TASK.encode()]
    assert sync_redis.zscore(LEASES, "j") is None and sync_redis.zscore(QUEUED, "j") is not None
    assert live(sync_redis) == (True, True, True)


def test_reap_job_leaves_a_renewed_or_ended_job(sync_redis: redis.Redis) -> None:
    running(sync_redis, lease_ms=60_000)
    assert reap(sync_redis) == b"renewed" and sync_redis.zscore(LEASES, "j") is not None
    sync_redis.zadd(LEASES, {"j": 0})
    sync_redis.hset(JOB, "status", "succeeded")
    assert reap(sync_redis) == b"ended" and sync_redis.zscore(LEASES, "j") is None
    assert sync_redis.hget(JOB, "status") == b"succeeded" and sync_redis.llen(LIST) == 0


def test_reap_job_ends_a_cancelled_or_spent_job(sync_redis: redis.Redis) -> None:
    running(sync_redis, cancel="1")
    assert reap(sync_redis) == b"cancelled" and sync_redis.hget(JOB, "status") == b"cancelled"
    assert [e for _, e in log(sync_redis)] == [msgspec.structs.replace(cancelled_event(), seq=1)]
    sync_redis.delete(JOB, EVENTS)
    running(sync_redis, attempt=4, handbacks=1)  # three attempts of its own
    assert reap(sync_redis, max_attempts=3) == b"failed"
    assert sync_redis.hget(JOB, "error") == b'{"code": "worker_lost"}'
    assert [e.seq for _, e in log(sync_redis)] == [1] and sync_redis.llen(LIST) == 0
    sync_redis.delete(JOB, EVENTS)
    running(sync_redis, attempt=3, handbacks=1)  # two of its own: one more is allowed
    assert reap(sync_redis, max_attempts=3) == b"requeued"


def test_hand_back_job_requeues_only_for_the_running_attempt(sync_redis: redis.Redis) -> None:
    def hand_back(attempt: int) -> bytes:
        outcome: bytes = run(
            sync_redis, "hand_back_job", [JOB, LEASES, LIST, QUEUED], ["j", attempt, 600]
        )
        return outcome

    running(sync_redis, lease_ms=60_000, attempt=2)
    assert hand_back(1) == b"fenced" and sync_redis.hget(JOB, "status") == b"running"
    assert hand_back(2) == b"handed_back"
    fields = sync_redis.hgetall(JOB)
    assert fields[b"status"] == b"queued" and fields[b"handbacks"] == b"1"
    assert fields[b"msg"] == TASK.encode() and b"worker" not in fields
    assert sync_redis.lrange(LIST, 0, -1) == [TASK.encode()]
    assert sync_redis.zscore(LEASES, "j") is None
    assert sync_redis.zscore(QUEUED, "j") is not None and live(sync_redis) == (True, True, True)
    assert hand_back(2) == b"ended"
    sync_redis.hset(JOB, "status", "running")
    sync_redis.hdel(JOB, "task")
    assert hand_back(2) == b"no-task"


def test_renew_leases_extends_only_leases_that_exist(sync_redis: redis.Redis) -> None:
    sync_redis.zadd(LEASES, {"a": 1, "b": 1})
    before = now_ms(sync_redis)
    assert run(sync_redis, "renew_leases", [LEASES], [30_000, "a", "gone"]) == 2
    assert (sync_redis.zscore(LEASES, "a") or 0) >= before + 30_000
    assert sync_redis.zscore(LEASES, "b") == 1 and sync_redis.zscore(LEASES, "gone") is None


# ---- restore_job-5, forget_job-2 ---------------------------------------------------------

UNACKED, UNACKED_INDEX = "unacked", "unacked_index"


def restore(sync_redis: redis.Redis, msg: str = "M", tag: str = "t1") -> bytes:
    keys = [JOB, QUEUED, LIST, UNACKED, UNACKED_INDEX]
    outcome: bytes = run(sync_redis, "restore_job", keys, ["j", msg, tag, 30, 600])
    return outcome


def test_restore_job_pushes_back_a_lost_message(sync_redis: redis.Redis) -> None:
    job(sync_redis, "queued", msg="M")
    sync_redis.zadd(QUEUED, {"j": 1})
    assert restore(sync_redis) == b"restored" and sync_redis.lrange(LIST, 0, -1) == [b"M"]
    assert (sync_redis.zscore(QUEUED, "j") or 0) > 1 and live(sync_redis) == (True, True, True)
    assert restore(sync_redis) == b"queued" and sync_redis.llen(LIST) == 1  # now in its list
    assert restore(sync_redis, msg="old") == b"moved" and sync_redis.llen(LIST) == 1


def test_restore_job_waits_for_a_recent_delivery_and_pushes_back_a_stranded_one(
    sync_redis: redis.Redis,
) -> None:
    job(sync_redis, "queued", msg="M")
    sync_redis.hset(UNACKED, "t1", "M")
    sync_redis.zadd(UNACKED_INDEX, {"t1": now_ms(sync_redis) / 1000})
    assert restore(sync_redis) == b"delivered" and sync_redis.llen(LIST) == 0
    sync_redis.zadd(UNACKED_INDEX, {"t1": now_ms(sync_redis) / 1000 - 60})
    assert restore(sync_redis) == b"stranded" and sync_redis.lrange(LIST, 0, -1) == [b"M"]
    assert sync_redis.hget(UNACKED, "t1") is None and sync_redis.zscore(UNACKED_INDEX, "t1") is None


def test_restore_and_forget_drop_a_job_no_longer_queued(sync_redis: redis.Redis) -> None:
    job(sync_redis, "running")
    for name, keys, args in [
        ("restore_job", [JOB, QUEUED, LIST, UNACKED, UNACKED_INDEX], ["j", "M", "", 30, 600]),
        ("forget_job", [JOB, QUEUED], ["j"]),
    ]:
        sync_redis.zadd(QUEUED, {"j": 1})
        mark_live(sync_redis)
        run(sync_redis, name, keys, args)
        assert sync_redis.zscore(QUEUED, "j") is None and live(sync_redis) == (False, False, False)
    sync_redis.hset(JOB, "status", "queued")
    sync_redis.zadd(QUEUED, {"j": 1})
    mark_live(sync_redis)
    assert run(sync_redis, "forget_job", [JOB, QUEUED], ["j"]) is None
    assert sync_redis.zscore(QUEUED, "j") is None and live(sync_redis) == (True, True, True)


# ---- requeue_job-2, find_waiting-1 --------------------------------------------------------


def test_requeue_job_moves_the_message_it_read_only(sync_redis: redis.Redis) -> None:
    job(sync_redis, "queued", msg="M")
    assert run(sync_redis, "requeue_job", [JOB, LIST], ["other", "M2"]) == 0
    assert run(sync_redis, "requeue_job", [JOB, LIST], ["M", "M2"]) == 1
    assert sync_redis.hget(JOB, "msg") == b"M2" and sync_redis.lrange(LIST, 0, -1) == [b"M2"]
    sync_redis.hset(JOB, "status", "running")
    assert run(sync_redis, "requeue_job", [JOB, LIST], ["M2", "M3"]) == 0
    assert sync_redis.llen(LIST) == 1


def test_find_waiting_takes_the_oldest_job_of_the_longest_waiting_key_below_the_limit(
    sync_redis: redis.Redis,
) -> None:
    index = keys_index_key("interactive", "m")
    prefix, suffix = key_live_parts("interactive", "m")
    sync_redis.zadd(index, {"full": 1, "gone": 2, "new": 3, "late": 4})
    sync_redis.zadd(f"{prefix}full{suffix}", {"f1": 1})
    sync_redis.zadd(f"{prefix}new{suffix}", {"n2": 2, "n1": 1})
    sync_redis.zadd(f"{prefix}late{suffix}", {"l1": 1})
    args = [prefix, suffix, 1, 32, "full", 1, "new", 0]
    assert run(sync_redis, "find_waiting", [index], args) == [b"n1", b"new"]
    assert sync_redis.zrange(index, 0, -1) == [b"full", b"new", b"late"]  # "gone" had none
    assert run(sync_redis, "find_waiting", [index], [prefix, suffix, 1, 1, "full", 1]) is None


# ---- flush_writes ------------------------------------------------------------------------


def plan(*writes: dict[str, Any], watch: list[int] | None = None) -> bytes:
    full = [
        {"events": [], "fields": [], "final": False, "attempt": 0, "meter": 0, **w} for w in writes
    ]
    return msgspec.json.encode({"writes": full, "watch": watch or []})


def flush(sync_redis: redis.Redis, keys: list[str], the_plan: bytes) -> list[Any]:
    return list(run(sync_redis, "flush_writes", [*keys, LEASES], [600, the_plan, "data", "ids"]))


def token(seq: int, text: str) -> list[str]:
    return [f"{seq}-1", encode_event(TokenEvent(seq=seq, text=text)).decode(), f"{seq}0"]


def test_flush_writes_logs_events_and_fields_and_reports_cancels(sync_redis: redis.Redis) -> None:
    sync_redis.hset(JOB, mapping={"attempt": 1})
    sync_redis.hset(job_key("x"), mapping={"attempt": 2, "cancel": "1"})
    keys = [JOB, EVENTS, job_key("x"), events_key("x")]
    write = {"job": 1, "id": "j", "attempt": 1, "fields": ["completion_tokens", 2]}
    status = ["3-1", encode_event(StatusEvent(seq=3, status="running")).decode(), ""]
    the_plan = plan({**write, "events": [token(1, "a"), token(2, "b"), status]}, watch=[1, 2])
    assert flush(sync_redis, keys, the_plan) == [[2], []]  # x's flag is set, j's is not
    entries = sync_redis.xrange(EVENTS)
    assert [e for e, _ in entries] == [b"1-1", b"2-1", b"3-1"]
    assert entries[1][1] == {b"data": token(2, "b")[1].encode(), b"ids": b"20"}
    assert b"ids" not in entries[2][1]  # a status event logs no token ids
    assert sync_redis.hget(JOB, "completion_tokens") == b"2" and sync_redis.ttl(JOB) == -1
    assert flush(sync_redis, keys, the_plan) == [[2], []]  # a retried flush: ids refused, no error
    assert sync_redis.xlen(EVENTS) == 3


def test_flush_writes_fences_an_older_attempt_and_reports_errors(sync_redis: redis.Redis) -> None:
    sync_redis.hset(JOB, mapping={"attempt": 2})
    sync_redis.hset(job_key("x"), mapping={"attempt": 1})
    sync_redis.set(events_key("x"), "not a stream")
    keys = [JOB, EVENTS, job_key("x"), events_key("x")]
    stale = {"job": 1, "id": "j", "attempt": 1, "events": [token(1, "a")], "fields": ["a", 1]}
    broken = {"job": 2, "id": "x", "attempt": 1, "events": [token(1, "a")]}
    cancelled, errors = flush(sync_redis, keys, plan(stale, broken))
    assert cancelled == [1] and sync_redis.xlen(EVENTS) == 0 and sync_redis.hget(JOB, "a") is None
    assert len(errors) == 1 and b"WRONGTYPE" in errors[0]


def test_flush_writes_ends_a_job_and_charges_its_tokens_once(sync_redis: redis.Redis) -> None:
    meter = token_meter("k")
    sync_redis.hset(JOB, mapping={"attempt": 1, "prompt_tokens": 3})
    sync_redis.zadd(LEASES, {"j": 1})
    final = {"job": 1, "id": "j", "attempt": 1, "final": True, "meter": 3}
    final["fields"] = ["completion_tokens", 4, "status", "succeeded"]
    for _ in range(2):  # a retried final write charges nothing more
        assert flush(sync_redis, [JOB, EVENTS, meter], plan(final)) == [[], []]
        assert sync_redis.hget(meter, "c") == b"7" and sync_redis.hget(JOB, "charged") == b"1"
    assert 0 < sync_redis.ttl(JOB) <= 600 and sync_redis.zscore(LEASES, "j") is None
