"""A real ``uml serve`` off a terminal logs JSON lines; a line a request causes carries its id."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.auth import AUTH
from tests.integration.stack import Stack, wait_for
from uml.redis_server import start_redis

pytestmark = pytest.mark.timeout(120)


def test_api_logs_are_json_lines_with_the_request_id(tmp_path: Path) -> None:
    server = start_redis(tmp_path / "redis", appendonly=False)
    # the access log is off by default (the audit log covers requests); on, it is a line
    # logged while the request runs, so it must carry the request id
    stack = Stack(redis_url=server.url, log_dir=tmp_path, extra_env={"UML_ACCESS_LOG": "true"})
    try:
        api, base = stack.start_api()
        rid = httpx.get(f"{base}/health", timeout=5).headers["x-request-id"]

        def access_line() -> dict[str, Any] | None:
            for line in api.log().splitlines():
                record = json.loads(line)  # every line is JSON: app lines and audit records
                if record.get("logger") == "uvicorn.access" and record.get("request_id") == rid:
                    return dict(record)
            return None

        wait_for(lambda: access_line() is not None, 10, "the access line with the request id")
        line = access_line()
        assert line is not None and "GET /health" in line["message"]
        assert line["level"] == "INFO" and line["time"].endswith("Z")
        started = [json.loads(x) for x in api.log().splitlines() if "Uvicorn running" in x]
        assert started and started[0]["logger"] == "uvicorn.error"
    finally:
        stack.stop()
        server.stop()


def test_a_line_after_a_job_is_queued_carries_the_job_id(stack: Stack, tmp_path: Path) -> None:
    # a second API on the session's Redis and worker, with the access log on
    api_stack = Stack(
        redis_url=stack.redis_url, log_dir=tmp_path, extra_env={"UML_ACCESS_LOG": "true"}
    )
    try:
        api, base = api_stack.start_api()
        body = {"model": "tiny", "prompt": "hello", "max_tokens": 4}
        resp = httpx.post(f"{base}/v1/completions", json=body, headers=AUTH, timeout=60)
        assert resp.status_code == 200, resp.text
        rid, job = resp.headers["x-request-id"], resp.headers["x-uml-job-id"]

        def access_line() -> dict[str, Any] | None:
            for line in api.log().splitlines():
                record = json.loads(line)
                if record.get("logger") == "uvicorn.access" and record.get("request_id") == rid:
                    return dict(record)
            return None

        wait_for(lambda: access_line() is not None, 10, "the access line of the completion")
        line = access_line()
        assert line is not None and line["job_id"] == job
    finally:
        api_stack.stop()
