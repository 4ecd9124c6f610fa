"""``/ws`` inside the key's limits, the body cap, the audit log and the no-key-in-logs rule,
against the live stack (real ``uml serve``, real worker, real Redis)."""

from __future__ import annotations

import asyncio
import json
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from protocol import ws
from protocol.settings import LimitSettings, ServerSettings
from tests.auth import AUTH
from tests.integration.conftest import MODEL
from tests.integration.stack import STREAM_CAP, Stack, wait_for

pytestmark = pytest.mark.timeout(120)


def _url(api_url: str, query: str = "") -> str:
    return api_url.replace("http://", "ws://") + "/ws" + query


def _key(http: httpx.Client, **limits: Any) -> tuple[str, str]:
    made = http.post("/admin/keys", json={"name": "ws-limits", **limits}, headers=AUTH)
    assert made.status_code == 201, made.text
    return made.json()["key"], made.json()["info"]["id"]


async def _frame(sock: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(30):
        frame: dict[str, Any] = json.loads(await sock.recv())
        return frame


async def test_handshakes_are_charged_requests(api_url: str, http: httpx.Client) -> None:
    key, _ = _key(http, burst=2, rpm=5)
    accepted, refused = 0, []
    for _ in range(10):
        try:
            async with connect(_url(api_url), additional_headers={"X-API-Key": key}):
                accepted += 1
        except InvalidStatus as exc:
            refused.append(exc.response)
    assert 1 <= accepted <= 5 and len(refused) == 10 - accepted
    assert all(r.status_code == 429 for r in refused)
    body = json.loads(refused[0].body or b"{}")
    assert body["error"]["code"] == "rate_limit_exceeded"
    assert int(refused[0].headers["retry-after"]) >= 1


async def test_sockets_per_key_are_capped(api_url: str, http: httpx.Client) -> None:
    cap = LimitSettings().max_sockets
    key, _ = _key(http, burst=1000, rpm=10_000)
    headers = {"X-API-Key": key}
    async with AsyncExitStack() as held:
        for _ in range(cap):
            await held.enter_async_context(connect(_url(api_url), additional_headers=headers))
        with pytest.raises(InvalidStatus) as over:
            async with connect(_url(api_url), additional_headers=headers):
                pass
        assert over.value.response.status_code == 429
    # closed sockets give their slots back
    async with connect(_url(api_url), additional_headers=headers) as sock:
        await sock.send(json.dumps({"type": "ping", "ref": "again"}))
        assert (await _frame(sock))["ref"] == "again"


async def test_a_message_flood_is_refused_then_closed(api_url: str, http: httpx.Client) -> None:
    key, _ = _key(http, burst=1000, rpm=10_000)
    limits = LimitSettings()
    async with connect(_url(api_url), additional_headers={"X-API-Key": key}) as sock:
        for i in range(500):
            await sock.send(json.dumps({"type": "ping", "ref": str(i)}))
        pongs = errors = 0
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                frame = await _frame(sock)
                if frame["type"] == "pong":
                    pongs += 1
                else:
                    assert frame["error"]["code"] == "rate_limit_exceeded"
                    errors += 1
    assert closed.value.rcvd is not None and closed.value.rcvd.code == ws.CLOSE_POLICY
    assert limits.ws_message_burst <= pongs < 500 and errors >= 1


async def test_subscribe_holds_a_stream_slot(api_url: str, http: httpx.Client) -> None:
    key, _ = _key(http, burst=1000, rpm=10_000)
    headers = {"Authorization": f"Bearer {key}"}
    body = {"model": MODEL, "prompt": "slot", "max_tokens": 2000}
    submit = {"type": "completion", "body": body, "priority": "batch"}
    ids = [
        http.post("/v1/jobs", json=submit, headers=headers).json()["id"]
        for _ in range(STREAM_CAP + 1)
    ]
    try:
        async with connect(_url(api_url), additional_headers=headers) as sock:
            for job_id in ids:
                await sock.send(json.dumps({"type": "subscribe", "job_id": job_id}))
            refused = None
            while refused is None:
                frame = await _frame(sock)
                if frame["type"] == "error" and frame.get("status") == 429:
                    refused = frame
            assert refused["error"]["code"] == "rate_limit_exceeded"
            assert "streams" in refused["error"]["message"]
    finally:
        for job_id in ids:
            http.post(f"/v1/jobs/{job_id}/cancel", headers=headers)


async def test_a_frame_over_the_body_cap_closes_1009_unread(api_url: str) -> None:
    cap = ServerSettings().max_body_bytes
    async with connect(_url(api_url), additional_headers=AUTH, max_size=None) as sock:
        await sock.send(json.dumps({"type": "ping", "pad": "x" * (2 * cap)}))
        with pytest.raises(ConnectionClosed) as closed:
            await _frame(sock)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == ws.CLOSE_TOO_BIG


async def test_deep_nesting_is_an_error_frame(api_url: str) -> None:
    async with connect(_url(api_url), additional_headers=AUTH) as sock:
        for deep in ("[" * 1000 + "]" * 1000, "{" + '"a":{' * 1000 + "}" * 1001):
            await sock.send('{"type": "generate", "body": ' + deep + "}")
            reply = await _frame(sock)
            assert reply["type"] == "error" and reply["status"] == 400, reply
        await sock.send(json.dumps({"type": "ping", "ref": "alive"}))
        assert (await _frame(sock)) == {"type": "pong", "ref": "alive"}


async def test_no_spelling_of_the_query_key_is_logged(
    api_url: str, http: httpx.Client, stack: Stack
) -> None:
    key, _ = _key(http)
    async with connect(_url(api_url, f"?api%5Fkey={key}")) as sock:  # accepted
        await sock.send(json.dumps({"type": "ping", "ref": "q"}))
        assert (await _frame(sock))["ref"] == "q"
    for query in (f"?x=1;api_key={key}", f"?token={key}"):  # refused, never printed
        with pytest.raises(InvalidStatus) as refused:
            async with connect(_url(api_url, query)):
                pass
        assert refused.value.response.status_code == 401
    wait_for(lambda: "/ws?token=redacted" in _logs(stack), 10, "the handshake log lines")
    assert key not in _logs(stack) and key.split("_")[-1] not in _logs(stack)


def _logs(stack: Stack) -> str:
    return "".join(proc.log() for proc in stack.procs)


async def test_handshakes_and_socket_jobs_are_audited(api_url: str, http: httpx.Client) -> None:
    key, key_id = _key(http)
    with pytest.raises(InvalidStatus):
        async with connect(_url(api_url), additional_headers={"X-API-Key": key + "x"}):
            pass
    async with connect(_url(api_url), additional_headers={"X-API-Key": key}) as sock:
        body = {"model": MODEL, "prompt": "audit me", "max_tokens": 4}
        await sock.send(json.dumps({"type": "generate", "body": body}))
        job_id = (await _frame(sock))["job_id"]
        while (await _frame(sock))["type"] != "done":
            pass

    def records() -> list[dict[str, Any]]:
        answer = http.get("/admin/audit", params={"key_id": key_id}, headers=AUTH).json()
        return list(answer["data"])

    wait_for(lambda: any(r["path"] == "/ws/generate" for r in records()), 10, "the job's record")
    mine = records()
    shake = next(r for r in mine if r["path"] == "/ws")
    job = next(r for r in mine if r["path"] == "/ws/generate")
    assert (shake["method"], shake["status"], shake["key_name"]) == ("GET", 101, "ws-limits")
    assert job["status"] == 200 and job["job_id"] == job_id and job["model"] == MODEL
    assert job["socket"] == shake["request_id"] and job["completion_tokens"] >= 1
    everyone = http.get("/admin/audit", params={"limit": 200}, headers=AUTH).json()["data"]
    assert any(r["path"] == "/ws" and r["status"] == 401 for r in everyone)


async def test_generate_past_the_announced_context_is_refused(api_url: str) -> None:
    async with connect(_url(api_url), additional_headers=AUTH) as sock:
        body = {"model": MODEL, "prompt": "x", "max_tokens": 4000}  # the worker holds 2048
        await sock.send(json.dumps({"type": "generate", "body": body, "ref": "long"}))
        reply = await _frame(sock)
    assert reply["type"] == "error" and reply["status"] == 400 and reply["ref"] == "long"
    error = reply["error"]
    assert (error["code"], error["param"]) == ("context_length_exceeded", "body.max_tokens")
