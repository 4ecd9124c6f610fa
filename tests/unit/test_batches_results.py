"""A finished job → its batch's output or error line (api.services.batches.results), each case."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from api.services.batches.results import JOB_FIELDS, STOPPED, result_line
from protocol.openai import Usage

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def job(status: str | None, **fields: Any) -> dict[str, bytes | None]:
    """The job's fields as one HMGET reads them: bytes, ``None`` where the hash has none."""
    values: dict[str, Any] = {"status": status, "metadata": {"custom_id": "req-1"}, **fields}
    out: dict[str, bytes | None] = dict.fromkeys(JOB_FIELDS)
    for name, value in values.items():
        if value is not None:
            text = value if isinstance(value, str) else json.dumps(value)
            out[name] = text.encode()
    return out


def line_json(line: Any) -> dict[str, Any]:
    return json.loads(msgspec.json.encode(line))  # type: ignore[no-any-return]


def succeeded(**fields: Any) -> dict[str, bytes | None]:
    base = {"text": "Paris", "finish_reason": "length", "usage": USAGE, "model": "tiny"}
    return job("succeeded", created_at="1767225600.5", **{**base, **fields})


def test_a_succeeded_chat_job_is_an_output_line_with_its_chat_response() -> None:
    target, line, usage = result_line(CHAT, "job-1", succeeded(), None)
    assert (target, usage) == ("out", Usage(**USAGE))
    out = line_json(line)
    assert (out["id"], out["custom_id"], out["error"]) == ("batch_req_job-1", "req-1", None)
    response = out["response"]
    assert (response["status_code"], response["request_id"]) == (200, "job-1")
    body = response["body"]
    assert (body["object"], body["id"], body["model"], body["created"]) == (
        "chat.completion",
        "job-1",
        "tiny",
        1767225600,
    )
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Paris"}
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == USAGE


def test_a_succeeded_completion_job_is_a_text_completion() -> None:
    target, line, _ = result_line(COMPLETIONS, "job-1", succeeded(), None)
    body = line_json(line)["response"]["body"]
    assert (target, body["object"], body["choices"][0]["text"]) == (
        "out",
        "text_completion",
        "Paris",
    )


def test_a_succeeded_job_with_no_reason_or_usage_stopped_and_used_nothing() -> None:
    target, line, usage = result_line(
        CHAT, "job-1", succeeded(finish_reason=None, usage=None), None
    )
    body = line_json(line)["response"]["body"]
    assert (target, usage) == ("out", None)
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


def test_a_succeeded_job_stays_an_output_line_when_its_batch_stopped() -> None:
    assert result_line(CHAT, "job-1", succeeded(), "cancelled").target == "out"


@pytest.mark.parametrize(
    ("error_type", "status"),
    [("invalid_request_error", 400), ("service_unavailable", 503), ("server_error", 500)],
)
def test_a_failed_job_is_an_error_line_with_its_sync_calls_status(
    error_type: str, status: int
) -> None:
    error = {"message": "no", "type": error_type, "param": None, "code": "c"}
    target, line, usage = result_line(CHAT, "job-2", job("failed", error=error, usage=USAGE), None)
    assert (target, usage) == ("err", Usage(**USAGE))
    out = line_json(line)
    assert (out["id"], out["custom_id"], out["error"]) == ("batch_req_job-2", "req-1", None)
    response = out["response"]
    assert (response["status_code"], response["request_id"]) == (status, "job-2")
    assert response["body"] == {"error": error}


@pytest.mark.parametrize(
    ("status", "reason", "code"),
    [
        ("cancelled", "cancelled", "batch_cancelled"),
        ("expired", "expired", "batch_expired"),
        ("failed", "cancelled", "batch_cancelled"),  # failed with no error recorded
        ("expired", None, "batch_expired"),
        ("cancelled", None, "cancelled"),
        ("failed", None, "job_lost"),
        (None, None, "job_lost"),  # the job's record is gone
    ],
)
def test_a_job_that_produced_nothing_is_an_error_line_with_a_code(
    status: str | None, reason: str | None, code: str
) -> None:
    target, line, usage = result_line(CHAT, "job-3", job(status), reason)
    out = line_json(line)
    assert (target, usage, out["response"]) == ("err", None, None)
    assert out["error"]["code"] == code
    if code in ("batch_cancelled", "batch_expired"):
        assert (code, out["error"]["message"]) in STOPPED.values()


def test_a_job_with_no_metadata_has_no_custom_id() -> None:
    line = line_json(result_line(CHAT, "job-4", job(None, metadata=None), None).line)
    assert (line["id"], line["custom_id"]) == ("batch_req_job-4", None)
