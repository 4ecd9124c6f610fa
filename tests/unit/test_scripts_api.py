"""The API's Redis scripts (protocol/scripts/), each called directly on the real Redis with
the KEYS and ARGV its header names: its answer and its writes for the main cases."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
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


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


LISTS = [f"model.m:{step}" for step in (0, 3, 6, 9)]


# ---- submit_job ---------------------------------------------------------------------------


def submit(
    client: redis.Redis,
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
    return list(run(client, "submit_job", keys, [*args, *fields]))


def test_submit_job_records_queues_counts_and_indexes_a_job(client: redis.Redis) -> None:
    client.rpush(LISTS[0], "a", "b")
    client.rpush(LISTS[3], "z")  # popped after the job's list: not ahead of it
    client.zadd("uml:jobs:k", {"job-0": 0})  # older than the cutoff: trimmed
    assert submit(client, "job-2") == [b"queued", b"job-2", 2]
    fields = client.hgetall(job_key("job-2"))
    assert fields[b"msg"] == b"msg-job-2" and fields[b"status"] == b"queued"
    assert fields[b"owner"] == b"k" and 0 < client.ttl(job_key("job-2")) <= 600
    assert client.lrange(LISTS[2], 0, -1) == [b"msg-job-2"]
    assert client.zrange(LIVE, 0, -1) == client.zrange(MINE, 0, -1) == [b"job-2"]
    assert client.zrange(keys_index_key("batch", "m"), 0, -1) == [b"k"]
    assert client.zscore(QUEUED, "job-2") is not None
    assert client.zrange("uml:jobs:k", 0, -1) == [b"job-2"]


def test_submit_job_stops_at_the_bound_and_at_the_keys_share(client: redis.Redis) -> None:
    assert submit(client, "job-2", bound=2, share=1)[0] == b"queued"
    assert submit(client, "job-3", bound=2, share=1) == [b"share", b"1"]
    assert submit(client, "job-3", bound=1) == [b"full", b"1"]
    assert not client.exists(job_key("job-3")) and client.llen(LISTS[2]) == 1
    client.zadd(LIVE, {"job-2": now_ms(client) - 601_000})  # queued past the retention
    client.zadd(MINE, {"job-2": now_ms(client) - 601_000})
    assert submit(client, "job-3", bound=1)[0] == b"queued"


def test_submit_job_replays_or_refuses_a_repeated_idempotency_key(client: redis.Redis) -> None:
    idem = "uml:idem:k:abc"
    assert submit(client, "job-2", idem=idem)[0] == b"queued"
    assert client.get(idem) == b"job-2 h1" and 0 < client.ttl(idem) <= 60
    assert submit(client, "job-3", idem=idem) == [b"replay", b"job-2"]
    assert submit(client, "job-3", idem=idem, body="h2") == [b"conflict", b"job-2"]
    assert not client.exists(job_key("job-3"))


# ---- read_job, cancel_job-2 --------------------------------------------------------------


def queued(client: redis.Redis, **fields: str | int) -> None:
    base = {"id": "j", "model": "m", "priority": "batch", "owner": "k", "status": "queued"}
    client.hset(JOB, mapping={**base, "msg": "M", "spec": "S", **fields})


def read(client: redis.Redis, owner: str = "k", now: int = 1000) -> Any:
    return run(client, "read_job", [JOB, EVENTS, *LISTS[:2]], [owner, now, 600, EXPIRED])


def test_read_job_answers_the_fields_the_queue_position_and_the_last_seq(
    client: redis.Redis,
) -> None:
    queued(client)
    client.rpush(LISTS[0], "a", "b")  # two jobs popped before any of LISTS[1]
    client.rpush(LISTS[1], "M", "c")  # "c" is popped first (kombu pops from the right)
    client.xadd(EVENTS, {"data": "{}"}, id="4-1")
    flat, position, last = read(client)
    fields = dict(zip(flat[::2], flat[1::2], strict=True))
    assert fields[b"status"] == b"queued" and b"msg" not in fields and b"spec" not in fields
    assert (position, last) == (3, 4)
    assert read(client, owner="other") is None
    client.hset(JOB, "status", "running")
    assert read(client)[1] == -1


def test_read_job_expires_a_queued_job_past_its_deadline(client: redis.Redis) -> None:
    queued(client, deadline=999)
    client.zadd(LIVE, {"j": 1})
    flat, position, last = read(client, now=1000)
    assert dict(zip(flat[::2], flat[1::2], strict=True))[b"status"] == b"expired"
    assert (position, last) == (-1, 1) and client.zscore(LIVE, "j") is None
    [(_, data)] = client.xrange(EVENTS)
    assert isinstance(decode_event(data[b"data"]), ErrorEvent)


def cancel(client: redis.Redis, *owner: str) -> Any:
    return run(client, "cancel_job", [JOB, EVENTS], [1000, 600, EXPIRED, CANCELLED, *owner])


def test_cancel_job_ends_a_queued_job_and_flags_a_running_one(client: redis.Redis) -> None:
    queued(client)
    assert cancel(client, "other") is None and client.hget(JOB, "status") == b"queued"
    assert cancel(client, "k") == [b"cancelled", 1]
    assert client.hget(JOB, "cancel") == b"1" and client.hget(JOB, "msg") is None
    assert decode_event(client.xrange(EVENTS)[0][1][b"data"]).seq == 1
    assert cancel(client) == [b"cancelled", 1]  # without an owner: any job; ended stays
    client.hset(JOB, mapping={"status": "running", "cancel": "0"})
    assert cancel(client) == [b"running", 1] and client.hget(JOB, "cancel") == b"1"
    client.delete(JOB)
    assert cancel(client) is None


def test_cancel_job_expires_a_queued_job_past_its_deadline(client: redis.Redis) -> None:
    queued(client, deadline=999)
    assert cancel(client, "k") == [b"expired", 1]
    assert client.hget(JOB, "cancel") is None


# ---- admit_request, slot_lease-1 ---------------------------------------------------------

BURST, RPM, TPM = "uml:rl:{k}:burst", "uml:rl:{k}:rpm", "uml:rl:{k}:tpm"
HOUR = 3_600_000  # windows this long: a bucket boundary inside a test is most unlikely


def admit(client: redis.Redis, metered: bool) -> list[int]:
    keys = [BURST, RPM, *([TPM] if metered else [])]
    args = [2, int(metered), HOUR, 2, HOUR, 5, *([HOUR, 10] if metered else [])]
    return list(run(client, "admit_request", keys, args))


def test_admit_request_charges_every_request_window_or_none(client: redis.Redis) -> None:
    before = now_ms(client)
    ok, now, *counts = admit(client, metered=False)
    assert ok == 1 and before <= now <= now_ms(client) and counts == [0, 0, 0, 0]
    assert admit(client, metered=False)[2:] == [1, 0, 1, 0]
    assert admit(client, metered=False)[0] == 0  # the burst window (2) is full
    assert client.hget(BURST, "c") == b"2" and client.hget(RPM, "c") == b"2"  # none charged
    assert 0 < client.pttl(BURST) <= 2 * HOUR


def test_admit_request_tests_the_token_window_without_charging_it(client: redis.Redis) -> None:
    assert admit(client, metered=True)[0] == 1 and not client.exists(TPM)
    client.hset(TPM, mapping={"w": now_ms(client) // HOUR, "c": 10, "p": 0})
    answer = admit(client, metered=True)
    assert answer[0] == 0 and answer[6:] == [10, 0]
    assert client.hget(RPM, "c") == b"1"  # the refused request charged nothing


def test_slot_lease_caps_renews_and_frees_lapsed_slots(client: redis.Redis) -> None:
    streams = "uml:rl:{k}:streams"

    def lease(cap: int, token: str) -> list[int]:
        return list(run(client, "slot_lease", [streams], [cap, 30_000, token]))

    assert lease(2, "a") == [1, 1] and lease(2, "b") == [1, 2] and lease(2, "c") == [0, 2]
    client.zadd(streams, {"b": 1})  # b's lease lapsed (its process died)
    assert lease(2, "c") == [1, 2] and client.zscore(streams, "b") is None
    before = client.zscore(streams, "a") or 0
    assert lease(0, "a") == [1, 2] and (client.zscore(streams, "a") or 0) >= before
    assert lease(0, "gone") == [1, 2] and client.zscore(streams, "gone") is None
    assert 0 < client.pttl(streams) <= 30_000


# ---- reserve_file-2 ----------------------------------------------------------------------

USAGE, SIZES = "uml:fileuse:{k}", "uml:fileuse:{k}:bytes"


def reserve(client: redis.Redis, file_id: str, size: int) -> list[int]:
    args = [1000, file_id, size, 1300, 100, 3, 3600]
    return list(run(client, "reserve_file", [USAGE, SIZES], args))


def test_reserve_file_holds_room_within_the_quota(client: redis.Redis) -> None:
    client.zadd(USAGE, {"old": 999, "kept": 5000})  # "old" expired at 999
    client.hset(SIZES, mapping={"old": 90, "kept": 40})
    assert reserve(client, "", 60) == [1, 40, 1]  # a check only: nothing is reserved
    assert client.zcard(USAGE) == 1 and client.hget(SIZES, "old") is None
    assert reserve(client, "f1", 70) == [0, 40, 1]  # 110 bytes > 100
    assert reserve(client, "f1", 60) == [1, 40, 1]
    assert client.zscore(USAGE, "f1") == 1300 and client.hget(SIZES, "f1") == b"60"
    assert 0 < client.ttl(USAGE) <= 3600 and 0 < client.ttl(SIZES) <= 3600
    assert reserve(client, "f2", 0) == [1, 100, 2]
    assert reserve(client, "f3", 0) == [0, 100, 3]  # 4 files > 3


# ---- move_batch-1, cancel_batch-1, settle_batch_line-4 -----------------------------------

BATCH = "uml:batch:b"


def test_move_batch_moves_only_from_the_expected_status(client: redis.Redis) -> None:
    client.hset(BATCH, "status", "in_progress")
    args = ["in_progress", "finalizing", "finalizing_at", 1000]
    assert run(client, "move_batch", [BATCH], args) == 1
    assert client.hgetall(BATCH) == {b"status": b"finalizing", b"finalizing_at": b"1000"}
    assert run(client, "move_batch", [BATCH], args) == 0
    assert client.hget(BATCH, "status") == b"finalizing"


def test_cancel_batch_moves_an_unfinished_batch_of_its_owner_to_cancelling(
    client: redis.Redis,
) -> None:
    client.hset(BATCH, mapping={"status": "in_progress", "owner": "k"})
    assert run(client, "cancel_batch", [BATCH], ["other", 1000]) is None
    assert run(client, "cancel_batch", [BATCH], ["k", 1000]) == b"cancelling"
    fields = client.hgetall(BATCH)
    assert fields[b"cancelling_at"] == b"1000" and fields[b"stop_reason"] == b"cancelled"
    client.hset(BATCH, "status", "completed")
    assert run(client, "cancel_batch", [BATCH], ["k", 1001]) == b"completed"
    assert client.hget(BATCH, "cancelling_at") == b"1000"
    assert run(client, "cancel_batch", ["uml:batch:none"], ["k", 1000]) is None


def test_settle_batch_line_records_a_finished_job_once(client: redis.Redis) -> None:
    keys = [BATCH, f"{BATCH}:pending", f"{BATCH}:out", f"{BATCH}:err"]
    client.sadd(keys[1], "j1", "j2")
    assert run(client, "settle_batch_line", keys, ["j1", "out", "L1", 1, 0, 3, 4]) == 1
    assert run(client, "settle_batch_line", keys, ["j1", "out", "L1", 1, 0, 3, 4]) == 0
    assert run(client, "settle_batch_line", keys, ["j2", "err", "L2", 0, 1, 2, 0]) == 1
    assert client.lrange(keys[2], 0, -1) == [b"L1"] and client.lrange(keys[3], 0, -1) == [b"L2"]
    assert client.hgetall(BATCH) == {
        b"completed": b"1",
        b"failed": b"1",
        b"input_tokens": b"5",
        b"output_tokens": b"4",
    }
    assert client.scard(keys[1]) == 0


# ---- lock-1, unlock-1 --------------------------------------------------------------------


def test_lock_is_taken_when_free_renewed_by_its_holder_and_refused_to_another(
    client: redis.Redis,
) -> None:
    lease = "uml:batches:runner"
    assert run(client, "lock", [lease], ["a", 5000]) == 1 and client.get(lease) == b"a"
    client.pexpire(lease, 100)
    assert run(client, "lock", [lease], ["a", 5000]) == 1 and client.pttl(lease) > 100
    assert run(client, "lock", [lease], ["b", 5000]) == 0 and client.get(lease) == b"a"


def test_unlock_releases_only_its_holders_lock(client: redis.Redis) -> None:
    client.set("lock", "a")
    assert run(client, "unlock", ["lock"], ["b"]) == 0 and client.get("lock") == b"a"
    assert run(client, "unlock", ["lock"], ["a"]) == 1 and not client.exists("lock")
    assert run(client, "unlock", ["lock"], ["a"]) == 0
