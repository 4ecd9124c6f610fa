"""The audit log over HTTP (AsyncTestClient, real Redis): one record per request, whatever
its status; admin actions name who did them; ``GET /admin/audit``; no key material."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient

from api.app import create_app
from protocol.keys import AUDIT_STREAM
from protocol.settings import SecuritySettings, Settings
from tests.auth import ADMIN_KEY, AUTH
from tests.unit.test_api_http import settings

AUDIT = "/admin/audit"


def audit_settings(url: str, **security: Any) -> Settings:
    cfg = settings(url)
    sec = SecuritySettings(admin_key=ADMIN_KEY, **security)
    return msgspec.structs.replace(cfg, security=sec)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(create_app(audit_settings(redis_url))) as client:
        yield client


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def stream(redis: aioredis.Redis, count: int) -> list[dict[str, Any]]:
    """The audit stream's records, oldest first, once it holds at least ``count``."""

    async def enough() -> bool:
        return int(await redis.xlen(AUDIT_STREAM)) >= count

    await until(enough, f"{count} audit records")
    entries = await redis.xrange(AUDIT_STREAM)
    return [msgspec.json.decode(fields[b"data"]) for _, fields in entries]


async def test_every_request_is_recorded_with_its_id(
    client: AsyncTestClient[Any], redis: aioredis.Redis
) -> None:
    calls = [
        ("GET", "/v1/models", AUTH, 200),
        ("GET", "/v1/models", {}, 401),
        ("GET", "/v1/models", {"Authorization": "Bearer uml_0123456789abcdef_" + "s" * 43}, 401),
        ("GET", "/v1/nothing", AUTH, 404),
        ("POST", "/v1/chat/completions", AUTH, 400),
        ("GET", "/health", {}, 200),
    ]
    ids = []
    for method, path, headers, status in calls:
        resp = await client.request(method, path, headers=headers)
        assert resp.status_code == status
        ids.append(resp.headers["x-request-id"])
    assert len(set(ids)) == len(ids)
    records = await stream(redis, len(calls))
    got = [(r["request_id"], r["method"], r["path"], r["status"], r["key_id"]) for r in records]
    want = [
        (rid, m, p, s, "bootstrap" if h is AUTH and p != "/v1/nothing" else "anonymous")
        for rid, (m, p, h, s) in zip(ids, calls, strict=True)
    ]  # an unknown path answers 404 before the key is checked
    assert got == want
    first = records[0]
    assert first["key_name"].startswith("bootstrap") and first["scope"] == "admin"
    assert first["latency_ms"] >= 0 and abs(first["time"] - time.time()) < 60
    raw = b"".join(f[b"data"] for _, f in await redis.xrange(AUDIT_STREAM))
    assert b"s" * 43 not in raw and ADMIN_KEY.encode() not in raw


async def test_admin_actions_name_the_actor(
    client: AsyncTestClient[Any], redis: aioredis.Redis
) -> None:
    resp = await client.post("/admin/keys", json={"name": "ops", "scope": "admin"}, headers=AUTH)
    ops_key, ops_id = resp.json()["key"], resp.json()["info"]["id"]
    ops = {"X-API-Key": ops_key}
    resp = await client.post("/admin/keys", json={"name": "app", "scope": "user"}, headers=ops)
    app_key, app_id = resp.json()["key"], resp.json()["info"]["id"]
    resp = await client.post(f"/admin/keys/{app_id}/rotate", json={"grace": "1h"}, headers=ops)
    assert resp.status_code == 200 and resp.json()["info"]["id"] == app_id
    new_key = resp.json()["key"]
    for key in (app_key, new_key):  # the old secret works during the grace
        assert (await client.get("/v1/models", headers={"X-API-Key": key})).status_code == 200
    assert (
        await client.post("/admin/keys/0000000000000000/rotate", headers=ops)
    ).status_code == 404
    assert (await client.delete(f"/admin/keys/{app_id}", headers=ops)).status_code == 200
    records = await stream(redis, 7)
    actions = [(r["key_id"], r.get("action"), r.get("target"), r["status"]) for r in records]
    assert actions == [
        ("bootstrap", "key.create", ops_id, 201),
        (ops_id, "key.create", app_id, 201),
        (ops_id, "key.rotate", app_id, 200),
        (app_id, None, None, 200),
        (app_id, None, None, 200),
        (ops_id, "key.rotate", "0000000000000000", 404),
        (ops_id, "key.revoke", app_id, 200),
    ]
    raw = b"".join(f[b"data"] for _, f in await redis.xrange(AUDIT_STREAM))
    for key in (ops_key, app_key, new_key):
        assert key.encode() not in raw and key.split("_", 2)[2].encode() not in raw


async def test_read_newest_first_with_filters(
    client: AsyncTestClient[Any], redis: aioredis.Redis
) -> None:
    resp = await client.post("/admin/keys", json={"name": "u", "scope": "user"}, headers=AUTH)
    user = {"Authorization": f"Bearer {resp.json()['key']}"}
    user_id = resp.json()["info"]["id"]
    for _ in range(3):
        await client.get("/v1/models", headers=user)
    assert (await client.get(AUDIT, headers=user)).status_code == 403
    await stream(redis, 5)
    data = (await client.get(AUDIT, headers=AUTH)).json()["data"]
    assert [r["path"] for r in data[:2]] == [AUDIT, "/v1/models"]
    assert [r["id"] for r in data] == sorted((r["id"] for r in data), reverse=True)
    mine = (await client.get(AUDIT, params={"key_id": user_id}, headers=AUTH)).json()["data"]
    assert [(r["path"], r["status"]) for r in mine] == [
        (AUDIT, 403),
        ("/v1/models", 200),
        ("/v1/models", 200),
        ("/v1/models", 200),
    ]
    one = (await client.get(AUDIT, params={"key_id": user_id, "limit": 1}, headers=AUTH)).json()
    assert len(one["data"]) == 1
    later = (await client.get(AUDIT, params={"since": time.time() + 60}, headers=AUTH)).json()
    assert later["data"] == []
    for bad in ({"limit": 0}, {"limit": 10**6}, {"since": "x"}, {"since": -1}):
        resp = await client.get(AUDIT, params=bad, headers=AUTH)
        assert resp.status_code == 400 and set(resp.json()) == {"error"}


@pytest.mark.parametrize("log_text", [False, True])
async def test_prompt_text_only_when_turned_on(
    redis_url: str, redis: aioredis.Redis, log_text: bool
) -> None:
    app = create_app(audit_settings(redis_url, audit_log_text=log_text))
    async with AsyncTestClient(app) as client:
        body = {"model": "absent", "messages": [{"role": "user", "content": "secret plans"}]}
        resp = await client.post("/v1/chat/completions", json=body, headers=AUTH)
        assert resp.status_code == 404
        (record,) = await stream(redis, 1)
    assert record["model"] == "absent" and record["status"] == 404
    assert ("prompt" in record) is log_text
    if log_text:
        assert record["prompt"] == "user: secret plans"


async def test_stream_is_capped(redis_url: str, redis: aioredis.Redis) -> None:
    app = create_app(audit_settings(redis_url, audit_maxlen=100))
    async with AsyncTestClient(app) as client:
        for _ in range(400):
            await client.get("/health")
    assert 100 <= int(await redis.xlen(AUDIT_STREAM)) < 400  # MAXLEN ~ trims whole nodes
