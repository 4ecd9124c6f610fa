"""Per-key limits across two real API processes sharing one Redis, over real HTTP.

Small limits come from keys made with per-key overrides, so nothing waits out a minute.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis

from protocol.keys import queue_name
from tests.auth import AUTH
from tests.integration.conftest import MODEL
from tests.integration.stack import (
    STREAM_CAP,
    Stack,
    announce_model,
    wait_for,
    withdraw_model,
)

pytestmark = pytest.mark.timeout(120)

CHAT = "/v1/chat/completions"


def new_key(client: httpx.Client, **limits: int) -> dict[str, str]:
    made = client.post("/admin/keys", json={"name": "limits", **limits}, headers=AUTH)
    assert made.status_code == 201, made.text
    return {"Authorization": f"Bearer {made.json()['key']}"}


def chat(max_tokens: int = 8, stream: bool = False) -> dict[str, object]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": max_tokens,
        "stream": stream,
    }


def test_two_replicas_share_one_limit_exactly(clients: list[httpx.Client]) -> None:
    a, b = clients
    key = new_key(a, rpm=10, burst=1000)
    with ThreadPoolExecutor(8) as pool:
        codes = list(
            pool.map(lambda i: (a, b)[i % 2].get("/v1/models", headers=key).status_code, range(30))
        )
    assert codes.count(200) == 10 and codes.count(429) == 20


def test_spoofed_forwarded_for_does_not_reset_the_quota(clients: list[httpx.Client]) -> None:
    a, b = clients
    key = new_key(a, rpm=2)
    assert [a.get("/v1/models", headers=key).status_code for _ in range(2)] == [200, 200]
    for i, client in enumerate((a, b)):
        spoofed = {**key, "X-Forwarded-For": f"10.0.0.{i}", "X-Real-IP": f"10.0.1.{i}"}
        refused = client.get("/v1/models", headers=spoofed)
        assert refused.status_code == 429
        error = refused.json()["error"]
        assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["ratelimit-limit"] == "2"
        assert refused.headers["ratelimit-remaining"] == "0"


def test_override_beats_default_and_headers_on_every_response(
    clients: list[httpx.Client],
) -> None:
    a, _ = clients
    plain, generous = new_key(a), new_key(a, burst=1000, rpm=5000, rph=100_000)
    ok = a.post(CHAT, json=chat(), headers=generous)
    assert ok.status_code == 200, ok.text
    assert ok.headers["ratelimit-limit"] == "1000" and ok.headers["ratelimit-policy"].startswith(
        "1000;w=1, 5000;w=60"
    )
    default = a.get("/v1/models", headers=plain)
    assert default.headers["ratelimit-policy"] == "50;w=1, 600;w=60, 20000;w=3600"
    bad = a.post(CHAT, json={"model": MODEL}, headers=plain)
    assert bad.status_code == 400 and "ratelimit-remaining" in bad.headers
    with a.stream("POST", CHAT, json=chat(stream=True), headers=plain) as streamed:
        assert streamed.status_code == 200 and "ratelimit-reset" in streamed.headers
        assert any(line.startswith("data: [DONE]") for line in streamed.iter_lines())


def test_tokens_per_minute_refuse_after_a_job_is_charged(clients: list[httpx.Client]) -> None:
    a, b = clients
    key = new_key(a, tpm=5)
    first = a.post(CHAT, json=chat(max_tokens=16), headers=key)
    assert first.status_code == 200, first.text
    assert first.json()["usage"]["total_tokens"] > 5  # one job overruns the budget by its size
    refused = b.post(CHAT, json=chat(), headers=key)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["type"] == "tokens"
    assert int(refused.headers["retry-after"]) >= 1
    assert b.get("/v1/models", headers=key).status_code == 200  # requests are not tokens


def test_a_background_job_spends_the_token_budget_too(clients: list[httpx.Client]) -> None:
    """The worker charges a job's tokens when it ends, whether anyone was reading it."""
    a, b = clients
    key = new_key(a, tpm=5)
    submitted = a.post("/v1/jobs", json={"type": "chat", "body": chat(max_tokens=16)}, headers=key)
    assert submitted.status_code == 202, submitted.text
    url = f"/v1/jobs/{submitted.json()['id']}"
    wait_for(lambda: b.get(url, headers=key).json()["status"] == "succeeded", 30, "the job")
    assert b.get(url, headers=key).json()["usage"]["total_tokens"] > 5
    refused = b.post(CHAT, json=chat(), headers=key)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["type"] == "tokens"


@pytest.fixture
def parked_model(stack: Stack) -> Iterator[str]:
    """A model with a live heartbeat and no consumer: its streams stay open until closed.

    (Streams on the real worker can end early on a sampled end-of-sequence token, freeing
    their slot before the test has opened the last one.)
    """
    name = "parked"
    client = redis.Redis.from_url(stack.redis_url)
    announce_model(client, "parked", name)
    try:
        yield name
    finally:
        withdraw_model(client, "parked")
        client.delete(queue_name(name))
        client.close()


def test_concurrent_streams_are_capped_per_key(
    clients: list[httpx.Client], parked_model: str
) -> None:
    a, b = clients
    key = new_key(a)
    long_chat = {**chat(max_tokens=1500, stream=True), "model": parked_model}
    opened = []
    try:
        for i in range(STREAM_CAP):
            ctx = (a, b)[i % 2].stream("POST", CHAT, json=long_chat, headers=key)
            resp = ctx.__enter__()
            opened.append(ctx)
            assert resp.status_code == 200
        refused = b.post(CHAT, json=long_chat, headers=key)
        assert refused.status_code == 429
        assert "streams" in refused.json()["error"]["message"]
    finally:
        for ctx in opened:
            ctx.__exit__(None, None, None)

    def admitted() -> bool:
        with a.stream("POST", CHAT, json=long_chat, headers=key) as resp:
            return resp.status_code == 200

    wait_for(admitted, 10, "a stream slot to free up after the clients left", interval=0.2)


def test_job_event_streams_take_stream_slots(
    clients: list[httpx.Client], parked_model: str
) -> None:
    """A follower of a background job's log holds one of its key's stream slots while open."""
    a, b = clients
    key = new_key(a)
    job = {"type": "chat", "body": {**chat(max_tokens=8), "model": parked_model}}
    made = a.post("/v1/jobs", json=job, headers=key)
    assert made.status_code == 202, made.text
    events = f"/v1/jobs/{made.json()['id']}/events"
    opened = []
    try:
        for i in range(STREAM_CAP):
            ctx = (a, b)[i % 2].stream("GET", events, headers=key)
            assert ctx.__enter__().status_code == 200
            opened.append(ctx)
        refused = b.get(events, headers=key)
        assert refused.status_code == 429, refused.text
        assert "streams" in refused.json()["error"]["message"]
    finally:
        for ctx in opened:
            ctx.__exit__(None, None, None)

    def admitted() -> bool:
        with a.stream("GET", events, headers=key) as resp:
            return resp.status_code == 200

    wait_for(admitted, 10, "a stream slot to free up after the followers left", interval=0.2)
