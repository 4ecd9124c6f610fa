"""The API's Redis scripts (protocol/scripts/), each called directly on the real Redis with
the KEYS and ARGV its header names: its answer and its writes for the main cases."""

from __future__ import annotations

from typing import Any

import redis

from protocol.events import ErrorEvent, decode_event
from protocol.keys import QUEUED, job_key
from protocol.queued import keys_index_key
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

LISTS = [f"model.m:{step}" for step in (0, 3, 6, 9)]


# ---- submit_job ---------------------------------------------------------------------------


def submit(
    sync_redis: redis.Redis,
    job_id: str,
    *,
    bound: int = 10,
    share: int = 0,
    idem: str = "",
    body: str = "h1",
    target: int = 3,
) -> list[Any]:
    keys = [job_key(job_id), "uml:jobs:k", idem, QUEUED, LIVE, MINE, *LISTS]
    fields = ["id", job_id, "model", "m", "priority", "batch", "owner", "k", "status", "queued"]
    args = [600, bound, target, f"msg-{job_id}", job_id, body, 60, "job-1", "uml:job:", share]
    return list(run(sync_redis, "submit_job", keys, [*args, *fields]))


def test_submit_job_records_queues_counts_and_indexes_a_job(sync_redis: redis.Redis) -> None:
    sync_redis.rpush(LISTS[0], "a", "b")
    sync_redis.rpush(LISTS[3], "z")  # popped after the job's list: not ahead of it
    sync_redis.zadd("uml:jobs:k", {"job-0": 0})  # older than the cutoff: trimmed
    assert submit(sync_redis, "job-2") == [b"queued", b"job-2", 2]
    fields = sync_redis.hgetall(job_key("job-2"))
    assert fields[b"msg"] == b"msg-job-2" and fields[b"status"] == b"queued"
    assert fields[b"owner"] == b"k" and 0 < sync_redis.ttl(job_key("job-2")) <= 600
    assert sync_redis.lrange(LISTS[2], 0, -1) == [b"msg-job-2"]
    assert sync_redis.zrange(LIVE, 0, -1) == sync_redis.zrange(MINE, 0, -1) == [b"job-2"]
    assert sync_redis.zrange(keys_index_key("batch", "m"), 0, -1) == [b"k"]
    assert sync_redis.zscore(QUEUED, "job-2") is not None
    assert sync_redis.zrange("uml:jobs:k", 0, -1) == [b"job-2"]


def test_submit_job_stops_at_the_bound_and_at_the_keys_share(sync_redis: redis.Redis) -> None:
    assert submit(sync_redis, "job-2", bound=2, share=1)[0] == b"queued"
    assert submit(sync_redis, "job-3", bound=2, share=1) == [b"share", b"1"]
    assert submit(sync_redis, "job-3", bound=1) == [b"full", b"1"]
    assert not sync_redis.exists(job_key("job-3")) and sync_redis.llen(LISTS[2]) == 1
    sync_redis.zadd(LIVE, {"job-2": now_ms(sync_redis) - 601_000})  # queued past the retention
    sync_redis.zadd(MINE, {"job-2": now_ms(sync_redis) - 601_000})
    assert submit(sync_redis, "job-3", bound=1)[0] == b"queued"


def test_submit_job_replays_or_refuses_a_repeated_idempotency_key(sync_redis: redis.Redis) -> None:
    idem = "uml:idem:k:abc"
    assert submit(sync_redis, "job-2", idem=idem)[0] == b"queued"
    assert sync_redis.get(idem) == b"job-2 h1" and 0 < sync_redis.ttl(idem) <= 60
    assert submit(sync_redis, "job-3", idem=idem) == [b"replay", b"job-2"]
    assert submit(sync_redis, "job-3", idem=idem, body="h2") == [b"conflict", b"job-2"]
    assert not sync_redis.exists(job_key("job-3"))


# ---- read_job, cancel_job-2 --------------------------------------------------------------


def queued(sync_redis: redis.Redis, **fields: str | int) -> None:
    base = {"id": "j", "model": "m", "priority": "batch", "owner": "k", "status": "queued"}
    sync_redis.hset(JOB, mapping={**base, "msg": "M", "spec": "S", **fields})


def read(sync_redis: redis.Redis, owner: str = "k", now: int = 1000) -> Any:
    return run(sync_redis, "read_job", [JOB, EVENTS, *LISTS[:2]], [owner, now, 600, EXPIRED])


def test_read_job_answers_the_fields_the_queue_position_and_the_last_seq(
    sync_redis: redis.Redis,
) -> None:
    queued(sync_redis)
    sync_redis.rpush(LISTS[0], "a", "b")  # two jobs popped before any of LISTS[1]
    sync_redis.rpush(LISTS[1], "M", "c")  # "c" is popped first (kombu pops from the right)
    sync_redis.xadd(EVENTS, {"data": "{}"}, id="4-1")
    flat, position, last = read(sync_redis)
    fields = dict(zip(flat[::2], flat[1::2], strict=True))
    assert fields[b"status"] == b"queued" and b"msg" not in fields and b"spec" not in fields
    assert (position, last) == (3, 4)
    assert read(sync_redis, owner="other") is None
    sync_redis.hset(JOB, "status", "running")
    assert read(sync_redis)[1] == -1


def test_read_job_expires_a_queued_job_past_its_deadline(sync_redis: redis.Redis) -> None:
    queued(sync_redis, deadline=999)
    sync_redis.zadd(LIVE, {"j": 1})
    flat, position, last = read(sync_redis, now=1000)
    assert dict(zip(flat[::2], flat[1::2], strict=True))[b"status"] == b"expired"
    assert (position, last) == (-1, 1) and sync_redis.zscore(LIVE, "j") is None
    [(_, data)] = sync_redis.xrange(EVENTS)
    assert isinstance(decode_event(data[b"data"]), ErrorEvent)


def cancel(sync_redis: redis.Redis, *owner: str) -> Any:
    return run(sync_redis, "cancel_job", [JOB, EVENTS], [1000, 600, EXPIRED, CANCELLED, *owner])


def test_cancel_job_ends_a_queued_job_and_flags_a_running_one(sync_redis: redis.Redis) -> None:
    queued(sync_redis)
    assert cancel(sync_redis, "other") is None and sync_redis.hget(JOB, "status") == b"queued"
    assert cancel(sync_redis, "k") == [b"cancelled", 1]
    assert sync_redis.hget(JOB, "cancel") == b"1" and sync_redis.hget(JOB, "msg") is None
    assert decode_event(sync_redis.xrange(EVENTS)[0][1][b"data"]).seq == 1
    assert cancel(sync_redis) == [b"cancelled", 1]  # without an owner: any job; ended stays
    sync_redis.hset(JOB, mapping={"status": "running", "cancel": "0"})
    assert cancel(sync_redis) == [b"running", 1] and sync_redis.hget(JOB, "cancel") == b"1"
    sync_redis.delete(JOB)
    assert cancel(sync_redis) is None


def test_cancel_job_expires_a_queued_job_past_its_deadline(sync_redis: redis.Redis) -> None:
    queued(sync_redis, deadline=999)
    assert cancel(sync_redis, "k") == [b"expired", 1]
    assert sync_redis.hget(JOB, "cancel") is None


# ---- admit_request, slot_lease-1 ---------------------------------------------------------

BURST, RPM, TPM = "uml:rl:{k}:burst", "uml:rl:{k}:rpm", "uml:rl:{k}:tpm"
HOUR = 3_600_000  # windows this long: a bucket boundary inside a test is most unlikely


def admit(sync_redis: redis.Redis, metered: bool) -> list[int]:
    keys = [BURST, RPM, *([TPM] if metered else [])]
    args = [2, int(metered), HOUR, 2, HOUR, 5, *([HOUR, 10] if metered else [])]
    return list(run(sync_redis, "admit_request", keys, args))


def test_admit_request_charges_every_request_window_or_none(sync_redis: redis.Redis) -> None:
    before = now_ms(sync_redis)
    ok, now, *counts = admit(sync_redis, metered=False)
    assert ok == 1 and before <= now <= now_ms(sync_redis) and counts == [0, 0, 0, 0]
    assert admit(sync_redis, metered=False)[2:] == [1, 0, 1, 0]
    assert admit(sync_redis, metered=False)[0] == 0  # the burst window (2) is full
    assert sync_redis.hget(BURST, "c") == b"2" and sync_redis.hget(RPM, "c") == b"2"  # none charged
    assert 0 < sync_redis.pttl(BURST) <= 2 * HOUR


def test_admit_request_tests_the_token_window_without_charging_it(sync_redis: redis.Redis) -> None:
    assert admit(sync_redis, metered=True)[0] == 1 and not sync_redis.exists(TPM)
    sync_redis.hset(TPM, mapping={"w": now_ms(sync_redis) // HOUR, "c": 10, "p": 0})
    answer = admit(sync_redis, metered=True)
    assert answer[0] == 0 and answer[6:] == [10, 0]
    assert sync_redis.hget(RPM, "c") == b"1"  # the refused request charged nothing


def test_slot_lease_caps_renews_and_frees_lapsed_slots(sync_redis: redis.Redis) -> None:
    streams = "uml:rl:{k}:streams"

    def lease(cap: int, token: str) -> list[int]:
        return list(run(sync_redis, "slot_lease", [streams], [cap, 30_000, token]))

    assert lease(2, "a") == [1, 1] and lease(2, "b") == [1, 2] and lease(2, "c") == [0, 2]
    sync_redis.zadd(streams, {"b": 1})  # b's lease lapsed (its process died)
    assert lease(2, "c") == [1, 2] and sync_redis.zscore(streams, "b") is None
    before = sync_redis.zscore(streams, "a") or 0
    assert lease(0, "a") == [1, 2] and (sync_redis.zscore(streams, "a") or 0) >= before
    assert lease(0, "gone") == [1, 2] and sync_redis.zscore(streams, "gone") is None
    assert 0 < sync_redis.pttl(streams) <= 30_000


# ---- reserve_file-2 ----------------------------------------------------------------------

USAGE, SIZES = "uml:fileuse:{k}", "uml:fileuse:{k}:bytes"


def reserve(sync_redis: redis.Redis, file_id: str, size: int) -> list[int]:
    args = [1000, file_id, size, 1300, 100, 3, 3600]
    return list(run(sync_redis, "reserve_file", [USAGE, SIZES], args))


def test_reserve_file_holds_room_within_the_quota(sync_redis: redis.Redis) -> None:
    sync_redis.zadd(USAGE, {"old": 999, "kept": 5000})  # "old" expired at 999
    sync_redis.hset(SIZES, mapping={"old": 90, "kept": 40})
    assert reserve(sync_redis, "", 60) == [1, 40, 1]  # a check only: nothing is reserved
    assert sync_redis.zcard(USAGE) == 1 and sync_redis.hget(SIZES, "old") is None
    assert reserve(sync_redis, "f1", 70) == [0, 40, 1]  # 110 bytes > 100
    assert reserve(sync_redis, "f1", 60) == [1, 40, 1]
    assert sync_redis.zscore(USAGE, "f1") == 1300 and sync_redis.hget(SIZES, "f1") == b"60"
    assert 0 < sync_redis.ttl(USAGE) <= 3600 and 0 < sync_redis.ttl(SIZES) <= 3600
    assert reserve(sync_redis, "f2", 0) == [1, 100, 2]
    assert reserve(sync_redis, "f3", 0) == [0, 100, 3]  # 4 files > 3


# ---- move_batch-1, cancel_batch-1, settle_batch_line-4 -----------------------------------

BATCH = "uml:batch:b"


def test_move_batch_moves_only_from_the_expected_status(sync_redis: redis.Redis) -> None:
    sync_redis.hset(BATCH, "status", "in_progress")
    args = ["in_progress", "finalizing", "finalizing_at", 1000]
    assert run(sync_redis, "move_batch", [BATCH], args) == 1
    assert sync_redis.hgetall(BATCH) == {b"status": b"finalizing", b"finalizing_at": b"1000"}
    assert run(sync_redis, "move_batch", [BATCH], args) == 0
    assert sync_redis.hget(BATCH, "status") == b"finalizing"


def test_cancel_batch_moves_an_unfinished_batch_of_its_owner_to_cancelling(
    sync_redis: redis.Redis,
) -> None:
    sync_redis.hset(BATCH, mapping={"status": "in_progress", "owner": "k"})
    assert run(sync_redis, "cancel_batch", [BATCH], ["other", 1000]) is None
    assert run(sync_redis, "cancel_batch", [BATCH], ["k", 1000]) == b"cancelling"
    fields = sync_redis.hgetall(BATCH)
    assert fields[b"cancelling_at"] == b"1000" and fields[b"stop_reason"] == b"cancelled"
    sync_redis.hset(BATCH, "status", "completed")
    assert run(sync_redis, "cancel_batch", [BATCH], ["k", 1001]) == b"completed"
    assert sync_redis.hget(BATCH, "cancelling_at") == b"1000"
    assert run(sync_redis, "cancel_batch", ["uml:batch:none"], ["k", 1000]) is None


def test_settle_batch_line_records_a_finished_job_once(sync_redis: redis.Redis) -> None:
    keys = [BATCH, f"{BATCH}:pending", f"{BATCH}:out", f"{BATCH}:err"]
    sync_redis.sadd(keys[1], "j1", "j2")
    assert run(sync_redis, "settle_batch_line", keys, ["j1", "out", "L1", 1, 0, 3, 4]) == 1
    assert run(sync_redis, "settle_batch_line", keys, ["j1", "out", "L1", 1, 0, 3, 4]) == 0
    assert run(sync_redis, "settle_batch_line", keys, ["j2", "err", "L2", 0, 1, 2, 0]) == 1
    assert sync_redis.lrange(keys[2], 0, -1) == [b"L1"]
    assert sync_redis.lrange(keys[3], 0, -1) == [b"L2"]
    assert sync_redis.hgetall(BATCH) == {
        b"completed": b"1",
        b"failed": b"1",
        b"input_tokens": b"5",
        b"output_tokens": b"4",
    }
    assert sync_redis.scard(keys[1]) == 0


# ---- lock-1, unlock-1 --------------------------------------------------------------------


def test_lock_is_taken_when_free_renewed_by_its_holder_and_refused_to_another(
    sync_redis: redis.Redis,
) -> None:
    lease = "uml:batches:runner"
    assert run(sync_redis, "lock", [lease], ["a", 5000]) == 1 and sync_redis.get(lease) == b"a"
    sync_redis.pexpire(lease, 100)
    assert run(sync_redis, "lock", [lease], ["a", 5000]) == 1 and sync_redis.pttl(lease) > 100
    assert run(sync_redis, "lock", [lease], ["b", 5000]) == 0 and sync_redis.get(lease) == b"a"


def test_unlock_releases_only_its_holders_lock(sync_redis: redis.Redis) -> None:
    sync_redis.set("lock", "a")
    assert run(sync_redis, "unlock", ["lock"], ["b"]) == 0 and sync_redis.get("lock") == b"a"
    assert run(sync_redis, "unlock", ["lock"], ["a"]) == 1 and not sync_redis.exists("lock")
    assert run(sync_redis, "unlock", ["lock"], ["a"]) == 0
