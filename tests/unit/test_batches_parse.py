"""Batch input files → prepared requests and error lines (pure), and batch records → the wire."""

from __future__ import annotations

import json
from typing import Any

import pytest

from api.errors import APIError
from api.services.batches.parse import check_input_file, parse_input
from api.services.batches.store import to_batch
from protocol.settings import ServerSettings

CFG = ServerSettings(max_tokens_cap=100)
CHAT = "/v1/chat/completions"


def line(custom_id: Any = "a", url: str = CHAT, **body: Any) -> bytes:
    payload = {
        "custom_id": custom_id,
        "method": "POST",
        "url": url,
        "body": {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], **body},
    }
    return json.dumps(payload).encode()


def parse(*lines: bytes, max_lines: int = 100, endpoint: str = CHAT) -> Any:
    return parse_input("batch_x", b"\n".join(lines), endpoint, CFG, max_lines)


def test_valid_lines_become_specs_in_file_order() -> None:
    parsed = parse(line("a", max_tokens=5), b"", line("b", temperature=0, seed=3))
    assert parsed.total == 2 and not parsed.errors and not parsed.fatal
    assert [(p.line, p.custom_id) for p in parsed.todo] == [(1, "a"), (3, "b")]
    assert parsed.todo[0].spec.sampling.max_tokens == 5
    assert parsed.todo[1].spec.sampling.seed == 3


@pytest.mark.parametrize(
    ("raw", "code", "custom_id", "needle"),
    [
        (b'{"custom_id": "j", "method": "POST"', "invalid_request", None, "not valid JSON"),
        (line("t", temperature=7), "invalid_request", "t", "param `body.temperature`"),
        (line("u", url="/v1/completions"), "invalid_request", "u", "param `url`"),
        (line("n", n=2), "unsupported_parameter", "n", "body.n"),
        (line(""), "invalid_request", "", "custom_id"),
        (line(5), "invalid_request", None, "custom_id"),
        (line("m", max_tokens=1000), "invalid_request", "m", "max_tokens"),
    ],
)
def test_invalid_lines_go_to_the_error_file(
    raw: bytes, code: str, custom_id: str | None, needle: str
) -> None:
    parsed = parse(line("ok"), raw)
    assert [p.custom_id for p in parsed.todo] == ["ok"]
    assert parsed.total == 2 and not parsed.fatal
    [error] = parsed.errors
    assert error.custom_id == custom_id and error.response is None
    assert error.error is not None and error.error.code == code
    assert error.error.message.startswith("Line 2: ") and needle in error.error.message


def test_a_repeated_custom_id_is_an_error_line_and_the_first_runs() -> None:
    parsed = parse(line("a", seed=1), line("a", seed=2))
    assert [p.spec.sampling.seed for p in parsed.todo] == [1]
    assert parsed.errors[0].error is not None
    assert parsed.errors[0].error.code == "duplicate_custom_id"


def test_whole_file_faults_fail_the_batch() -> None:
    assert parse(b"", b"  ").fatal[0].code == "empty_file"
    too_many = parse(line("a"), line("b"), line("c"), max_lines=2)
    assert too_many.fatal[0].code == "too_many_requests"
    assert parse_input("b", b"\xff", CHAT, CFG, 10).fatal[0].code == "invalid_file"


def test_completions_endpoint_lines() -> None:
    raw = json.dumps(
        {
            "custom_id": "c",
            "method": "POST",
            "url": "/v1/completions",
            "body": {"model": "tiny", "prompt": "once", "max_tokens": 4},
        }
    ).encode()
    parsed = parse(raw, endpoint="/v1/completions")
    assert parsed.todo[0].spec.kind == "completion" and parsed.todo[0].spec.prompt == "once"


def test_upload_checks() -> None:
    check_input_file(line() + b"\n" + line("b"), 2)
    for content, max_lines in [(b"\n \n", 5), (b"\xff", 5), (line() + b"\n" + line("b"), 1)]:
        with pytest.raises(APIError) as caught:
            check_input_file(content, max_lines)
        assert caught.value.status == 400 and caught.value.info.param == "file"


def test_batch_hash_to_wire() -> None:
    batch = to_batch(
        {
            b"id": b"batch_1",
            b"endpoint": CHAT.encode(),
            b"input_file_id": b"file-1",
            b"completion_window": b"24h",
            b"status": b"in_progress",
            b"created_at": b"100",
            b"expires_at": b"86500",
            b"total": b"3",
            b"completed": b"1",
            b"failed": b"1",
            b"input_tokens": b"10",
            b"output_tokens": b"5",
            b"model": b"",
            b"metadata": b'{"k": "v"}',
        }
    )
    assert batch.request_counts.total == 3 and batch.usage.total_tokens == 15
    assert batch.metadata == {"k": "v"} and batch.model is None
    assert batch.expires_at == 86500 and batch.completed_at is None
