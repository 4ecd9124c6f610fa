"""One key cannot starve the others, on the real stack (redis-server, ``uml serve``, ``uml
worker`` on the tiny model).

Admission: an API process with small bounds (4 queued jobs per model and priority, half of
each per key) in front of a model whose heartbeat is live but that nothing consumes, so
jobs stay queued. Slots: a worker of 8 slots (one kept for new keys) busy with three keys'
long jobs, and a short job of a fourth key.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from api.enqueue import queue_list
from protocol.keys import CELERY_PRIORITY_INTERACTIVE, job_key, queue_name
from tests.auth import AUTH
from tests.integration.stack import Stack, announce_model, wait_for, withdraw_model

pytestmark = pytest.mark.timeout(180)

BOUND, SHARE = 4, 2
FAIR_MODEL, FAIR_SLOTS = "fair", 8
LONG_PROMPT = "long 6: once upon a time"
"""Greedy on the tiny model (seed 0), this prompt runs ~1,000 tokens before its end token."""


@pytest.fixture(scope="module")
def bounded(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {
        "UML_MAX_QUEUED_PER_MODEL": str(BOUND),
        "UML_MAX_QUEUED_BATCH_PER_MODEL": str(BOUND),
        "UML_QUEUE_SHARE_PER_KEY": str(SHARE / BOUND),
    }
    own = Stack(
        redis_url=stack.redis_url, log_dir=tmp_path_factory.mktemp("bounded"), extra_env=env
    )
    try:
        _, base = own.start_api()
        yield base
    finally:
        own.stop()


@pytest.fixture
def idle_model(stack: Stack) -> Iterator[str]:
    """A model with a live heartbeat and no consumer, fresh for each test."""
    model, worker = f"idle-{uuid.uuid4().hex[:8]}", f"w-idle-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(stack.redis_url)
    announce_model(client, worker, model)
    yield model
    withdraw_model(client, worker)
    client.close()


def four_keys(base: str) -> Iterator[list[httpx.Client]]:
    """Four clients of the API at ``base``, each with a user key of its own."""
    made = []
    with httpx.Client(base_url=base, headers=AUTH, timeout=30) as admin:
        for i in range(4):
            answer = admin.post("/admin/keys", json={"name": f"fair-{i}"})
            assert answer.status_code == 201, answer.text
            auth = {"Authorization": f"Bearer {answer.json()['key']}"}
            made.append(httpx.Client(base_url=base, headers=auth, timeout=30))
    yield made
    for client in made:
        client.close()


@pytest.fixture
def keys(bounded: str) -> Iterator[list[httpx.Client]]:
    yield from four_keys(bounded)


@pytest.fixture
def fair_keys(api_url: str) -> Iterator[list[httpx.Client]]:
    """Keys of the session's API (default bounds)."""
    yield from four_keys(api_url)


def job(model: str, priority: str, max_tokens: int = 2, prompt: str = "hi") -> dict[str, Any]:
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    return {"type": "completion", "body": body, "priority": priority}


def post(client: httpx.Client, model: str, priority: str) -> httpx.Response:
    return client.post("/v1/jobs", json=job(model, priority))


def queued(client: httpx.Client, model: str, priority: str) -> str:
    answer = post(client, model, priority)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def assert_error(answer: httpx.Response, status: int, type_: str, code: str | None) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["retry-after"] == "5"
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"]) == (type_, code)


def test_a_batch_backlog_at_its_bound_leaves_interactive_room(
    keys: list[httpx.Client], idle_model: str
) -> None:
    hog, hog2, other = keys[0], keys[1], keys[2]
    for client in (hog, hog, hog2, hog2):
        queued(client, idle_model, "batch")
    assert_error(post(other, idle_model, "batch"), 503, "service_unavailable", None)
    assert queued(other, idle_model, "interactive")
    chat = {"model": idle_model, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with other.stream("POST", "/v1/chat/completions", json=chat) as answer:
        assert answer.status_code == 200  # admitted (nothing serves the model: not read on)


def test_a_key_over_its_share_gets_429_and_others_are_admitted(
    keys: list[httpx.Client], idle_model: str
) -> None:
    hog, other = keys[0], keys[1]
    for _ in range(SHARE):
        queued(hog, idle_model, "interactive")
    refused = post(hog, idle_model, "interactive")
    assert_error(refused, 429, "requests", "queue_share_exceeded")
    assert f"limit {SHARE}" in refused.json()["error"]["message"]
    chat = {"model": idle_model, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    assert hog.post("/v1/chat/completions", json=chat).status_code == 429
    assert queued(other, idle_model, "interactive")
    assert queued(hog, idle_model, "batch")  # its share of the other priority is its own


def test_cancelled_queued_jobs_free_room_at_once(
    keys: list[httpx.Client], idle_model: str, stack: Stack
) -> None:
    first = [queued(keys[0], idle_model, "interactive") for _ in range(SHARE)]
    for _ in range(SHARE):
        queued(keys[1], idle_model, "interactive")
    assert_error(post(keys[2], idle_model, "interactive"), 503, "service_unavailable", None)
    cancelled = keys[0].post(f"/v1/jobs/{first[0]}/cancel")
    assert cancelled.json()["status"] == "cancelled"
    assert queued(keys[2], idle_model, "interactive")  # at once: nothing popped the message
    client = redis.Redis.from_url(stack.redis_url)
    try:
        lane = queue_list(queue_name(idle_model), CELERY_PRIORITY_INTERACTIVE)
        assert client.llen(lane) == BOUND + 1  # the cancelled job's message is still there
    finally:
        client.close()
    assert_error(post(keys[3], idle_model, "interactive"), 503, "service_unavailable", None)


def test_the_bound_is_exact_under_concurrent_submissions(
    keys: list[httpx.Client], idle_model: str
) -> None:
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: post(keys[i % 4], idle_model, "interactive"), range(24)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses.count(202) == BOUND
    assert set(statuses) <= {202, 429, 503}


# ---- slots ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fair_worker(
    stack: Stack, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    own = Stack(redis_url=stack.redis_url, log_dir=tmp_path_factory.mktemp("fair-worker"))
    try:
        own.start_worker(FAIR_MODEL, tiny_model, slots=FAIR_SLOTS)
        yield
    finally:
        own.stop()


def started_at(client: redis.Redis, job_id: str) -> float:
    raw = client.hget(job_key(job_id), "started_at")
    return float(raw) if raw else float("inf")


def status(client: redis.Redis, job_id: str) -> str:
    return (client.hget(job_key(job_id), "status") or b"").decode()


def test_a_fourth_keys_job_starts_while_three_keys_hold_the_slots(
    fair_worker: None, fair_keys: list[httpx.Client], stack: Stack
) -> None:
    keys = fair_keys
    client = redis.Redis.from_url(stack.redis_url)
    longs: list[tuple[httpx.Client, str]] = []
    try:
        for i in range(12):  # 3 keys x 4 long jobs, interleaved, on 8 slots
            owner = keys[i % 3]
            answer = owner.post("/v1/jobs", json=job(FAIR_MODEL, "interactive", 1500, LONG_PROMPT))
            assert answer.status_code == 202, answer.text
            longs.append((owner, answer.json()["id"]))

        def busy() -> bool:
            running = [j for _, j in longs if status(client, j) == "running"]
            return len(running) >= FAIR_SLOTS - 1

        wait_for(busy, 60, "three keys' long jobs to fill the worker")
        waiting = [j for _, j in longs if status(client, j) == "queued"]
        assert waiting  # more long jobs wait in the queue, ahead of the short one
        short = queued(keys[3], FAIR_MODEL, "interactive")
        wait_for(lambda: status(client, short) == "succeeded", 60, "the short job to run")
        # It went ahead of the long jobs that were queued before it (FIFO would run it last).
        assert started_at(client, short) < max(started_at(client, j) for j in waiting)
    finally:
        for owner, job_id in longs:
            owner.post(f"/v1/jobs/{job_id}/cancel")
        client.close()
