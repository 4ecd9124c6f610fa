"""The jobs API's pure logic (the worker's claim script: tests/unit/test_claim.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from api.errors import APIError
from api.services.job_store import view_status
from api.services.jobs import body_hash, to_job
from api.validation import job_submission, parse_deadline
from protocol.jobs import JobRecord
from protocol.settings import ServerSettings
from protocol.states import JobStatus, Priority

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
