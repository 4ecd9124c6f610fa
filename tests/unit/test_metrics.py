"""``/metrics`` in-process (AsyncTestClient, real Redis, fake heartbeats): who may read it,
what it counts, and what it reads from Redis at scrape time."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.metrics import Metrics
from api.services.job_store import model_lists
from protocol.events import DoneEvent, Event, StatusEvent, TokenEvent
from protocol.openai import Usage
from protocol.states import JobStatus
from tests.auth import AUTH
from tests.unit.test_api_http import error_of, heartbeat, settings
from tests.unit.test_api_keys import bearer, make_key


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(create_app(settings(redis_url))) as client:
        yield client


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = (
        rf"^{re.escape(name)}(?:\{{{re.escape(want)}\}})? (\S+)$" if want else rf"^{name} (\S+)$"
    )
    found = re.search(pattern, text, re.M)
    assert found, f"no {name}{{{want}}} in\n{text}"
    return float(found.group(1))


async def test_metrics_needs_the_admin_scope(client: AsyncTestClient[Any]) -> None:
    assert error_of(await client.get("/metrics"), 401)["code"] == "invalid_api_key"
    user, _ = await make_key(client, scope="user")
    error_of(await client.get("/metrics", headers=bearer(user)), 403)
    resp = await client.get("/metrics", headers=AUTH)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain; version=")


async def test_requests_are_counted_by_route_template_and_status(
    client: AsyncTestClient[Any],
) -> None:
    for _ in range(3):
        await client.get("/v1/jobs/job-that-is-not-there", headers=AUTH)
    await client.get("/v1/models")  # no key: 401
    await client.get("/ready")  # no worker: 503
    text = (await client.get("/metrics", headers=AUTH)).text
    route = "/v1/jobs/{job_id}"
    assert sample(text, "uml_http_requests_total", method="GET", route=route, status="404") == 3
    assert "job-that-is-not-there" not in text  # a raw path never becomes a label
    assert sample(text, "uml_http_requests_total", method="GET", route="/v1/models", status="401")
    assert sample(text, "uml_http_requests_total", method="GET", route="/ready", status="503")
    assert sample(text, "uml_http_request_duration_seconds_count", route=route) == 3


async def test_queue_depth_jobs_and_workers_are_read_at_scrape_time(
    client: AsyncTestClient[Any], redis: aioredis.Redis
) -> None:
    await heartbeat(redis, "w1", ("tiny", "ready"), ("big", "loading"))
    first, *_, last = model_lists("tiny")
    await redis.rpush(first, "a", "b")
    await redis.rpush(last, "c")
    text = (await client.get("/metrics", headers=AUTH)).text
    assert sample(text, "uml_queue_depth", model="tiny") == 3
    assert sample(text, "uml_queue_depth", model="big") == 0
    assert sample(text, "uml_jobs", state="queued") == 3
    assert sample(text, "uml_jobs", state="running") == 0
    assert sample(text, "uml_workers", model="tiny") == 1
    assert sample(text, "uml_live_workers") == 1
    assert sample(text, "uml_redis_up") == 1
    assert sample(text, "uml_open_streams") == 0
    await redis.flushall()  # the worker is gone; its model's queue is still reported
    text = (await client.get("/metrics", headers=AUTH)).text
    assert sample(text, "uml_workers", model="tiny") == 0
    assert sample(text, "uml_queue_depth", model="tiny") == 0
    assert sample(text, "uml_live_workers") == 0


async def test_token_timings() -> None:
    metrics = Metrics()

    async def events() -> AsyncIterator[Event | None]:
        yield StatusEvent(seq=1, status=JobStatus.RUNNING)
        yield None
        for seq in (2, 3, 4):
            yield TokenEvent(seq=seq, text="x")
        yield DoneEvent(
            seq=5,
            finish_reason="stop",
            usage=Usage(prompt_tokens=0, completion_tokens=3, total_tokens=3),
        )

    seen = [e async for e in metrics.tokens("tiny", 0.0, events())]
    assert len(seen) == 6
    text = metrics.exposition().decode()
    assert sample(text, "uml_time_to_first_token_seconds_count", model="tiny") == 1
    assert sample(text, "uml_inter_token_latency_seconds_count", model="tiny") == 2
