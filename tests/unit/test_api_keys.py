"""API keys over HTTP (Litestar's AsyncTestClient, real Redis): 401, 403, admin routes, store."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.security.keys import KeyStore
from protocol import auth
from protocol.keys import APIKEYS_SET, apikey_key
from tests.auth import ADMIN_KEY, AUTH
from tests.unit.test_api_http import error_of, settings

ADMIN_KEYS = "/admin/keys"
GUARDED = "/v1/models"


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(create_app(settings(redis_url))) as client:
        yield client


async def make_key(client: AsyncTestClient[Any], **body: Any) -> tuple[str, dict[str, Any]]:
    resp = await client.post(ADMIN_KEYS, json={"name": "t", **body}, headers=AUTH)
    assert resp.status_code == 201, resp.text
    data = resp.json()
    return data["key"], data["info"]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_401(resp: Any) -> dict[str, Any]:
    error = error_of(resp, 401)
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_api_key"
    assert resp.headers["www-authenticate"].startswith("Bearer")
    return error


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": f"Basic {ADMIN_KEY}"},
        {"X-API-Key": ""},
        {"X-API-Key": "not-a-key"},
        {"Authorization": "Bearer uml_0123456789abcdef_" + "a" * 43},  # unknown id
        {"Authorization": f"Bearer {ADMIN_KEY}x"},
        {"Authorization": f"Bearer {ADMIN_KEY}", "X-API-Key": "uml_other"},
    ],
    ids=["none", "empty", "no-token", "basic", "empty-x", "malformed", "unknown", "near", "differ"],
)
async def test_missing_malformed_or_unknown_key_is_401(
    client: AsyncTestClient[Any], headers: dict[str, str]
) -> None:
    assert_401(await client.get(GUARDED, headers=headers))
    assert_401(await client.get(ADMIN_KEYS, headers=headers))


async def test_both_headers_are_accepted(client: AsyncTestClient[Any]) -> None:
    key, _ = await make_key(client)
    for headers in [bearer(key), {"X-API-Key": key}, {"authorization": f"bearer  {key} "}]:
        assert (await client.get(GUARDED, headers=headers)).status_code == 200
    both = {**bearer(ADMIN_KEY), "X-API-Key": ADMIN_KEY}
    assert (await client.get(ADMIN_KEYS, headers=both)).status_code == 200


async def test_wrong_secret_expired_and_revoked_are_401(
    client: AsyncTestClient[Any], redis: aioredis.Redis
) -> None:
    key, info = await make_key(client)
    key_id, secret = auth.parse_key(key) or ("", "")
    assert_401(await client.get(GUARDED, headers=bearer(f"uml_{key_id}_{'b' * 43}")))

    store = KeyStore(redis)
    record = await store.get(key_id)
    assert record is not None
    await store.add(msgspec.structs.replace(record, expires_at=1.0))
    assert "expired" in assert_401(await client.get(GUARDED, headers=bearer(key)))["message"]

    other, other_info = await make_key(client)
    resp = await client.delete(f"{ADMIN_KEYS}/{other_info['id']}", headers=AUTH)
    assert resp.status_code == 200 and resp.json()["revoked_at"] is not None
    assert "revoked" in assert_401(await client.get(GUARDED, headers=bearer(other)))["message"]


async def test_a_key_is_refused_before_its_body_is_read(client: AsyncTestClient[Any]) -> None:
    too_big = b"{" * 10_000  # beyond max_body_bytes and not JSON: reading it would be 413/400
    resp = await client.post("/v1/completions", content=too_big, headers={"X-API-Key": "nope"})
    assert_401(resp)


async def test_user_key_cannot_create_or_see_keys(client: AsyncTestClient[Any]) -> None:
    key, info = await make_key(client, scope="user")
    headers = bearer(key)
    assert (await client.get(GUARDED, headers=headers)).status_code == 200
    for resp in [
        await client.get(ADMIN_KEYS, headers=headers),
        await client.post(ADMIN_KEYS, json={"name": "x", "scope": "admin"}, headers=headers),
        await client.delete(f"{ADMIN_KEYS}/{info['id']}", headers=headers),
    ]:
        error = error_of(resp, 403)
        assert error["type"] == "invalid_request_error"
        assert error["code"] == "insufficient_permissions"
        assert key not in resp.text and "hash" not in resp.text
    listed = (await client.get(ADMIN_KEYS, headers=AUTH)).json()["data"]
    assert [k["name"] for k in listed] == ["t"]


async def test_an_admin_key_made_over_http_can_administer(client: AsyncTestClient[Any]) -> None:
    key, info = await make_key(client, scope="admin", rpm=10, tpm=1000, expires="1h")
    assert info["scope"] == "admin" and info["limits"] == {"rpm": 10, "tpm": 1000}
    assert info["expires_at"] - info["created_at"] == pytest.approx(3600)
    assert (await client.get(ADMIN_KEYS, headers=bearer(key))).status_code == 200


async def test_listing_holds_no_key_material(
    client: AsyncTestClient[Any], redis: aioredis.Redis
) -> None:
    made = [await make_key(client, name=f"k{i}") for i in range(3)]
    resp = await client.get(ADMIN_KEYS, headers=AUTH)
    assert resp.status_code == 200
    assert [k["id"] for k in resp.json()["data"]] == [info["id"] for _, info in made]
    for key, _ in made:
        secret = (auth.parse_key(key) or ("", ""))[1]
        assert secret not in resp.text
        assert hashlib.sha256(secret.encode()).hexdigest() not in resp.text
    assert ADMIN_KEY not in resp.text and "hash" not in resp.text
    for raw in await redis.mget([apikey_key(info["id"]) for _, info in made]):
        assert raw is not None
        assert not any((auth.parse_key(k) or ("", ""))[1].encode() in raw for k, _ in made)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x", "scope": "root"}, "scope"),
        ({"name": "x", "rpm": 0}, "rpm"),
        ({"name": "x", "expires": "soon"}, "expires"),
        ({"name": "x", "hash": "00"}, "hash"),
    ],
)
async def test_bad_create_is_400(
    client: AsyncTestClient[Any], body: dict[str, Any], param: str | None
) -> None:
    error = error_of(await client.post(ADMIN_KEYS, json=body, headers=AUTH), 400)
    assert error["param"] == param


async def test_revoking_an_unknown_key_is_404(client: AsyncTestClient[Any]) -> None:
    assert error_of(await client.delete(f"{ADMIN_KEYS}/nope", headers=AUTH), 404)["param"] == "id"


async def test_public_routes_need_no_key(client: AsyncTestClient[Any]) -> None:
    assert (await client.get("/health")).status_code == 200
    schema = (await client.get("/schema/openapi.json")).json()
    assert set(schema["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    assert schema["security"] == [{"bearer": []}, {"apiKey": []}]
    assert schema["paths"]["/health"]["get"]["security"] == [{}]
    assert (await client.get("/docs", follow_redirects=True)).status_code == 200


async def test_store_rotate_and_revoke(redis: aioredis.Redis) -> None:
    store = KeyStore(redis)
    record, _ = auth.new_key("k", "user")
    await store.add(record)
    assert await redis.smembers(APIKEYS_SET) == {record.id.encode()}
    rotated = await store.rotate(record.id, grace_s=30)
    assert rotated is not None and rotated[0].previous_hash == record.hash
    revoked = await store.revoke(record.id)
    assert revoked is not None and revoked.revoked_at is not None
    assert revoked.hash == rotated[0].hash  # a revoke keeps the rotation it follows
    assert await store.revoke("missing") is None and await store.rotate("missing", 0) is None
    assert [r.id for r in await store.all()] == [record.id]


async def test_admin_key_file_is_read(tmp_path: Any, redis_url: str) -> None:
    path = tmp_path / "admin.key"
    path.write_text(ADMIN_KEY + "\n")
    cfg = settings(redis_url)
    cfg = msgspec.structs.replace(
        cfg, security=msgspec.structs.replace(cfg.security, admin_key="", admin_key_file=str(path))
    )
    async with AsyncTestClient(create_app(cfg)) as client:
        assert (await client.get(ADMIN_KEYS, headers=AUTH)).status_code == 200
