"""Per-key rate limits: the pure decisions, then the app on a real Redis (AsyncTestClient)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.security.limits import Count, Decision, Limiter, Window, policy_for
from protocol import auth, scripts
from protocol.auth import KeyLimits
from protocol.meter import token_meter
from protocol.settings import LimitSettings
from tests.auth import AUTH
from tests.unit.test_api_http import error_of, settings

MINUTE = Window("rpm", 60_000, 10)


def test_policy_defaults_overrides_and_the_unlimited_keys() -> None:
    cfg = LimitSettings(rpm=100, rph=1000, burst=5, tpm=500, max_streams=3)
    record, _ = auth.new_key("k", "user", KeyLimits(rpm=7, tpm=50))
    policy = policy_for(record, cfg)
    assert policy is not None
    assert [(w.name, w.period_ms, w.limit) for w in policy.requests] == [
        ("burst", 1000, 5),
        ("rpm", 60_000, 7),
        ("rph", 3_600_000, 1000),
    ]
    assert policy.tokens.limit == 50 and policy.max_streams == 3
    assert policy_for(auth.bootstrap_key("x" * 30), cfg) is None
    assert policy_for(record, LimitSettings(enabled=False)) is None
    assert policy_for(None, cfg) is None


def test_sliding_window_counts_the_previous_bucket_by_its_overlap() -> None:
    # 15 s into the minute: 3/4 of the previous bucket still lies inside the window.
    count = Count(MINUTE, current=2, previous=8, now_ms=60_000 * 7 + 15_000)
    assert count.used() == 8 * 45 // 60 + 2 == 8
    assert count.remaining(charged=0) == 2
    # full: the previous share, floor(10 * (60 - t) / 60), must fall to 10 - 2 - 1 = 7,
    # which it does once 10 * (60 - t) < 8 * 60, at t = 12.001 s
    full = Count(MINUTE, current=2, previous=10, now_ms=60_000 * 7 + 1_000)
    assert full.wait_ms(1) == 12_001 - 1_000
    # this bucket alone is full: wait for the next one, then for its share to fall to 9
    alone = Count(MINUTE, current=10, previous=0, now_ms=60_000 * 7 + 20_000)
    assert alone.wait_ms(1) == 40_000 + 1


def _fits_after(count: Count, charged: int, wait: int) -> bool:
    """Brute force: does one more request fit ``wait`` ms later (buckets rolled as in Lua)?"""
    period, cur = count.window.period_ms, count.current + charged
    later = count.now_ms + wait
    step = later // period - count.now_ms // period
    prev, cur = {0: (count.previous, cur), 1: (cur, 0)}.get(step, (0, 0))
    return prev * (period - later % period) // period + cur + 1 <= count.window.limit


@given(
    limit=st.integers(1, 6),
    period=st.sampled_from([1, 2, 3, 7, 10, 1000]),
    current=st.integers(0, 8),
    previous=st.integers(0, 8),
    bucket=st.integers(0, 3),
    elapsed=st.integers(0, 999),
    charged=st.integers(0, 1),
)
def test_wait_is_the_least_wait_after_which_one_more_fits(
    limit: int, period: int, current: int, previous: int, bucket: int, elapsed: int, charged: int
) -> None:
    """Every small limit and window, at every point of a bucket, with 0, 1 or more left:
    the wait is finite, one more request fits after it, and not a millisecond before."""
    count = Count(
        Window("w", period, limit), current, previous, bucket * period + elapsed % period
    )
    wait = count.wait_ms(1, charged)
    assert 0 <= wait <= 2 * period
    assert _fits_after(count, charged, wait)
    assert wait == 0 or not _fits_after(count, charged, wait - 1)
    assert 1 <= count.reset_s(charged) <= math.ceil(2 * period / 1000)


@pytest.mark.parametrize("limit", [1, 2])
@pytest.mark.parametrize("used", ["none", "all_but_one", "all"])
def test_headers_of_tiny_limits_at_every_edge(limit: int, used: str) -> None:
    """A limit of 1 once divided by zero computing the reset of an admitted request (500)."""
    current = {"none": 0, "all_but_one": limit - 1, "all": limit}[used]
    now = 60_000 * 3 + 59_999
    counts = tuple(Count(Window(n, p, limit), current, limit, now) for n, p in PERIODS)
    for allowed in (True, False):
        headers = Decision(allowed=allowed, requests=counts, tokens=None).headers()
        assert int(headers["RateLimit-Reset"]) >= 1
        assert int(headers["RateLimit-Remaining"]) >= 0
        assert allowed or int(headers["Retry-After"]) >= 1


PERIODS = (("burst", 1000), ("rpm", 60_000), ("rph", 3_600_000))


def test_headers_show_the_window_closest_to_exhaustion_and_the_refusing_one() -> None:
    now = 3_600_000 * 5 + 500
    burst = Count(Window("burst", 1000, 5), 1, 0, now)
    minute = Count(MINUTE, 8, 0, now)
    ok = Decision(allowed=True, requests=(burst, minute), tokens=None)
    headers = ok.headers()
    assert headers["RateLimit-Limit"] == "10" and headers["RateLimit-Remaining"] == "1"
    assert headers["RateLimit-Policy"] == "5;w=1, 10;w=60" and "Retry-After" not in headers
    refused = Decision(allowed=False, requests=(burst, Count(MINUTE, 10, 0, now)), tokens=None)
    headers = refused.headers()
    assert headers["RateLimit-Remaining"] == "0" and int(headers["Retry-After"]) >= 1
    assert headers["RateLimit-Reset"] == headers["Retry-After"]
    spent = Count(Window("tpm", 60_000, 100), 100, 0, now)
    by_tokens = Decision(allowed=False, requests=(burst, minute), tokens=spent)
    assert by_tokens.refused_by is spent


async def test_admit_charges_all_windows_or_none(redis: aioredis.Redis) -> None:
    limiter = Limiter(redis, LimitSettings(burst=100, rpm=3, rph=100))
    record, _ = auth.new_key("k", "user")
    policy = limiter.policy(record)
    assert policy is not None
    verdicts = [(await limiter.admit(policy, metered=False)).allowed for _ in range(5)]
    assert verdicts == [True, True, True, False, False]
    raw = await redis.hgetall(f"uml:rl:{{{record.id}}}:rph")
    assert raw[b"c"] == b"3"  # refused requests charged nothing


async def charge(redis: aioredis.Redis, key_id: str, tokens: int) -> None:
    """What the worker's final write does for a job of ``key_id`` (``workers/sink.py``)."""
    script = scripts.expand("--- @include charge\nreturn charge(KEYS[1], tonumber(ARGV[1]))")
    await redis.eval(script, 1, token_meter(key_id), tokens)  # type: ignore[misc]


async def test_token_budget_refuses_only_once_spent(redis: aioredis.Redis) -> None:
    limiter = Limiter(redis, LimitSettings(tpm=100))
    record, _ = auth.new_key("k", "user")
    policy = limiter.policy(record)
    assert policy is not None
    await charge(redis, record.id, 99)
    assert (await limiter.admit(policy, metered=True)).allowed
    await charge(redis, record.id, 250)  # a job may overrun the budget by its own size
    refused = await limiter.admit(policy, metered=True)
    assert not refused.allowed and refused.refused_by is not None
    assert refused.refused_by.window.name == "tpm"
    assert (await limiter.admit(policy, metered=False)).allowed  # /v1/models still works


async def test_stream_slots_are_capped_released_and_leased(redis: aioredis.Redis) -> None:
    limiter = Limiter(redis, LimitSettings(max_streams=2, stream_lease_s=5))
    record, _ = auth.new_key("k", "user")
    policy = limiter.policy(record)
    assert policy is not None
    first = await limiter.open_stream(policy)
    await limiter.open_stream(policy)
    with pytest.raises(Exception) as caught:
        await limiter.open_stream(policy)
    assert getattr(caught.value, "status", None) == 429
    assert first is not None
    await limiter.close_stream(policy, first)
    assert await limiter.open_stream(policy) is not None
    ttl = await redis.pttl(f"uml:rl:{{{record.id}}}:streams")
    assert 0 < ttl <= 5000  # a dead process's slots go when their lease runs out


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[AsyncTestClient[Any]]:
    cfg = msgspec.structs.replace(settings(redis_url), limits=LimitSettings(rpm=4))
    async with AsyncTestClient(create_app(cfg)) as client:
        yield client


async def test_http_429_shape_and_headers(client: AsyncTestClient[Any]) -> None:
    made = await client.post("/admin/keys", json={"name": "t", "rpm": 3}, headers=AUTH)
    assert "ratelimit-limit" not in made.headers  # the bootstrap key is unlimited
    key = {"Authorization": f"Bearer {made.json()['key']}"}
    seen = [await client.get("/v1/models", headers=key) for _ in range(3)]
    assert [r.headers["ratelimit-remaining"] for r in seen] == ["2", "1", "0"]
    assert all(r.headers["ratelimit-limit"] == "3" for r in seen)
    refused = await client.get("/v1/models", headers=key)
    error = error_of(refused, 429)
    assert error["type"] == "requests" and error["code"] == "rate_limit_exceeded"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["ratelimit-remaining"] == "0"
    # an error response of a limited key carries the headers too (a fresh key: 404 route body)
    other = await client.post("/admin/keys", json={"name": "u"}, headers=AUTH)
    bad = await client.post(
        "/v1/chat/completions",
        json={"model": "nope", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {other.json()['key']}"},
    )
    assert bad.status_code == 404 and bad.headers["ratelimit-limit"] == "4"


@pytest.mark.parametrize("limit", ["burst", "rpm", "rph"])
async def test_a_limit_of_one_admits_one_then_429s(
    client: AsyncTestClient[Any], limit: str
) -> None:
    """``uml keys create --burst 1`` (or rpm, rph): the first request answered 500."""
    made = await client.post("/admin/keys", json={"name": "one", limit: 1}, headers=AUTH)
    key = {"Authorization": f"Bearer {made.json()['key']}"}
    first = await client.get("/v1/models", headers=key)
    assert first.status_code == 200, first.text
    assert first.headers["ratelimit-remaining"] == "0"
    assert int(first.headers["ratelimit-reset"]) >= 1
    refused = await client.get("/v1/models", headers=key)
    assert error_of(refused, 429)["code"] == "rate_limit_exceeded"
    assert int(refused.headers["retry-after"]) >= 1
