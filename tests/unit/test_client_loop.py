"""The two I/O loops around the core, over httpx's MockTransport (no network)."""

from __future__ import annotations

import httpx
import pytest

from client.universal_client import (
    BadRequestError,
    RateLimitError,
    SyncUniversalClient,
    UniversalClient,
)

JOB = {
    "id": "job-1",
    "model": "m",
    "status": "queued",
    "priority": "batch",
    "timings": {"created_at": 1.0},
}


def flaky(fails: list[int], seen: list[httpx.Request]) -> httpx.MockTransport:
    """Answers each status in ``fails`` (with Retry-After: 0), then 202 and a job."""

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) <= len(fails):
            status = fails[len(seen) - 1]
            body = {"error": {"message": "later", "type": "x", "param": None, "code": None}}
            return httpx.Response(status, json=body, headers={"Retry-After": "0"})
        return httpx.Response(202, json=JOB)

    return httpx.MockTransport(handle)


def test_sync_retries_reuse_one_idempotency_key() -> None:
    seen: list[httpx.Request] = []
    http = httpx.Client(transport=flaky([503, 429], seen))
    with SyncUniversalClient("http://t", "k", http_client=http) as client:
        job = client.submit_job("m", prompt="p")
    assert job.id == "job-1"
    keys = {r.headers["Idempotency-Key"] for r in seen}
    assert len(seen) == 3 and len(keys) == 1


async def test_async_retries_reuse_one_idempotency_key() -> None:
    seen: list[httpx.Request] = []
    http = httpx.AsyncClient(transport=flaky([503, 503], seen))
    async with UniversalClient("http://t", "k", http_client=http) as client:
        job = await client.submit_job("m", messages=[{"role": "user", "content": "hi"}])
    assert job.id == "job-1"
    assert len({r.headers["Idempotency-Key"] for r in seen}) == 1 and len(seen) == 3
    # a second logical submission gets a key of its own
    seen2: list[httpx.Request] = []
    async with UniversalClient(
        "http://t", "k", http_client=httpx.AsyncClient(transport=flaky([], seen2))
    ) as client:
        await client.submit_job("m", prompt="p")
    assert seen2[0].headers["Idempotency-Key"] != seen[0].headers["Idempotency-Key"]


def test_gives_up_after_max_retries_and_does_not_retry_400() -> None:
    seen: list[httpx.Request] = []
    http = httpx.Client(transport=flaky([429] * 10, seen))
    with SyncUniversalClient("http://t", "k", max_retries=2, http_client=http) as client:
        with pytest.raises(RateLimitError):
            client.get_job("job-1")
    assert len(seen) == 3
    seen.clear()
    http = httpx.Client(transport=flaky([400] * 10, seen))
    with SyncUniversalClient("http://t", "k", http_client=http) as client:
        with pytest.raises(BadRequestError):
            client.get_job("job-1")
    assert len(seen) == 1


async def test_connect_errors_are_retried_then_translated() -> None:
    calls = 0

    def refuse(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ConnectError("refused", request=request)

    from client.universal_client import APIConnectionError

    http = httpx.AsyncClient(transport=httpx.MockTransport(refuse))
    client = UniversalClient("http://t", "k", max_retries=1, http_client=http)
    client._core.retry_delay = lambda *a, **k: 0.0 if calls < 2 else None  # type: ignore[method-assign]
    with pytest.raises(APIConnectionError):
        await client.health_check()
    await client.aclose()
    assert calls == 2
