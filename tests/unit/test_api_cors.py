"""CORS over HTTP (AsyncTestClient, real Redis): an explicit origin list, preflight without a
key, no headers for other origins, and `*` with credentials refused at start-up."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from api.app import create_app
from protocol.settings import SecuritySettings
from tests.auth import ADMIN_KEY, AUTH
from tests.unit.test_api_http import settings

ALLOWED = "https://app.example.com"
OTHER = "https://evil.example.net"
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


def with_cors(url: str, origins: str, credentials: bool = False) -> Any:
    cfg = settings(url)
    security = SecuritySettings(
        admin_key=ADMIN_KEY, cors_origins=origins, cors_allow_credentials=credentials
    )
    return msgspec.structs.replace(cfg, security=security)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[AsyncTestClient[Any]]:
    app = create_app(with_cors(redis_url, f"{ALLOWED}, https://other.example.com", True))
    async with AsyncTestClient(app) as client:
        yield client


async def test_allowed_origin_gets_the_headers(client: AsyncTestClient[Any]) -> None:
    resp = await client.get("/v1/models", headers={**AUTH, "Origin": ALLOWED})
    assert resp.status_code == 200
    assert resp.headers["access-control-allow-origin"] == ALLOWED
    assert resp.headers["access-control-allow-credentials"] == "true"
    assert "x-request-id" in resp.headers["access-control-expose-headers"].lower()


async def test_disallowed_origin_gets_no_allow_origin(client: AsyncTestClient[Any]) -> None:
    resp = await client.get("/v1/models", headers={**AUTH, "Origin": OTHER})
    assert "access-control-allow-origin" not in resp.headers
    resp = await client.options("/v1/chat/completions", headers={"Origin": OTHER, **PREFLIGHT})
    assert resp.status_code == 400
    assert "access-control-allow-origin" not in resp.headers


async def test_preflight_needs_no_key(client: AsyncTestClient[Any]) -> None:
    for path in ("/v1/chat/completions", "/admin/keys"):
        resp = await client.options(path, headers={"Origin": ALLOWED, **PREFLIGHT})
        assert resp.status_code == 204, resp.text
        assert resp.headers["access-control-allow-origin"] == ALLOWED
        allowed = resp.headers["access-control-allow-headers"].lower()
        assert "authorization" in allowed and "x-api-key" in allowed
        assert "POST" in resp.headers["access-control-allow-methods"]
    # the actual request still needs its key
    resp = await client.get("/v1/models", headers={"Origin": ALLOWED})
    assert resp.status_code == 401
    assert resp.headers["access-control-allow-origin"] == ALLOWED  # the browser can read why


async def test_no_origins_means_no_cors(redis_url: str) -> None:
    async with AsyncTestClient(create_app(settings(redis_url))) as client:
        resp = await client.get("/v1/models", headers={**AUTH, "Origin": ALLOWED})
        assert resp.status_code == 200 and "access-control-allow-origin" not in resp.headers


def test_wildcard_with_credentials_is_refused(redis_url: str) -> None:
    with pytest.raises(ValueError, match="cannot be combined"):
        create_app(with_cors(redis_url, "*", credentials=True))
    create_app(with_cors(redis_url, "*", credentials=False))  # a public API may allow all
    env = {**os.environ, "UML_CORS_ORIGINS": "*", "UML_CORS_ALLOW_CREDENTIALS": "true"}
    done = subprocess.run(
        [sys.executable, "-m", "uml.cli", "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "uml serve: UML_CORS_ORIGINS='*' cannot be combined with "
        "UML_CORS_ALLOW_CREDENTIALS=true: list the allowed origins explicitly."
    ]
