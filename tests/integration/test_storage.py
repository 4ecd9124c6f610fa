"""Storage bounds on the real ``uml serve``: a full Redis (``maxmemory`` + ``noeviction``)
answers 503 and leaves nothing half-written.

The module runs its own Redis and API (no worker: nothing here runs a job), so it may
change Redis's ``maxmemory`` without touching the session's stack.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.auth import AUTH
from tests.integration.stack import Stack
from uml.redis_server import start_redis

LINE = json.dumps(
    {
        "custom_id": "a",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]},
    }
).encode()


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, str]]:
    server = start_redis(Path(tmp_path_factory.mktemp("storage-redis")), appendonly=False)
    stack = Stack(redis_url=server.url, log_dir=tmp_path_factory.mktemp("storage-logs"))
    try:
        _, url = stack.start_api()
        yield stack, url
    finally:
        stack.stop()
        server.stop()


@pytest.fixture
def store(own_stack: tuple[Stack, str]) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(own_stack[0].redis_url)
    yield client
    client.config_set("maxmemory", 0)
    client.close()


@pytest.fixture
def admin(own_stack: tuple[Stack, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=own_stack[1], headers=AUTH, timeout=30) as client:
        yield client


def upload(client: httpx.Client, content: bytes, **headers: str) -> httpx.Response:
    return client.post(
        "/v1/files",
        files={"file": ("in.jsonl", content)},
        data={"purpose": "batch"},
        headers=headers,
    )


def file_keys(store: redis.Redis) -> list[bytes]:
    return list(store.scan_iter("uml:file:*"))


def test_a_full_redis_answers_503_with_retry_after_and_writes_nothing(
    admin: httpx.Client, store: redis.Redis
) -> None:
    made = admin.post("/admin/keys", json={"name": "full-redis"})
    assert made.status_code in (200, 201), made.text
    user = f"Bearer {made.json()['key']}"
    before = file_keys(store)
    store.config_set("maxmemory", 1)  # every write is refused from now on
    answers = [
        upload(admin, LINE + b"\n"),  # the bootstrap key: no rate limit, the file write
        upload(admin, LINE + b"\n", authorization=user),  # a user key: its rate limit
        admin.get("/v1/files", headers={"authorization": user}),
    ]
    for response in answers:
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["type"] == "service_unavailable", error
        assert int(response.headers["retry-after"]) > 0
    assert file_keys(store) == before
    store.config_set("maxmemory", 0)
    assert upload(admin, LINE + b"\n").status_code == 200  # back by itself
