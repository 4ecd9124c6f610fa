"""Storage bounds on the real ``uml serve``: the per-key file quota, and a full Redis
(``maxmemory`` + ``noeviction``) that answers 503 and leaves nothing half-written.

The module runs its own Redis and API (no worker: nothing here runs a job), so it may
change Redis's ``maxmemory`` without touching the session's stack.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from protocol.auth import BOOTSTRAP_ID
from protocol.keys import file_sizes_key, file_usage_key
from tests.auth import ADMIN_KEY, AUTH
from tests.integration.raw_http import read_response
from tests.integration.stack import Stack
from tests.unit.test_api_files import LINE
from uml.redis_server import start_redis

QUOTA_BYTES = 1024 * 1024


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, str]]:
    server = start_redis(Path(tmp_path_factory.mktemp("storage-redis")), appendonly=False)
    stack = Stack(
        redis_url=server.url,
        log_dir=tmp_path_factory.mktemp("storage-logs"),
        extra_env={"UML_BATCH_QUOTA_BYTES": str(QUOTA_BYTES)},
    )
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


def test_an_upload_that_cannot_fit_is_refused_before_its_body_is_sent(
    own_stack: tuple[Stack, str],
) -> None:
    port = int(own_stack[1].rsplit(":", 1)[1])
    head = (
        "POST /v1/files HTTP/1.1\r\nHost: uml\r\n"
        f"Authorization: Bearer {ADMIN_KEY}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\n"
        f"Content-Length: {8 * QUOTA_BYTES}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode())  # and not one byte of the body
        answer = read_response(sock)
    assert answer.startswith(b"HTTP/1.1 400"), answer
    assert b'"code":"storage_quota_exceeded"' in answer


def test_an_upload_refused_by_a_full_redis_keeps_no_reservation(
    admin: httpx.Client, store: redis.Redis
) -> None:
    """The reservation may land (a script that has already written may go on writing past
    ``maxmemory``: here it prunes an expired file first); the file's MULTI is refused whole,
    and the reservation is given back."""
    usage, sizes = file_usage_key(BOOTSTRAP_ID), file_sizes_key(BOOTSTRAP_ID)
    kept = set(store.zrange(usage, 0, -1))
    before = file_keys(store)
    store.zadd(usage, {"file-expired": int(time.time()) - 10})
    store.hset(sizes, "file-expired", 10)
    store.config_set("maxmemory", 1)
    response = upload(admin, LINE + b"\n")
    assert response.status_code == 503, response.text
    assert response.json()["error"]["type"] == "service_unavailable"
    assert file_keys(store) == before
    assert set(store.zrange(usage, 0, -1)) == kept  # no reservation, the expired one pruned
    assert set(store.hkeys(sizes)) == kept
