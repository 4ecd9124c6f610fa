"""Files + Batches over real HTTP with the real worker, through the official openai SDK and
plain HTTP: upload, create, poll to completion, download results, cancel, list, errors."""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from protocol.keys import BATCH_RUNNER_LEASE, batch_key, batch_part_key
from tests.auth import ADMIN_KEY, AUTH
from tests.integration.conftest import MODEL
from tests.integration.stack import Stack, announce_model, wait_for, withdraw_model

pytestmark = pytest.mark.timeout(180)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "batches.md"

FINAL = {"completed", "failed", "cancelled", "expired"}


def chat_line(custom_id: str, text: str, max_tokens: int = 8, **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": MODEL,
            "messages": [{"role": "user", "content": text}],
            "max_tokens": max_tokens,
            "temperature": 0,
            **body,
        },
    }


def jsonl(lines: list[Any]) -> bytes:
    return b"".join(
        (line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines
    )


def parse_jsonl(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines() if line.strip()]


@pytest.fixture
def sdk(api_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{api_url}/v1", api_key=ADMIN_KEY, max_retries=0) as client:
        yield client


def wait_final(sdk: openai.OpenAI, batch_id: str, timeout: float = 120) -> Any:
    found: dict[str, Any] = {}

    def done() -> bool:
        found["batch"] = sdk.batches.retrieve(batch_id)
        return found["batch"].status in FINAL

    wait_for(done, timeout, f"batch {batch_id} to finish", interval=0.1)
    return found["batch"]


def test_openai_sdk_batch_round_trip(sdk: openai.OpenAI, http: httpx.Client) -> None:
    lines: list[Any] = [chat_line(f"req-{i}", f"hello {i}") for i in range(6)]
    lines.append(chat_line("bad-temp", "x", temperature=9))  # out of range
    lines.append({**chat_line("wrong-url", "x"), "url": "/v1/completions"})
    lines.append(chat_line("req-0", "duplicate id"))
    lines.append(
        {**chat_line("no-model", "x"), "body": {**chat_line("n", "x")["body"], "model": "nope"}}
    )
    lines.append(chat_line("too-long", "x", max_tokens=4000))  # past the worker's 2048
    uploaded = sdk.files.create(file=("in.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.bytes == len(jsonl(lines))
    assert sdk.files.retrieve(uploaded.id).filename == "in.jsonl"
    assert sdk.files.content(uploaded.id).content == jsonl(lines)

    batch = sdk.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"run": "1"},
    )
    assert batch.status == "validating" and batch.metadata == {"run": "1"}
    done = wait_final(sdk, batch.id)
    assert done.status == "completed", done
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed) == (11, 6)
    assert done.request_counts.failed == 5
    assert done.completed_at and done.in_progress_at and done.finalizing_at
    assert done.usage is not None and done.usage.output_tokens > 0

    assert done.output_file_id is not None and done.error_file_id is not None
    out = parse_jsonl(sdk.files.content(done.output_file_id).content)
    assert sorted(o["custom_id"] for o in out) == [f"req-{i}" for i in range(6)]
    for line in out:
        assert line["error"] is None
        assert line["response"]["status_code"] == 200
        body = line["response"]["body"]
        assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"]
        # each output equals what the same request gets from the sync endpoint
    sync = http.post("/v1/chat/completions", json=chat_line("x", "hello 3")["body"]).json()
    by_id = {o["custom_id"]: o for o in out}
    text = by_id["req-3"]["response"]["body"]["choices"][0]["message"]["content"]
    assert text == sync["choices"][0]["message"]["content"]

    errors = {e["custom_id"]: e for e in parse_jsonl(sdk.files.content(done.error_file_id).content)}
    assert set(errors) == {"bad-temp", "wrong-url", "req-0", "no-model", "too-long"}
    assert errors["no-model"]["error"]["code"] == "model_not_found"
    assert errors["too-long"]["error"]["code"] == "context_length_exceeded"
    assert errors["req-0"]["error"]["code"] == "duplicate_custom_id"
    assert "Line 7" in errors["bad-temp"]["error"]["message"]
    assert errors["bad-temp"]["response"] is None

    listed = [b.id for b in sdk.batches.list(limit=100)]
    assert batch.id in listed
    output = sdk.files.retrieve(done.output_file_id)
    assert output.purpose == "batch_output"


def test_cancel_keeps_finished_results(sdk: openai.OpenAI) -> None:
    lines = [chat_line(f"c-{i}", f"count {i}", max_tokens=200) for i in range(40)]
    uploaded = sdk.files.create(file=("c.jsonl", jsonl(lines)), purpose="batch")
    batch = sdk.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )

    def some_done() -> bool:
        counts = sdk.batches.retrieve(batch.id).request_counts
        return counts is not None and counts.completed >= 1

    wait_for(some_done, 90, "a first result", interval=0.05)
    cancelling = sdk.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled")
    done = wait_final(sdk, batch.id)
    assert done.status == "cancelled" and done.cancelled_at
    counts = done.request_counts
    assert counts is not None and counts.total == 40
    assert counts.completed >= 1 and counts.completed + counts.failed == 40
    assert done.output_file_id
    out = parse_jsonl(sdk.files.content(done.output_file_id).content)
    assert len(out) == counts.completed
    assert done.error_file_id
    errors = parse_jsonl(sdk.files.content(done.error_file_id).content)
    assert len(errors) == counts.failed
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    seen = [o["custom_id"] for o in out] + [e["custom_id"] for e in errors]
    assert sorted(seen) == sorted(f"c-{i}" for i in range(40))
    # a second cancel answers the batch as it is
    assert sdk.batches.cancel(batch.id).status == "cancelled"


def test_file_errors_are_openai_shaped(http: httpx.Client, api_url: str) -> None:
    def upload(content: bytes, purpose: str = "batch") -> httpx.Response:
        return http.post(
            "/v1/files", files={"file": ("f.jsonl", content)}, data={"purpose": purpose}
        )

    for response, param in [
        (upload(b"\n\n"), "file"),
        (upload(b"\xff\xfe"), "file"),
        (upload(jsonl([chat_line("a", "b")]), purpose="fine-tune"), "purpose"),
        (http.post("/v1/files", data={"purpose": "batch"}), "file"),
    ]:
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and error["param"] == param

    missing = http.get("/v1/files/file-nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "file_not_found"
    bad = http.post(
        "/v1/batches",
        json={
            "input_file_id": "file-nope",
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        },
    )
    assert bad.status_code == 404
    made = upload(jsonl([chat_line("a", "b")])).json()
    for body, param in [
        (
            {"input_file_id": made["id"], "endpoint": "/v1/embeddings", "completion_window": "24h"},
            "endpoint",
        ),
        (
            {
                "input_file_id": made["id"],
                "endpoint": "/v1/chat/completions",
                "completion_window": "1h",
            },
            "completion_window",
        ),
        ({"input_file_id": made["id"], "endpoint": "/v1/chat/completions", "extra": 1}, "extra"),
    ]:
        response = http.post("/v1/batches", json=body)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == param

    deleted = http.delete(f"/v1/files/{made['id']}")
    assert deleted.json() == {"id": made["id"], "object": "file", "deleted": True}
    assert http.get(f"/v1/files/{made['id']}").status_code == 404


def test_junk_is_refused_at_upload_with_its_line_number(http: httpx.Client) -> None:
    """A batch input file is JSONL of request lines; what is not is refused at upload (it
    used to be stored: six 48 MiB files of one junk line each took 336 MB of Redis)."""
    before = {f["id"] for f in http.get("/v1/files").json()["data"]}
    good = json.dumps(chat_line("a", "b")).encode()
    for junk in [b"x" * 1000, b'{"custom_id": "broken", "method": "POST"', b"[1, 2]"]:
        response = http.post(
            "/v1/files",
            files={"file": ("f.jsonl", good + b"\n\n" + junk + b"\n")},
            data={"purpose": "batch"},
        )
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == "file" and error["code"] == "invalid_file", error
        assert error["message"].startswith("Line 3: "), error
    assert {f["id"] for f in http.get("/v1/files").json()["data"]} == before


def test_files_and_batches_are_private_to_their_key(http: httpx.Client, api_url: str) -> None:
    made = http.post("/admin/keys", json={"name": "batches-other"})
    assert made.status_code in (200, 201), made.text
    other = {"Authorization": f"Bearer {made.json()['key']}"}
    uploaded = http.post(
        "/v1/files",
        files={"file": ("f.jsonl", jsonl([chat_line("a", "b")]))},
        data={"purpose": "batch"},
    ).json()
    with httpx.Client(base_url=api_url, headers=other, timeout=30) as stranger:
        assert stranger.get(f"/v1/files/{uploaded['id']}").status_code == 404
        assert stranger.get(f"/v1/files/{uploaded['id']}/content").status_code == 404
        assert stranger.delete(f"/v1/files/{uploaded['id']}").status_code == 404
        response = stranger.post(
            "/v1/batches",
            json={"input_file_id": uploaded["id"], "endpoint": "/v1/chat/completions"},
        )
        assert response.status_code == 404
        assert uploaded["id"] not in [f["id"] for f in stranger.get("/v1/files").json()["data"]]
    assert http.get(f"/v1/files/{uploaded['id']}", headers=AUTH).status_code == 200


def test_completions_batch_and_the_completion_window(
    sdk: openai.OpenAI, stack: Stack, http: httpx.Client
) -> None:
    """Lines for a model whose worker takes nothing stay queued; when the window closes the
    batch is ``expired``, its queued jobs never run, and each line gets ``batch_expired``."""
    client = redis.Redis.from_url(stack.redis_url)
    announce_model(client, "parked-worker", "parked")
    try:
        lines = [
            {
                "custom_id": f"p-{i}",
                "method": "POST",
                "url": "/v1/completions",
                "body": {"model": "parked", "prompt": "x", "max_tokens": 4},
            }
            for i in range(5)
        ]
        uploaded = sdk.files.create(file=("p.jsonl", jsonl(lines)), purpose="batch")
        batch = sdk.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/completions", completion_window="24h"
        )

        def queued() -> bool:
            return client.scard(batch_part_key(batch.id, "pending")) == 5

        wait_for(queued, 30, "the batch's jobs to be queued")
        jobs = [j.decode() for j in client.smembers(batch_part_key(batch.id, "pending"))]
        assert sdk.batches.retrieve(batch.id).status == "in_progress"
        client.hset(batch_key(batch.id), "expires_at", int(time.time()) - 1)
        done = wait_final(sdk, batch.id, timeout=30)
        assert done.status == "expired" and done.expired_at and done.output_file_id is None
        assert done.request_counts is not None and done.request_counts.failed == 5
        assert done.error_file_id is not None
        errors = parse_jsonl(sdk.files.content(done.error_file_id).content)
        assert sorted(e["custom_id"] for e in errors) == [f"p-{i}" for i in range(5)]
        assert {e["error"]["code"] for e in errors} == {"batch_expired"}
        for job_id in jobs:
            job = http.get(f"/v1/jobs/{job_id}").json()
            assert job["status"] == "cancelled" and job["metadata"]["batch_id"] == batch.id
    finally:
        withdraw_model(client, "parked-worker")
        client.close()


def test_another_replica_takes_over_when_the_runner_lease_lapses(
    sdk: openai.OpenAI, stack: Stack
) -> None:
    """A lease held by a process that died stalls batches only until it lapses."""
    client = redis.Redis.from_url(stack.redis_url)
    try:
        client.set(BATCH_RUNNER_LEASE, "a-dead-replica", px=2000)
        uploaded = sdk.files.create(file=("l.jsonl", jsonl([chat_line("l", "x")])), purpose="batch")
        batch = sdk.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        assert sdk.batches.retrieve(batch.id).status == "validating"
        done = wait_final(sdk, batch.id, timeout=60)
        assert done.status == "completed"
        assert client.get(BATCH_RUNNER_LEASE) != b"a-dead-replica"
    finally:
        client.close()


def test_the_docs_example_runs(
    api_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("UML_API_KEY", ADMIN_KEY)
    [code] = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S)
    exec(compile(code.replace("http://127.0.0.1:8000", api_url), str(DOCS), "exec"), {})
    out = capsys.readouterr().out
    assert out.startswith("completed") and all(f"\nq{i} " in out for i in range(3))
