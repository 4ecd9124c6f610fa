"""Queued jobs, with a model that has a live heartbeat but no consumer, so nothing starts.

An API served by uvicorn in-process on the unit tests' Redis, its queue bound set to 3:
queue positions (interactive ahead of batch), cancelling a queued job, the 503 of a full
queue on ``/v1/jobs`` and on the sync endpoints (interactive work: batch work has a bound of
its own), and a deadline passing while queued. Per-key shares are off here
(tests/integration/test_fairness.py covers them).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
import uvicorn

from api.app import create_app
from protocol.keys import events_key, job_key
from protocol.settings import (
    RedisSettings,
    SecuritySettings,
    ServerSettings,
    Settings,
    WorkerSettings,
)
from tests.auth import ADMIN_KEY, AUTH
from tests.integration.stack import announce_model
from tests.integration.test_jobs import events
from uml.redis_server import free_port

pytestmark = pytest.mark.timeout(60)

MODEL = "idle"
LIMIT = 3


def wait_for(condition: Callable[[], Any], timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


@pytest.fixture
def http(redis_url: str) -> Iterator[httpx.Client]:
    client = redis.Redis.from_url(redis_url)
    announce_model(client, "idle", MODEL)
    client.close()
    settings = Settings(
        redis=RedisSettings(url=redis_url, block_ms=500, socket_timeout_s=5),
        server=ServerSettings(
            sse_ping_s=0.2,
            max_queued_per_model=LIMIT,
            max_queued_batch_per_model=LIMIT,
            queue_share_per_key=1.0,
        ),
        worker=WorkerSettings(),
        security=SecuritySettings(admin_key=ADMIN_KEY),
    )
    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", ws="none"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=AUTH, timeout=10) as http:
        yield http
    server.should_exit = True
    thread.join(10)


def job(priority: str = "batch", **extra: Any) -> dict[str, Any]:
    body = {"model": MODEL, "prompt": "hi", "max_tokens": 2}
    return {"type": "completion", "body": body, "priority": priority, **extra}


def submit(http: httpx.Client, payload: dict[str, Any]) -> dict[str, Any]:
    response = http.post("/v1/jobs", json=payload)
    assert response.status_code == 202, response.text
    record: dict[str, Any] = response.json()
    return record


def position(http: httpx.Client, job_id: str) -> int | None:
    value: int | None = http.get(f"/v1/jobs/{job_id}").json()["queue_position"]
    return value


def test_queue_positions_put_interactive_first(http: httpx.Client) -> None:
    first = submit(http, job())
    second = submit(http, job())
    urgent = submit(http, job("interactive"))
    assert first["status"] == "queued" and first["queue_position"] == 0
    assert second["queue_position"] == 1
    assert urgent["queue_position"] == 0
    assert position(http, first["id"]) == 1
    assert position(http, second["id"]) == 2


def test_cancel_queued_job_ends_it_at_once(http: httpx.Client, redis_url: str) -> None:
    record = submit(http, job())
    with httpx.Client(base_url=str(http.base_url), headers=AUTH, timeout=10) as other:
        holder: list[list[dict[str, Any]]] = []
        follower = threading.Thread(target=lambda: holder.append(events(other, record["id"])))
        follower.start()
        cancelled = http.post(f"/v1/jobs/{record['id']}/cancel")
        follower.join(10)
    assert cancelled.status_code == 200
    body = cancelled.json()
    assert body["status"] == "cancelled" and body["queue_position"] is None
    assert holder and [e["type"] for e in holder[0]] == ["done"]  # the open stream ended
    assert holder[0][0]["finish_reason"] == "cancelled"
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.hget(job_key(record["id"]), "cancel") == b"1"
        assert 0 < client.ttl(events_key(record["id"])) <= 86400  # type: ignore[operator]
    finally:
        client.close()
    assert http.post(f"/v1/jobs/{record['id']}/cancel").json()["status"] == "cancelled"


def test_full_queue_answers_503_everywhere(http: httpx.Client) -> None:
    for _ in range(LIMIT):
        submit(http, job("interactive"))
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    for response in (
        http.post("/v1/jobs", json=job("interactive")),
        http.post("/v1/completions", json=job()["body"]),
        http.post("/v1/chat/completions", json=chat),
    ):
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "5"
        assert response.json()["error"]["type"] == "service_unavailable"
    assert http.get("/v1/jobs").json()["data"][0]["status"] == "queued"
    submit(http, job("batch"))  # batch work has a bound of its own


def test_deadline_passing_while_queued(http: httpx.Client, redis_url: str) -> None:
    record = submit(http, job(deadline=time.time() + 0.3))
    assert record["status"] == "queued"
    wait_for(lambda: http.get(f"/v1/jobs/{record['id']}").json()["status"] == "expired")
    client = redis.Redis.from_url(redis_url)
    try:  # reading wrote it: status and a final event, atomically
        assert client.hget(job_key(record["id"]), "status") == b"expired"
        assert client.xlen(events_key(record["id"])) == 1
    finally:
        client.close()
    log = events(http, record["id"])
    assert [e["type"] for e in log] == ["error"] and log[0]["seq"] == 1
    listed = http.get("/v1/jobs", params={"status": "expired"}).json()["data"]
    assert [j["id"] for j in listed] == [record["id"]]
