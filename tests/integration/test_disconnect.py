"""A client that hangs up on a sync call cancels its job on the real worker."""

from __future__ import annotations

import json

import httpx
import pytest
import redis

from protocol.keys import job_key
from tests.auth import AUTH
from tests.integration.conftest import MODEL
from tests.integration.stack import Stack, wait_for

pytestmark = pytest.mark.timeout(120)


def test_disconnect_mid_stream_cancels_the_job(api_url: str, stack: Stack) -> None:
    body = {"model": MODEL, "prompt": "long", "max_tokens": 1500, "stream": True, "seed": 1}
    with httpx.Client(base_url=api_url, timeout=30, headers=AUTH) as client:
        with client.stream("POST", "/v1/completions", json=body) as response:
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    job_id = json.loads(line[6:])["id"]
                    break
    store = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    try:
        wait_for(
            lambda: store.hget(job_key(job_id), "status") == "cancelled", 20, "the job to cancel"
        )
        tokens = int(store.hget(job_key(job_id), "completion_tokens") or 0)
        assert tokens < 1500
        assert store.hget(job_key(job_id), "finish_reason") == "cancelled"
    finally:
        store.close()
