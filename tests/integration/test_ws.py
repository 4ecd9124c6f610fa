"""``/ws`` against the live stack: concurrent jobs, cancel, resume, auth at the handshake."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from client.universal_client import (
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    SyncUniversalClient,
    UniversalClient,
)
from protocol import ws
from protocol.states import JobStatus
from tests.auth import ADMIN_KEY
from tests.integration.conftest import MODEL
from tests.integration.stack import Stack, wait_for

pytestmark = pytest.mark.timeout(120)


def _ws_url(api_url: str) -> str:
    return api_url.replace("http://", "ws://") + "/ws"


async def test_three_concurrent_jobs_one_cancelled(api_url: str) -> None:
    async with UniversalClient(api_url, ADMIN_KEY) as client, client.websocket() as sock:
        assert await sock.ping() < 5
        ids = [
            await sock.generate(MODEL, prompt="one", max_tokens=24, seed=1),
            await sock.generate(MODEL, prompt="two", max_tokens=2000, seed=2),
            await sock.generate(
                MODEL, messages=[{"role": "user", "content": "three"}], max_tokens=24, seed=3
            ),
        ]
        assert len(set(ids)) == 3
        first_token = await anext(aiter(sock.events(ids[1], timeout=60)))
        await sock.cancel(ids[1])
        results = await asyncio.gather(*(sock.text(i, timeout=60) for i in ids))
        # the cancelled job's text continues from its first token
        results[1] = (first_token.text + results[1][0], results[1][1])  # type: ignore[union-attr]
        finish = [done.finish_reason for _, done in results]
        assert {finish[0], finish[2]} <= {"stop", "length"} and finish[1] == "cancelled"
        for job_id, (text, done) in zip(ids, results, strict=True):
            job = await client.get_job(job_id)
            assert job.text == text
            assert done.usage.completion_tokens == job.completion_tokens
        assert (await client.get_job(ids[1])).status is JobStatus.CANCELLED
        # text equals the HTTP endpoint's for the same seed
        same = await client.complete(MODEL, "one", max_tokens=24, seed=1)
        assert same.choices[0].text == results[0][0]


async def test_refused_messages_are_error_frames(api_url: str) -> None:
    async with UniversalClient(api_url, ADMIN_KEY) as client, client.websocket() as sock:
        with pytest.raises(NotFoundError):
            await sock.generate("no-such-model", prompt="x")
        with pytest.raises(BadRequestError) as bad:
            await sock.generate(MODEL, prompt="x", max_tokens=-1)
        assert bad.value.param == "body.max_tokens"
        assert await sock.ping() < 5  # the socket is still open
    async with connect(_ws_url(api_url), additional_headers={"X-API-Key": ADMIN_KEY}) as raw:
        await raw.send("not json")
        reply = json.loads(await raw.recv())
        assert reply["type"] == "error" and reply["error"]["type"] == "invalid_request_error"
        await raw.send(json.dumps({"type": "subscribe", "job_id": "job-nope"}))
        reply = json.loads(await raw.recv())
        assert reply["error"]["code"] == "job_not_found" and reply["job_id"] == "job-nope"


async def test_handshake_auth(api_url: str, stack: Stack) -> None:
    url = _ws_url(api_url)
    for headers in ({}, {"Authorization": "Bearer uml_bad_key"}):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, additional_headers=headers):
                pass
        assert refused.value.response.status_code == 401
        body = json.loads(refused.value.response.body or b"{}")
        assert body["error"]["code"] == "invalid_api_key"
    async with UniversalClient(api_url, "uml_bad_key") as stranger:
        with pytest.raises(AuthenticationError):
            async with stranger.websocket():
                pass
    # browsers: the key as a query parameter, or as an offered subprotocol
    async with connect(f"{url}?api_key={ADMIN_KEY}") as sock:
        await sock.send(ws.encode(ws.Ping(ref="q")).decode())
        assert json.loads(await sock.recv()) == {"type": "pong", "ref": "q"}
    logs = "".join(proc.log() for proc in stack.procs)
    assert "/ws?api_key=redacted" in logs and ADMIN_KEY not in logs  # the key is never logged
    offered = [ws.SUBPROTOCOL, ws.KEY_SUBPROTOCOL_PREFIX + ADMIN_KEY]
    async with connect(url, subprotocols=offered) as sock:  # type: ignore[arg-type]
        assert sock.subprotocol == ws.SUBPROTOCOL  # the key is never echoed back
        await sock.send(ws.encode(ws.Ping()).decode())
        assert json.loads(await sock.recv())["type"] == "pong"


async def test_closing_cancels_started_jobs_not_subscribed_ones(api_url: str) -> None:
    async with UniversalClient(api_url, ADMIN_KEY) as client:
        outside = await client.submit_job(MODEL, prompt="outside", max_tokens=300, seed=4)
        async with client.websocket() as sock:
            started = await sock.generate(MODEL, prompt="mine", max_tokens=2000, seed=5)
            await sock.subscribe(outside.id)
            await anext(aiter(sock.events(started, timeout=60)))
        # the socket is closed: its own job is cancelled, the subscribed one runs on
        with httpx.Client(base_url=api_url, headers={"X-API-Key": ADMIN_KEY}) as http:
            wait_for(
                lambda: http.get(f"/v1/jobs/{started}").json()["status"] == "cancelled",
                30,
                "the socket's job to be cancelled",
            )
        done = await client.wait_job(outside.id, timeout=60)
        assert done.status is JobStatus.SUCCEEDED


async def test_resume_on_a_new_socket_by_seq(api_url: str) -> None:
    async with UniversalClient(api_url, ADMIN_KEY) as client:
        job = await client.submit_job(MODEL, prompt="resume", max_tokens=40, seed=6)
        async with client.websocket() as first:
            await first.subscribe(job.id)
            events = first.events(job.id, timeout=60)
            head = [await anext(events) for _ in range(3)]
        async with client.websocket() as second:
            await second.subscribe(job.id, after=head[-1].seq)
            tail = [m async for m in second.events(job.id, timeout=60)]
        async with client.websocket() as third:  # past the end of a finished log: nothing
            await third.subscribe(job.id, after=tail[-1].seq)
            await third.subscribe(job.id, after=tail[-1].seq)  # no forwarder was left behind
            assert await third.ping() < 5
            assert third._router.event(job.id) is None
        seqs = [m.seq for m in head + tail]
        assert seqs == sorted(set(seqs))  # no duplicate
        text = "".join(getattr(m, "text", "") for m in head + tail)
        assert text == (await client.wait_job(job.id)).text  # no gap


def test_sync_websocket(api_url: str) -> None:
    with SyncUniversalClient(api_url, ADMIN_KEY) as client, client.websocket() as sock:
        assert sock.ping() < 5
        a = sock.generate(MODEL, prompt="a", max_tokens=8, seed=7)
        b = sock.generate(MODEL, messages=[{"role": "user", "content": "b"}], max_tokens=8, seed=8)
        text_b, done_b = sock.text(b, timeout=60)
        text_a, done_a = sock.text(a, timeout=60)
        assert client.get_job(a).text == text_a and client.get_job(b).text == text_b
        assert {done_a.finish_reason, done_b.finish_reason} <= {"stop", "length"}


async def test_another_keys_job_is_not_found(api_url: str) -> None:
    with httpx.Client(base_url=api_url, headers={"X-API-Key": ADMIN_KEY}) as http:
        made = http.post("/admin/keys", json={"name": "ws-other"}).json()
    user_key = made["key"]
    async with UniversalClient(api_url, ADMIN_KEY) as admin:
        job = await admin.submit_job(MODEL, prompt="mine", max_tokens=4)
        async with UniversalClient(api_url, user_key) as user, user.websocket() as sock:
            await sock.subscribe(job.id)
            with pytest.raises(NotFoundError):
                await anext(aiter(sock.events(job.id, timeout=30)))
            await sock.cancel(job.id)
            with pytest.raises(NotFoundError):
                await anext(aiter(sock.events(job.id, timeout=30)))
            own = await sock.generate(MODEL, prompt="user job", max_tokens=4)
            text, done = await sock.text(own, timeout=60)
        assert (await admin.wait_job(job.id)).status is JobStatus.SUCCEEDED
