"""The jobs API's pure logic, and the worker's claim script against a real Redis."""

from __future__ import annotations

import json
import time
from typing import Any

import msgspec
import pytest
import redis

from api.errors import APIError
from api.services.job_store import view_status
from api.services.jobs import body_hash, to_job
from api.validation import job_submission, parse_deadline
from protocol.events import decode_event, expired_unstarted, template
from protocol.jobs import JobRecord, record_to_hash
from protocol.keys import LEASES, QUEUED, events_key, job_key
from protocol.settings import ServerSettings
from protocol.states import JobStatus, Priority
from workers.runtime import _CLAIM

CFG = ServerSettings(max_tokens_cap=100)


def _submission(**extra: Any) -> bytes:
    body = {"model": "tiny", "prompt": "hi"}
    return json.dumps({"type": "completion", "body": body, **extra}).encode()


def test_submission_defaults_to_batch() -> None:
    new = job_submission(_submission(), CFG)
    assert new.priority is Priority.BATCH and new.deadline is None and new.metadata == {}
    assert new.spec.kind == "completion" and new.spec.prompt == "hi"


def test_submission_errors_name_the_field() -> None:
    cases = [
        (_submission(priorty="batch"), None),  # unknown top-level fields are refused
        (_submission(priority="urgent"), "priority"),
        (_submission(deadline="soon"), "deadline"),
        (_submission(metadata={"k": "v" * 600}), "metadata.k"),
        (json.dumps({"type": "chat", "body": {"model": "tiny"}}).encode(), "body.messages"),
        (_submission(body={"model": "tiny", "prompt": "x", "max_tokens": 101}), None),
    ]
    for raw, param in cases:
        with pytest.raises(APIError) as info:
            job_submission(raw, CFG)
        assert info.value.status == 400
        if param is not None:
            assert info.value.info.param == param, info.value.info


def test_deadline_accepts_unix_seconds_and_iso() -> None:
    assert parse_deadline(None) is None
    assert parse_deadline(1_700_000_000) == 1_700_000_000.0
    assert parse_deadline("2023-11-14T22:13:20Z") == 1_700_000_000.0
    assert parse_deadline("2023-11-14T22:13:20") == 1_700_000_000.0  # naive: UTC
    assert parse_deadline("2023-11-14T23:13:20+01:00") == 1_700_000_000.0


def test_body_hash_ignores_key_order_and_spacing() -> None:
    assert body_hash(b'{"a": 1, "b": [2]}') == body_hash(b'{"b":[2],"a":1}')
    assert body_hash(b'{"a": 1}') != body_hash(b'{"a": 2}')


def test_queued_job_past_its_deadline_reads_expired() -> None:
    record = JobRecord(id="j", model="m", status=JobStatus.QUEUED, deadline=100.0)
    assert view_status(record, now=99.0) is JobStatus.QUEUED
    assert view_status(record, now=100.0) is JobStatus.EXPIRED
    running = JobRecord(id="j", model="m", status=JobStatus.RUNNING, deadline=100.0)
    assert view_status(running, now=200.0) is JobStatus.RUNNING
    assert to_job(record, position=3).status is JobStatus.EXPIRED
    assert to_job(record, position=3).queue_position is None


def test_claim_script_expires_a_job_past_its_deadline(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    claim = client.register_script(_CLAIM)
    now = time.time()
    late = JobRecord(id="late", model="m", status=JobStatus.QUEUED, deadline=now - 1)
    ok = JobRecord(id="ok", model="m", status=JobStatus.QUEUED, deadline=now + 60)
    for record in (late, ok):
        client.hset(job_key(record.id), mapping=record_to_hash(record))  # type: ignore[arg-type]
        client.hset(job_key(record.id), "msg", "m")
    args = ["w-1", now, template(expired_unstarted()), 600, 15_000]
    try:
        late_keys = [job_key("late"), events_key("late"), LEASES, QUEUED]
        outcome = claim(keys=late_keys, args=[*args, "late"])
        assert outcome[:3] == [b"expired", 0, 1]
        fields = client.hgetall(job_key("late"))
        assert fields[b"status"] == b"expired" and b"msg" not in fields
        assert b"started_at" not in fields and 0 < client.ttl(job_key("late")) <= 600
        [(entry_id, data)] = client.xrange(events_key("late"))
        assert entry_id == b"1-1"
        assert decode_event(data[b"data"]) == msgspec.structs.replace(expired_unstarted(), seq=1)
        again = claim(keys=late_keys, args=[*args, "late"])
        assert again[0] == b"skip:expired"
        assert client.zscore(LEASES, "late") is None
        client.zadd(QUEUED, {"ok": 1})
        keys = [job_key("ok"), events_key("ok"), LEASES, QUEUED]
        claimed = claim(keys=keys, args=[*args, "ok"])
        assert claimed[:2] == [b"claimed", 1]
        assert client.hget(job_key("ok"), "msg") is None
        assert client.hget(job_key("ok"), "task") == b"m"  # the reaper re-sends it
        assert client.zscore(LEASES, "ok") is not None
        assert client.zscore(QUEUED, "ok") is None
    finally:
        client.close()
