"""A key that stops opening cuts what it holds open, on another replica, within seconds.

Two real API processes on one Redis: the socket or stream is opened on one, the key is
revoked (or rotated, or expires) through the other. Jobs are long (2,000 tokens) so they are
still running when the cut comes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from protocol import ws
from protocol.keys import job_key
from tests.auth import AUTH
from tests.integration.conftest import MODEL
from tests.integration.stack import Stack, wait_for

pytestmark = pytest.mark.timeout(120)

CUT_S = 10
"""Bound on revoke → closed socket (measured: well under a second; generous for CI)."""
LONG = {"model": MODEL, "prompt": "long", "max_tokens": 2000, "seed": 1}


def make_key(client: httpx.Client, **extra: Any) -> tuple[str, str]:
    made = client.post("/admin/keys", json={"name": "revocable", **extra}, headers=AUTH)
    assert made.status_code == 201, made.text
    return made.json()["key"], made.json()["info"]["id"]


def ws_url(base: str) -> str:
    return base.replace("http://", "ws://") + "/ws"


async def started_job(sock: ClientConnection) -> str:
    """Start a long job on ``sock``; return its id once its first token arrived."""
    await sock.send(json.dumps({"type": "generate", "body": LONG}))
    job_id = None
    while True:
        frame = json.loads(await sock.recv())
        assert frame["type"] in ("job", "token"), frame
        job_id = job_id or frame["job_id"]
        if frame["type"] == "token":
            return str(job_id)


async def closed_code(sock: ClientConnection, within: float) -> tuple[int, str, float]:
    """Read until the server closes ``sock``: its code, reason, and seconds it took."""
    t0 = time.monotonic()
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(within):
            while True:
                await sock.recv()
    rcvd = closed.value.rcvd
    assert rcvd is not None, "closed without a close frame"
    return rcvd.code, rcvd.reason, time.monotonic() - t0


def job_status(stack: Stack, job_id: str) -> str:
    client = redis.Redis.from_url(stack.redis_url)
    try:
        raw = client.hget(job_key(job_id), "status")
        return raw.decode() if raw else ""
    finally:
        client.close()


async def test_revoke_on_one_replica_closes_sockets_on_the_other(
    clients: list[httpx.Client], two_apis: list[str], stack: Stack
) -> None:
    a, _ = clients
    key, key_id = make_key(a)
    headers = {"Authorization": f"Bearer {key}"}
    async with connect(ws_url(two_apis[1]), additional_headers=headers) as sock:
        job_id = await started_job(sock)
        revoked = a.delete(f"/admin/keys/{key_id}", headers=AUTH)
        assert revoked.status_code == 200, revoked.text
        code, reason, took = await closed_code(sock, CUT_S)
    assert (code, reason) == (ws.CLOSE_KEY_REVOKED, "API key revoked"), (code, reason, took)
    wait_for(lambda: job_status(stack, job_id) == "cancelled", 30, "the socket's job cancelled")


async def test_an_expiring_key_closes_its_socket_at_expiry(two_apis: list[str]) -> None:
    with httpx.Client(base_url=two_apis[0]) as a:
        key, _ = make_key(a, expires="3s")
    async with connect(ws_url(two_apis[1]), additional_headers={"X-API-Key": key}) as sock:
        await sock.send(json.dumps({"type": "ping"}))
        assert json.loads(await sock.recv())["type"] == "pong"
        code, reason, _ = await closed_code(sock, 3 + CUT_S)
    assert (code, reason) == (ws.CLOSE_KEY_EXPIRED, "API key expired")


async def test_rotation_closes_old_secret_sockets_at_grace_end_only(
    two_apis: list[str],
) -> None:
    with httpx.Client(base_url=two_apis[0]) as a:
        old, key_id = make_key(a)
        url = ws_url(two_apis[1])
        async with connect(url, additional_headers={"X-API-Key": old}) as on_old:
            rotated = a.post(f"/admin/keys/{key_id}/rotate", json={"grace": "3s"}, headers=AUTH)
            assert rotated.status_code == 200, rotated.text
            new = rotated.json()["key"]
            async with connect(url, additional_headers={"X-API-Key": new}) as on_new:
                code, reason, _ = await closed_code(on_old, 3 + CUT_S)
                assert code == ws.CLOSE_KEY_EXPIRED and "rotated" in reason
                await on_new.send(json.dumps({"type": "ping", "ref": "n"}))
                assert json.loads(await on_new.recv()) == {"type": "pong", "ref": "n"}


def _sse_data(client: httpx.Client, method: str, path: str, **kw: Any) -> Iterator[str]:
    """Open an SSE response; yield its data lines one by one."""
    with client.stream(method, path, **kw) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data: "):
                yield line[6:]


def test_revoke_cuts_running_sse_streams_on_the_other_replica(
    clients: list[httpx.Client], stack: Stack
) -> None:
    a, b = clients
    key, key_id = make_key(a)
    headers = {"Authorization": f"Bearer {key}"}
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2000}
    stream = {**body, "stream": True}
    chat = _sse_data(b, "POST", "/v1/chat/completions", json=stream, headers=headers)
    submit = {"type": "completion", "body": LONG, "priority": "interactive"}
    job = b.post("/v1/jobs", json=submit, headers=headers)
    assert job.status_code == 202, job.text
    events = _sse_data(b, "GET", f"/v1/jobs/{job.json()['id']}/events", headers=headers)
    next(chat), next(events)  # both are flowing
    assert a.delete(f"/admin/keys/{key_id}", headers=AUTH).status_code == 200
    t0 = time.monotonic()
    tail = list(chat)
    assert json.loads(tail[-2])["error"]["code"] == "invalid_api_key" and tail[-1] == "[DONE]"
    last = json.loads(list(events)[-1])
    assert last["error"]["code"] == "invalid_api_key"
    assert time.monotonic() - t0 < CUT_S
    # the background job runs on: leaving its event stream never cancels it
    assert job_status(stack, job.json()["id"]) in ("running", "queued", "succeeded")
