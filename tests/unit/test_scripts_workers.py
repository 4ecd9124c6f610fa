"""The workers' Redis scripts (protocol/scripts/), each called directly on the real Redis with
the KEYS and ARGV its header names: its answer and its writes for the main cases."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
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


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


LIST = "model.m"
OWNERS = keys_index_key("batch", "m")


def job(client: redis.Redis, status: str, **fields: str | int | float) -> None:
    base = {"id": "j", "model": "m", "priority": "batch", "owner": "k", "status": status}
    client.hset(JOB, mapping={**base, **fields})


def live(client: redis.Redis) -> tuple[bool, bool, bool]:
    """Whether the job is in its model's live queued set, its key's, and the key in the index."""
    return (
        client.zscore(LIVE, "j") is not None,
        client.zscore(MINE, "j") is not None,
        client.zscore(OWNERS, "k") is not None,
    )


def mark_live(client: redis.Redis) -> None:
    client.zadd(LIVE, {"j": 1})
    client.zadd(MINE, {"j": 1})
    client.zadd(OWNERS, {"k": 1})


def log(client: redis.Redis, key: str = EVENTS) -> list[tuple[bytes, Any]]:
    return [(entry, decode_event(f[b"data"])) for entry, f in client.xrange(key)]


# ---- claim_job-4 -------------------------------------------------------------------------


def claim(client: redis.Redis, now: int = 1000) -> list[Any]:
    args = ["w-1", now, EXPIRED, 600, 15_000, "j"]
    return list(run(client, "claim_job", [JOB, EVENTS, LEASES, QUEUED], args))


def test_claim_job_claims_a_queued_job_once(client: redis.Redis) -> None:
    job(client, "queued", msg="M", spec="S", meter="W")
    mark_live(client)
    client.zadd(QUEUED, {"j": 1})
    client.xadd(EVENTS, {"data": "{}"}, id="2-1")
    before = now_ms(client)
    assert claim(client) == [b"claimed", 1, 2, b"S", b"W"]
    fields = client.hgetall(JOB)
    assert fields[b"status"] == b"running" and fields[b"worker"] == b"w-1"
    assert fields[b"task"] == b"M" and b"msg" not in fields and fields[b"started_at"] == b"1000"
    assert before + 15_000 <= (client.zscore(LEASES, "j") or 0) <= now_ms(client) + 15_000
    assert client.zscore(QUEUED, "j") is None and live(client) == (False, False, False)
    assert claim(client) == [b"skip:running", 0, 2, None]


def test_claim_job_ends_a_cancelled_expired_or_missing_job(client: redis.Redis) -> None:
    job(client, "queued", msg="M", cancel="1")
    assert claim(client) == [b"cancelled", 0, 0, None]
    assert client.hget(JOB, "status") == b"cancelled" and client.zscore(LEASES, "j") is None
    client.delete(JOB)
    job(client, "queued", msg="M", deadline=999)
    assert claim(client, now=1000) == [b"expired", 0, 1, None]
    [(entry, event)] = log(client)
    assert entry == b"1-1" and event == msgspec.structs.replace(expired_event(), seq=1)
    assert client.hget(JOB, "status") == b"expired" and 0 < client.ttl(JOB) <= 600
    client.delete(JOB)
    assert claim(client) == [b"missing", 0, 0, None]


# ---- reap_job-5, hand_back_job-4, renew_leases-1 -----------------------------------------

TASK = '{"properties": {"priority": 0}}'


def running(client: redis.Redis, lease_ms: int = -1000, **fields: str | int) -> None:
    job(client, "running", **{"attempt": 1, "worker": "w-1", "task": TASK, **fields})
    client.zadd(LEASES, {"j": now_ms(client) + lease_ms})


def reap(client: redis.Redis, max_attempts: int = 3) -> bytes:
    failed = template(StatusEvent(seq=0, status="failed"))  # any final event will do here
    args = ["j", max_attempts, 600, failed, '{"code": "worker_lost"}', CANCELLED]
    outcome: bytes = run(client, "reap_job", [JOB, EVENTS, LEASES, LIST, QUEUED], args)
    return outcome


def test_reap_job_requeues_a_lapsed_job_at_the_head_of_its_queue(client: redis.Redis) -> None:
    running(client)
    client.rpush(LIST, "other")
    assert reap(client) == b"requeued"
    fields = client.hgetall(JOB)
    assert fields[b"status"] == b"queued" and fields[b"msg"] == TASK.encode()
    assert b"worker" not in fields and client.lrange(LIST, -1, -1) == [TASK.encode()]
    assert client.zscore(LEASES, "j") is None and client.zscore(QUEUED, "j") is not None
    assert live(client) == (True, True, True)


def test_reap_job_leaves_a_renewed_or_ended_job(client: redis.Redis) -> None:
    running(client, lease_ms=60_000)
    assert reap(client) == b"renewed" and client.zscore(LEASES, "j") is not None
    client.zadd(LEASES, {"j": 0})
    client.hset(JOB, "status", "succeeded")
    assert reap(client) == b"ended" and client.zscore(LEASES, "j") is None
    assert client.hget(JOB, "status") == b"succeeded" and client.llen(LIST) == 0


def test_reap_job_ends_a_cancelled_or_spent_job(client: redis.Redis) -> None:
    running(client, cancel="1")
    assert reap(client) == b"cancelled" and client.hget(JOB, "status") == b"cancelled"
    assert [e for _, e in log(client)] == [msgspec.structs.replace(cancelled_event(), seq=1)]
    client.delete(JOB, EVENTS)
    running(client, attempt=4, handbacks=1)  # three attempts of its own
    assert reap(client, max_attempts=3) == b"failed"
    assert client.hget(JOB, "error") == b'{"code": "worker_lost"}'
    assert [e.seq for _, e in log(client)] == [1] and client.llen(LIST) == 0
    client.delete(JOB, EVENTS)
    running(client, attempt=3, handbacks=1)  # two of its own: one more is allowed
    assert reap(client, max_attempts=3) == b"requeued"


def test_hand_back_job_requeues_only_for_the_running_attempt(client: redis.Redis) -> None:
    def hand_back(attempt: int) -> bytes:
        outcome: bytes = run(
            client, "hand_back_job", [JOB, LEASES, LIST, QUEUED], ["j", attempt, 600]
        )
        return outcome

    running(client, lease_ms=60_000, attempt=2)
    assert hand_back(1) == b"fenced" and client.hget(JOB, "status") == b"running"
    assert hand_back(2) == b"handed_back"
    fields = client.hgetall(JOB)
    assert fields[b"status"] == b"queued" and fields[b"handbacks"] == b"1"
    assert fields[b"msg"] == TASK.encode() and b"worker" not in fields
    assert client.lrange(LIST, 0, -1) == [TASK.encode()] and client.zscore(LEASES, "j") is None
    assert client.zscore(QUEUED, "j") is not None and live(client) == (True, True, True)
    assert hand_back(2) == b"ended"
    client.hset(JOB, "status", "running")
    client.hdel(JOB, "task")
    assert hand_back(2) == b"no-task"


def test_renew_leases_extends_only_leases_that_exist(client: redis.Redis) -> None:
    client.zadd(LEASES, {"a": 1, "b": 1})
    before = now_ms(client)
    assert run(client, "renew_leases", [LEASES], [30_000, "a", "gone"]) == 2
    assert (client.zscore(LEASES, "a") or 0) >= before + 30_000
    assert client.zscore(LEASES, "b") == 1 and client.zscore(LEASES, "gone") is None


# ---- restore_job-5, forget_job-2 ---------------------------------------------------------

UNACKED, UNACKED_INDEX = "unacked", "unacked_index"


def restore(client: redis.Redis, msg: str = "M", tag: str = "t1") -> bytes:
    keys = [JOB, QUEUED, LIST, UNACKED, UNACKED_INDEX]
    outcome: bytes = run(client, "restore_job", keys, ["j", msg, tag, 30, 600])
    return outcome


def test_restore_job_pushes_back_a_lost_message(client: redis.Redis) -> None:
    job(client, "queued", msg="M")
    client.zadd(QUEUED, {"j": 1})
    assert restore(client) == b"restored" and client.lrange(LIST, 0, -1) == [b"M"]
    assert (client.zscore(QUEUED, "j") or 0) > 1 and live(client) == (True, True, True)
    assert restore(client) == b"queued" and client.llen(LIST) == 1  # now in its list
    assert restore(client, msg="old") == b"moved" and client.llen(LIST) == 1


def test_restore_job_waits_for_a_recent_delivery_and_pushes_back_a_stranded_one(
    client: redis.Redis,
) -> None:
    job(client, "queued", msg="M")
    client.hset(UNACKED, "t1", "M")
    client.zadd(UNACKED_INDEX, {"t1": now_ms(client) / 1000})
    assert restore(client) == b"delivered" and client.llen(LIST) == 0
    client.zadd(UNACKED_INDEX, {"t1": now_ms(client) / 1000 - 60})
    assert restore(client) == b"stranded" and client.lrange(LIST, 0, -1) == [b"M"]
    assert client.hget(UNACKED, "t1") is None and client.zscore(UNACKED_INDEX, "t1") is None


def test_restore_and_forget_drop_a_job_no_longer_queued(client: redis.Redis) -> None:
    job(client, "running")
    for name, keys, args in [
        ("restore_job", [JOB, QUEUED, LIST, UNACKED, UNACKED_INDEX], ["j", "M", "", 30, 600]),
        ("forget_job", [JOB, QUEUED], ["j"]),
    ]:
        client.zadd(QUEUED, {"j": 1})
        mark_live(client)
        run(client, name, keys, args)
        assert client.zscore(QUEUED, "j") is None and live(client) == (False, False, False)
    client.hset(JOB, "status", "queued")
    client.zadd(QUEUED, {"j": 1})
    mark_live(client)
    assert run(client, "forget_job", [JOB, QUEUED], ["j"]) is None
    assert client.zscore(QUEUED, "j") is None and live(client) == (True, True, True)


# ---- requeue_job-2, find_waiting-1 --------------------------------------------------------


def test_requeue_job_moves_the_message_it_read_only(client: redis.Redis) -> None:
    job(client, "queued", msg="M")
    assert run(client, "requeue_job", [JOB, LIST], ["other", "M2"]) == 0
    assert run(client, "requeue_job", [JOB, LIST], ["M", "M2"]) == 1
    assert client.hget(JOB, "msg") == b"M2" and client.lrange(LIST, 0, -1) == [b"M2"]
    client.hset(JOB, "status", "running")
    assert run(client, "requeue_job", [JOB, LIST], ["M2", "M3"]) == 0
    assert client.llen(LIST) == 1


def test_find_waiting_takes_the_oldest_job_of_the_longest_waiting_key_below_the_limit(
    client: redis.Redis,
) -> None:
    index = keys_index_key("interactive", "m")
    prefix, suffix = key_live_parts("interactive", "m")
    client.zadd(index, {"full": 1, "gone": 2, "new": 3, "late": 4})
    client.zadd(f"{prefix}full{suffix}", {"f1": 1})
    client.zadd(f"{prefix}new{suffix}", {"n2": 2, "n1": 1})
    client.zadd(f"{prefix}late{suffix}", {"l1": 1})
    args = [prefix, suffix, 1, 32, "full", 1, "new", 0]
    assert run(client, "find_waiting", [index], args) == [b"n1", b"new"]
    assert client.zrange(index, 0, -1) == [b"full", b"new", b"late"]  # "gone" had none
    assert run(client, "find_waiting", [index], [prefix, suffix, 1, 1, "full", 1]) is None


# ---- flush_writes ------------------------------------------------------------------------


def plan(*writes: dict[str, Any], watch: list[int] | None = None) -> bytes:
    full = [
        {"events": [], "fields": [], "final": False, "attempt": 0, "meter": 0, **w} for w in writes
    ]
    return msgspec.json.encode({"writes": full, "watch": watch or []})


def flush(client: redis.Redis, keys: list[str], the_plan: bytes) -> list[Any]:
    return list(run(client, "flush_writes", [*keys, LEASES], [600, the_plan, "data", "ids"]))


def token(seq: int, text: str) -> list[str]:
    return [f"{seq}-1", encode_event(TokenEvent(seq=seq, text=text)).decode(), f"{seq}0"]


def test_flush_writes_logs_events_and_fields_and_reports_cancels(client: redis.Redis) -> None:
    client.hset(JOB, mapping={"attempt": 1})
    client.hset(job_key("x"), mapping={"attempt": 2, "cancel": "1"})
    keys = [JOB, EVENTS, job_key("x"), events_key("x")]
    write = {"job": 1, "id": "j", "attempt": 1, "fields": ["completion_tokens", 2]}
    status = ["3-1", encode_event(StatusEvent(seq=3, status="running")).decode(), ""]
    the_plan = plan({**write, "events": [token(1, "a"), token(2, "b"), status]}, watch=[1, 2])
    assert flush(client, keys, the_plan) == [[2], []]  # x's flag is set, j's is not
    entries = client.xrange(EVENTS)
    assert [e for e, _ in entries] == [b"1-1", b"2-1", b"3-1"]
    assert entries[1][1] == {b"data": token(2, "b")[1].encode(), b"ids": b"20"}
    assert b"ids" not in entries[2][1]  # a status event logs no token ids
    assert client.hget(JOB, "completion_tokens") == b"2" and client.ttl(JOB) == -1
    assert flush(client, keys, the_plan) == [[2], []]  # a retried flush: ids refused, no error
    assert client.xlen(EVENTS) == 3


def test_flush_writes_fences_an_older_attempt_and_reports_errors(client: redis.Redis) -> None:
    client.hset(JOB, mapping={"attempt": 2})
    client.hset(job_key("x"), mapping={"attempt": 1})
    client.set(events_key("x"), "not a stream")
    keys = [JOB, EVENTS, job_key("x"), events_key("x")]
    stale = {"job": 1, "id": "j", "attempt": 1, "events": [token(1, "a")], "fields": ["a", 1]}
    broken = {"job": 2, "id": "x", "attempt": 1, "events": [token(1, "a")]}
    cancelled, errors = flush(client, keys, plan(stale, broken))
    assert cancelled == [1] and client.xlen(EVENTS) == 0 and client.hget(JOB, "a") is None
    assert len(errors) == 1 and b"WRONGTYPE" in errors[0]


def test_flush_writes_ends_a_job_and_charges_its_tokens_once(client: redis.Redis) -> None:
    meter = token_meter("k")
    client.hset(JOB, mapping={"attempt": 1, "prompt_tokens": 3})
    client.zadd(LEASES, {"j": 1})
    final = {"job": 1, "id": "j", "attempt": 1, "final": True, "meter": 3}
    final["fields"] = ["completion_tokens", 4, "status", "succeeded"]
    for _ in range(2):  # a retried final write charges nothing more
        assert flush(client, [JOB, EVENTS, meter], plan(final)) == [[], []]
        assert client.hget(meter, "c") == b"7" and client.hget(JOB, "charged") == b"1"
    assert 0 < client.ttl(JOB) <= 600 and client.zscore(LEASES, "j") is None
