"""The jobs API over real HTTP with the real worker: submit, poll, list, follow, cancel."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import msgspec
import pytest
import redis

from protocol.keys import WORKERS_SET, job_key, worker_key
from protocol.workers import WorkerInfo
from tests.integration.conftest import MODEL
from tests.integration.stack import Stack, wait_for

pytestmark = pytest.mark.timeout(120)

TERMINAL = {"succeeded", "failed", "cancelled", "expired"}


def completion(prompt: str, max_tokens: int, **extra: Any) -> dict[str, Any]:
    body = {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    return {"type": "completion", "body": {**body, **extra}}


def submit(http: httpx.Client, job: dict[str, Any], **headers: str) -> dict[str, Any]:
    response = http.post("/v1/jobs", json=job, headers=headers)
    assert response.status_code == 202, response.text
    record: dict[str, Any] = response.json()
    assert response.headers["location"] == f"/v1/jobs/{record['id']}"
    return record


def finished(http: httpx.Client, job_id: str) -> dict[str, Any]:
    """Poll the job until it reaches a terminal state."""
    found: dict[str, Any] = {}

    def done() -> bool:
        found.update(http.get(f"/v1/jobs/{job_id}").json())
        return found["status"] in TERMINAL

    wait_for(done, 60, f"job {job_id} to finish", interval=0.05)
    return found


def sse(
    response: httpx.Response, stop_after: int | None = None
) -> list[tuple[int, dict[str, Any]]]:
    """``(id, event)`` pairs of a jobs SSE stream (at most ``stop_after``)."""
    out: list[tuple[int, dict[str, Any]]] = []
    seq: int | None = None
    for line in response.iter_lines():
        if line.startswith("id: "):
            seq = int(line[4:])
        elif line.startswith("data: "):
            event = json.loads(line[6:])
            assert seq == event["seq"]
            out.append((seq, event))
            if stop_after is not None and len(out) >= stop_after:
                break
    return out


def events(
    http: httpx.Client, job_id: str, stop_after: int | None = None, **kw: Any
) -> list[dict[str, Any]]:
    with http.stream("GET", f"/v1/jobs/{job_id}/events", **kw) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return [event for _, event in sse(response, stop_after)]


def user_client(api_url: str, http: httpx.Client, name: str) -> httpx.Client:
    made = http.post("/admin/keys", json={"name": name})
    assert made.status_code == 201, made.text
    key = made.json()["key"]
    return httpx.Client(base_url=api_url, timeout=60, headers={"Authorization": f"Bearer {key}"})


def test_submit_poll_text_equals_stream(http: httpx.Client) -> None:
    job = {**completion("The", 24), "metadata": {"run": "1"}}
    record = submit(http, job)
    assert record["status"] in {"queued", "running", "succeeded"}
    assert record["priority"] == "batch" and record["type"] == "completion"
    done = finished(http, record["id"])
    streamed = events(http, record["id"])
    text = "".join(e["text"] for e in streamed if e["type"] == "token")
    sync = http.post("/v1/completions", json=job["body"]).json()
    assert done["status"] == "succeeded"
    assert done["text"] == text == sync["choices"][0]["text"]
    assert done["finish_reason"] == sync["choices"][0]["finish_reason"]
    assert done["usage"] == sync["usage"]
    assert done["completion_tokens"] == done["usage"]["completion_tokens"]
    assert done["metadata"] == {"run": "1"} and done["queue_position"] is None
    t = done["timings"]
    assert t["created_at"] <= t["started_at"] <= t["first_token_at"] <= t["finished_at"]


def test_idempotency_key(http: httpx.Client) -> None:
    key = f"idem-{time.time_ns()}"
    first = submit(http, completion("same", 2), **{"Idempotency-Key": key})
    again = http.post("/v1/jobs", json=completion("same", 2), headers={"Idempotency-Key": key})
    assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first["id"]
    other = http.post("/v1/jobs", json=completion("other", 2), headers={"Idempotency-Key": key})
    assert other.status_code == 409, other.text
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    fresh = submit(http, completion("same", 2), **{"Idempotency-Key": key + "x"})
    assert fresh["id"] != first["id"]


def test_list_is_own_newest_first_and_paginated(api_url: str, http: httpx.Client) -> None:
    with user_client(api_url, http, "lister") as mine, user_client(api_url, http, "other") as other:
        ids = [submit(mine, completion(f"l{i}", 1))["id"] for i in range(5)]
        theirs = submit(other, completion("x", 1))["id"]
        for job_id in ids:
            finished(mine, job_id)
        seen: list[str] = []
        after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 2, **({"after": after} if after else {})}
            page = mine.get("/v1/jobs", params=params).json()
            seen += [j["id"] for j in page["data"]]
            assert len(page["data"]) <= 2
            if not page["has_more"]:
                break
            after = page["last_id"]
        assert seen == ids[::-1]
        assert theirs not in seen
        done = mine.get("/v1/jobs", params={"status": "succeeded", "limit": 100}).json()
        assert {j["id"] for j in done["data"]} == set(ids)
        assert mine.get("/v1/jobs", params={"status": "queued"}).json()["data"] == []


def test_other_keys_job_is_404_everywhere(api_url: str, http: httpx.Client) -> None:
    job_id = submit(http, completion("mine", 2))["id"]
    with user_client(api_url, http, "stranger") as stranger:
        assert stranger.get(f"/v1/jobs/{job_id}").status_code == 404
        assert stranger.get(f"/v1/jobs/{job_id}/events").status_code == 404
        assert stranger.post(f"/v1/jobs/{job_id}/cancel").status_code == 404
        assert stranger.get("/v1/jobs/job-nope").status_code == 404
    assert finished(http, job_id)["status"] == "succeeded"


def test_sse_resumes_without_gap_or_duplicate(http: httpx.Client) -> None:
    job_id = submit(http, completion("resume", 300))["id"]
    first = events(http, job_id, stop_after=3)
    last = str(first[-1]["seq"])
    middle = events(http, job_id, stop_after=3, headers={"Last-Event-ID": last})
    rest = events(http, job_id, params={"after": middle[-1]["seq"]})
    seqs = [e["seq"] for e in first + middle + rest]
    assert seqs == list(range(1, len(seqs) + 1))
    assert rest[-1]["type"] == "done"
    # After the run: the whole log, a resumed tail, and an immediate end past the last seq.
    whole = events(http, job_id)
    assert [e["seq"] for e in whole] == seqs
    assert [e["seq"] for e in events(http, job_id, headers={"Last-Event-ID": "2"})] == seqs[2:]
    assert events(http, job_id, params={"after": seqs[-1]}) == []


def test_cancel_running_job(http: httpx.Client) -> None:
    job = completion("cancel me", 2000, temperature=1.0, seed=11)
    job_id = submit(http, job)["id"]
    wait_for(
        lambda: http.get(f"/v1/jobs/{job_id}").json()["completion_tokens"] > 0,
        60,
        "the first tokens",
    )
    cancelled = http.post(f"/v1/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    record = cancelled.json()
    assert record["status"] == "cancelled", record
    assert record["finish_reason"] == "cancelled"
    assert record["completion_tokens"] < 2000
    log = events(http, job_id)
    assert log[-1]["type"] == "done" and log[-1]["finish_reason"] == "cancelled"
    again = http.post(f"/v1/jobs/{job_id}/cancel").json()
    assert again["status"] == "cancelled"  # terminal states never change


def test_past_deadline_expires_and_never_runs(http: httpx.Client, stack: Stack) -> None:
    job = {**completion("late", 4), "deadline": time.time() - 5}
    record = submit(http, job)
    assert record["status"] == "expired"
    client = redis.Redis.from_url(stack.redis_url)
    try:
        # the worker pops the message and, claiming it, finds it already expired
        def expired() -> bool:
            return bool(client.hget(job_key(record["id"]), "status") == b"expired")

        wait_for(expired, 30, "the worker's claim to expire it")
        assert client.llen(f"model.{MODEL}:6") == 0
        raw = client.hgetall(job_key(record["id"]))
    finally:
        client.close()
    assert raw[b"status"] == b"expired" and b"started_at" not in raw and b"msg" not in raw
    log = events(http, record["id"])
    assert [e["type"] for e in log] == ["error"]
    assert log[0]["error"]["code"] == "deadline_exceeded"
    iso = {**completion("late", 4), "deadline": "2000-01-01T00:00:00Z"}
    assert submit(http, iso)["status"] == "expired"


def announced_context(stack: Stack) -> int:
    """The context the stack's worker announces for the model in its heartbeat."""
    client = redis.Redis.from_url(stack.redis_url)
    try:
        raw = [client.get(worker_key(w.decode())) for w in client.smembers(WORKERS_SET)]
    finally:
        client.close()
    infos = [msgspec.json.decode(r, type=WorkerInfo) for r in raw if r]
    return max(m.max_seq_len for w in infos for m in w.models if m.name == MODEL)


def test_a_job_over_the_announced_context_is_400_at_submission(
    http: httpx.Client, stack: Stack
) -> None:
    context = announced_context(stack)
    assert context > 0
    before = http.get("/v1/jobs", params={"limit": 100}).json()["data"]
    for job in [
        completion("hi", context),
        {
            "type": "chat",
            "body": {
                "model": MODEL,
                "max_completion_tokens": context + 5,
                "messages": [{"role": "user", "content": "hi"}],
            },
        },
    ]:
        response = http.post("/v1/jobs", json=job)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "context_length_exceeded" and error["param"] == "body.max_tokens"
        assert str(context) in error["message"]
    assert http.get("/v1/jobs", params={"limit": 100}).json()["data"] == before  # none queued
    sync = http.post("/v1/completions", json={**completion("hi", context)["body"]})
    assert sync.status_code == 400 and "x-uml-job-id" not in sync.headers  # refused, not run
    assert sync.json()["error"]["code"] == "context_length_exceeded"
