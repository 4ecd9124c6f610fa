"""Audit and hostile input over real processes: generation records carry the job, model and
tokens; the API's stdout has the JSON lines and no key; the job hash names its owner."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import redis

from protocol.keys import job_key
from tests.auth import ADMIN_KEY, AUTH
from tests.integration.conftest import MODEL
from tests.integration.stack import Stack, wait_for

pytestmark = pytest.mark.timeout(120)


def audit_record(http: httpx.Client, request_id: str) -> dict[str, Any]:
    """The audit record of one request, once it has been written."""
    found: list[dict[str, Any]] = []

    def written() -> bool:
        data = http.get("/admin/audit", params={"limit": 1000}).json()["data"]
        found[:] = [r for r in data if r["request_id"] == request_id]
        return bool(found)

    wait_for(written, 10, f"the audit record of {request_id}", interval=0.05)
    return found[0]


def test_generation_records_job_model_and_tokens(http: httpx.Client, stack: Stack) -> None:
    body = {"model": MODEL, "prompt": "Hello", "max_tokens": 4, "temperature": 0}
    resp = http.post("/v1/completions", json=body)
    assert resp.status_code == 200, resp.text
    record = audit_record(http, resp.headers["x-request-id"])
    usage = resp.json()["usage"]
    assert record["job_id"] == resp.headers["x-uml-job-id"]
    assert (record["model"], record["status"], record["key_id"]) == (MODEL, 200, "bootstrap")
    assert record["prompt_tokens"] == usage["prompt_tokens"]
    assert record["completion_tokens"] == usage["completion_tokens"]
    assert "prompt" not in record and "completion" not in record
    client = redis.Redis.from_url(stack.redis_url)
    try:
        assert client.hget(job_key(record["job_id"]), "owner") == b"bootstrap"
    finally:
        client.close()

    with http.stream("POST", "/v1/completions", json={**body, "stream": True}) as streamed:
        assert streamed.status_code == 200
        lines = [line for line in streamed.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    record = audit_record(http, streamed.headers["x-request-id"])
    assert record["job_id"] == streamed.headers["x-uml-job-id"]
    assert record["completion_tokens"] >= 1 and record["prompt_tokens"] >= 1


def test_json_log_lines_hold_no_key(http: httpx.Client, stack: Stack, api_url: str) -> None:
    wrong = "uml_0123456789abcdef_" + "w" * 43
    resp = httpx.get(f"{api_url}/v1/models", headers={"Authorization": f"Bearer {wrong}"})
    assert resp.status_code == 401
    rid = resp.headers["x-request-id"]
    assert audit_record(http, rid)["key_id"] == "anonymous"
    api = next(p for p in stack.procs if p.log_path.name.startswith("api"))

    def logged() -> bool:
        return rid in api.log()

    wait_for(logged, 10, "the audit line in the API's log")
    lines = [json.loads(line) for line in api.log().splitlines() if line.startswith('{"time"')]
    assert any(line["request_id"] == rid and line["status"] == 401 for line in lines)
    assert ADMIN_KEY not in api.log() and "w" * 43 not in api.log()


def test_chunked_body_over_the_cap_is_413(api_url: str) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap is counted while reading
        yield b'{"model": "tiny", "prompt": "'
        for _ in range(2048):
            yield b"x" * 1024
        yield b'"}'

    started = time.monotonic()
    resp = httpx.post(f"{api_url}/v1/completions", content=chunks(), headers=AUTH, timeout=30)
    assert resp.status_code == 413, resp.text
    assert resp.json()["error"]["code"] == "request_too_large"
    assert time.monotonic() - started < 30


def _metric(http: httpx.Client, sample: str) -> float:
    found = re.search(rf"^{re.escape(sample)} (\S+)$", http.get("/metrics").text, re.M)
    return float(found.group(1)) if found else 0.0


def test_an_abandoned_body_is_a_client_close_not_a_server_error(
    http: httpx.Client, api_url: str
) -> None:
    """A raw client announces 1,000 bytes, sends 20 and closes: 499 in the audit and metrics."""
    made = http.post("/admin/keys", json={"name": "abandons"})
    assert made.status_code == 201, made.text
    key, key_id = made.json()["key"], made.json()["info"]["id"]
    series = 'uml_http_requests_total{method="POST",route="/v1/completions",status="%d"}'
    before = {s: _metric(http, series % s) for s in (499, 500)}
    url = urlsplit(api_url)
    head = (
        f"POST /v1/completions HTTP/1.1\r\nHost: {url.netloc}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000\r\n\r\n"
    )
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(head.encode() + b'{"model": "tiny", "p')

    found: list[dict[str, Any]] = []

    def recorded() -> bool:
        data = http.get("/admin/audit", params={"key_id": key_id}).json()["data"]
        found[:] = [r for r in data if r["path"] == "/v1/completions"]
        return bool(found)

    wait_for(recorded, 10, "the audit record of the abandoned request", interval=0.05)
    assert [r["status"] for r in found] == [499]
    assert _metric(http, series % 499) == before[499] + 1
    assert _metric(http, series % 500) == before[500]
