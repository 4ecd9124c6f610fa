"""Every client method against the live stack, in both faces (async and sync)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import msgspec
import openai
import pytest
import redis

from client.universal_client import (
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    JobError,
    NotFoundError,
    OpenAICompatibleClient,
    SyncOpenAICompatibleClient,
    SyncUniversalClient,
    UniversalClient,
)
from protocol.events import DoneEvent, StatusEvent, TokenEvent
from protocol.states import JobStatus
from tests.auth import ADMIN_KEY
from tests.integration.conftest import MODEL
from tests.integration.stack import Stack, announce_model, withdraw_model

pytestmark = pytest.mark.timeout(120)
HI = [{"role": "user", "content": "Hello!"}]
LONG = "a" * 3000  # longer than the tiny model's context: the job fails in the worker


@pytest.fixture
async def aclient(api_url: str) -> UniversalClient:
    client = UniversalClient(api_url, ADMIN_KEY)
    yield client  # type: ignore[misc]
    await client.aclose()


@pytest.fixture
def sclient(api_url: str) -> SyncUniversalClient:
    with SyncUniversalClient(api_url, ADMIN_KEY) as client:
        yield client  # type: ignore[misc]


async def test_async_service_and_generation(aclient: UniversalClient) -> None:
    health = await aclient.health_check()
    assert health.ok and MODEL in health.models
    assert MODEL in [m.id for m in (await aclient.list_models()).data]

    whole = await aclient.complete(MODEL, "Once", max_tokens=12, seed=3)
    async with await aclient.stream_complete(MODEL, "Once", max_tokens=12, seed=3) as chunks:
        text = "".join([c.choices[0].text async for c in chunks if c.choices])
    assert text == whole.choices[0].text and whole.usage is not None

    chat = await aclient.chat(MODEL, HI, max_tokens=12, temperature=0)
    async with await aclient.stream_chat(
        MODEL, HI, max_tokens=12, temperature=0, stream_options={"include_usage": True}
    ) as chunks:
        got = [c async for c in chunks]
    streamed = "".join(c.choices[0].delta.content or "" for c in got if c.choices)
    assert streamed == chat.choices[0].message.content
    assert got[-1].usage == chat.usage


def test_sync_service_and_generation(sclient: SyncUniversalClient) -> None:
    assert sclient.health_check().ok
    assert MODEL in [m.id for m in sclient.list_models().data]
    whole = sclient.complete(MODEL, "Once", max_tokens=12, seed=3)
    with sclient.stream_complete(MODEL, "Once", max_tokens=12, seed=3) as chunks:
        text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text
    chat = sclient.chat(MODEL, HI, max_tokens=12, temperature=0)
    with sclient.stream_chat(MODEL, HI, max_tokens=12, temperature=0) as chunks:
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == chat.choices[0].message.content


async def test_async_jobs(aclient: UniversalClient) -> None:
    job = await aclient.submit_job(MODEL, prompt="Once", max_tokens=16, seed=1, metadata={"t": "1"})
    assert job.status in (JobStatus.QUEUED, JobStatus.RUNNING)
    async with await aclient.stream_job(job.id) as events:
        seen = [e async for e in events]
    assert isinstance(seen[0], StatusEvent) and isinstance(seen[-1], DoneEvent)
    assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
    done = await aclient.wait_job(job.id)
    assert done.status is JobStatus.SUCCEEDED and done.metadata == {"t": "1"}
    assert done.text == "".join(e.text for e in seen if isinstance(e, TokenEvent))
    assert (await aclient.get_job(job.id)).id == job.id
    assert job.id in [j.id for j in (await aclient.list_jobs(limit=50)).data]

    running = await aclient.submit_job(MODEL, messages=HI, max_tokens=2000, priority="interactive")
    cancelled = await aclient.cancel_job(running.id)
    assert cancelled.status is JobStatus.CANCELLED

    failing = await aclient.submit_job(MODEL, prompt=LONG, max_tokens=4)
    with pytest.raises(JobError) as info:
        async with await aclient.stream_job(failing.id) as events:
            async for _ in events:
                pass
    assert info.value.code == "context_length_exceeded" and info.value.job_id == failing.id
    assert (await aclient.wait_job(failing.id)).status is JobStatus.FAILED


def test_sync_jobs(sclient: SyncUniversalClient) -> None:
    job = sclient.submit_job(MODEL, messages=HI, max_tokens=16, temperature=0)
    with sclient.stream_job(job.id, after=1) as events:  # after: skip the status event
        seen = list(events)
    assert seen[0].seq == 2 and isinstance(seen[-1], DoneEvent)
    done = sclient.wait_job(job.id, timeout=60)
    assert done.text == "".join(e.text for e in seen if isinstance(e, TokenEvent))
    assert sclient.get_job(job.id).status is JobStatus.SUCCEEDED
    assert sclient.list_jobs(limit=5).data
    other = sclient.submit_job(MODEL, prompt="x", max_tokens=2000)
    assert sclient.cancel_job(other.id).status is JobStatus.CANCELLED


async def test_idempotency_key_is_honoured(aclient: UniversalClient) -> None:
    key = f"test-{uuid.uuid4().hex}"
    first = await aclient.submit_job(MODEL, prompt="p", max_tokens=2, idempotency_key=key)
    again = await aclient.submit_job(MODEL, prompt="p", max_tokens=2, idempotency_key=key)
    assert again.id == first.id
    with pytest.raises(ConflictError) as info:
        await aclient.submit_job(MODEL, prompt="other", max_tokens=2, idempotency_key=key)
    assert info.value.code == "idempotency_key_reused"


def test_typed_errors(api_url: str, sclient: SyncUniversalClient) -> None:
    with pytest.raises(NotFoundError) as missing:
        sclient.complete("no-such-model", "x")
    assert missing.value.code == "model_not_found" and missing.value.param == "model"
    with pytest.raises(BadRequestError) as bad:
        sclient.chat(MODEL, [{"role": "wizard", "content": "x"}])
    assert bad.value.param == "messages[0].role"
    with pytest.raises(NotFoundError):
        sclient.get_job("job-nope")
    with SyncUniversalClient(api_url, "uml_wrong_key") as stranger:
        with pytest.raises(AuthenticationError) as denied:
            stranger.list_models()
    assert "uml_wrong_key" not in str(denied.value)


async def test_openai_compatible_async(api_url: str) -> None:
    async with OpenAICompatibleClient(base_url=f"{api_url}/v1", api_key=ADMIN_KEY) as client:
        assert MODEL in [m.id for m in (await client.models.list()).data]
        reply = await client.chat.completions.create(
            model=MODEL, messages=HI, max_tokens=8, temperature=0
        )
        stream = await client.chat.completions.create(
            model=MODEL, messages=HI, max_tokens=8, temperature=0, stream=True
        )
        pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        assert "".join(pieces) == reply.choices[0].message.content
        text = await client.completions.create(model=MODEL, prompt="x", max_tokens=5, seed=2)
        async with await client.completions.create(
            model=MODEL, prompt="x", max_tokens=5, seed=2, stream=True
        ) as chunks:
            assert "".join([c.choices[0].text async for c in chunks if c.choices]) == (
                text.choices[0].text
            )


async def test_official_openai_sdk_async(api_url: str) -> None:
    """The async SDK, streamed and not (test_spine covers the sync SDK's chat)."""
    async with openai.AsyncOpenAI(base_url=f"{api_url}/v1", api_key=ADMIN_KEY) as sdk:
        reply = await sdk.chat.completions.create(
            model=MODEL,
            messages=HI,
            max_tokens=8,
            temperature=0,  # type: ignore[arg-type]
        )
        stream = await sdk.chat.completions.create(
            model=MODEL,
            messages=HI,  # type: ignore[arg-type]
            max_tokens=8,
            temperature=0,
            stream=True,
        )
        pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        assert "".join(pieces) == reply.choices[0].message.content
        whole = await sdk.completions.create(model=MODEL, prompt="x", max_tokens=6, seed=4)
        chunks = await sdk.completions.create(
            model=MODEL, prompt="x", max_tokens=6, seed=4, stream=True
        )
        assert "".join([c.choices[0].text async for c in chunks]) == whole.choices[0].text
    with openai.OpenAI(base_url=f"{api_url}/v1", api_key=ADMIN_KEY) as sync_sdk:
        streamed = sync_sdk.completions.create(
            model=MODEL, prompt="x", max_tokens=6, seed=4, stream=True
        )
        assert "".join(c.choices[0].text for c in streamed) == whole.choices[0].text


def test_openai_compatible_sync(api_url: str) -> None:
    with SyncOpenAICompatibleClient(base_url=api_url, api_key=ADMIN_KEY) as client:
        assert MODEL in [m.id for m in client.models.list().data]
        reply = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=8, seed=5)
        with client.chat.completions.create(
            model=MODEL, messages=HI, max_tokens=8, seed=5, stream=True
        ) as stream:
            pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
        assert "".join(pieces) == reply.choices[0].message.content
        assert client.completions.create(model=MODEL, prompt="x", max_tokens=3).choices


async def test_load_use_unload_a_model(aclient: UniversalClient, tiny_model: Path) -> None:
    name = f"client-extra-{uuid.uuid4().hex[:6]}"
    loaded = await aclient.load_model(name, path=str(tiny_model), wait=True)
    assert [op.state for op in loaded.data] == ["ready"], loaded
    assert name in [m.id for m in (await aclient.list_models()).data]
    assert (await aclient.complete(name, "x", max_tokens=2)).choices
    overview = await aclient.models_overview()
    assert name in [m.name for m in overview.models] and overview.workers
    unloaded = await aclient.unload_model(name, wait=True)
    assert {op.state for op in unloaded.data} == {"unloaded"}, unloaded
    assert (await aclient.model_op(loaded.data[0].id)).state == "ready"


def test_model_ops_sync(sclient: SyncUniversalClient) -> None:
    op = sclient.load_model(MODEL).data[0]  # already held: nothing to do
    assert sclient.model_op(op.id).model == MODEL
    assert MODEL in [m.name for m in sclient.models_overview().models]
    with pytest.raises(NotFoundError):
        sclient.model_op("op-nope")


def _batch_line(custom_id: str) -> bytes:
    body = {"model": MODEL, "messages": HI, "max_tokens": 4}
    line = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}
    return msgspec.json.encode(line) + b"\n"


async def test_async_files_and_batches(aclient: UniversalClient) -> None:
    uploaded = await aclient.upload_file(_batch_line("x") * 1, filename="a.jsonl")
    assert (await aclient.get_file(uploaded.id)).bytes == uploaded.bytes
    assert uploaded.id in [f.id for f in (await aclient.list_files(purpose="batch")).data]
    batch = await aclient.create_batch(uploaded.id)
    done = await aclient.wait_batch(batch.id, poll_s=0.2, timeout=90)
    assert done.status == "completed" and done.output_file_id
    assert b'"x"' in await aclient.file_content(done.output_file_id)
    assert batch.id in [b.id for b in (await aclient.list_batches()).data]
    many = await aclient.upload_file(b"".join(_batch_line(f"m{i}") for i in range(20)))
    doomed = await aclient.create_batch(many.id)
    assert (await aclient.cancel_batch(doomed.id)).status in {"cancelling", "cancelled"}
    assert (await aclient.wait_batch(doomed.id, timeout=90)).status == "cancelled"
    assert (await aclient.delete_file(uploaded.id)).deleted


def test_sync_files_and_batches(sclient: SyncUniversalClient) -> None:
    line = (
        '{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", '
        f'"body": {{"model": "{MODEL}", "messages": [{{"role": "user", "content": "hi"}}], '
        '"max_tokens": 4}}\n'
    )
    uploaded = sclient.upload_file(line.encode(), filename="in.jsonl")
    assert sclient.get_file(uploaded.id).filename == "in.jsonl"
    assert uploaded.id in [f.id for f in sclient.list_files().data]
    batch = sclient.create_batch(uploaded.id, metadata={"run": "client"})
    assert sclient.get_batch(batch.id).metadata == {"run": "client"}
    done = sclient.wait_batch(batch.id, poll_s=0.2, timeout=90)
    assert done.status == "completed" and done.request_counts.completed == 1
    assert done.output_file_id is not None
    out = sclient.file_content(done.output_file_id)
    assert b'"custom_id"' in out and b'"a"' in out
    assert batch.id in [b.id for b in sclient.list_batches(limit=5).data]
    assert sclient.delete_file(uploaded.id).deleted


def test_wait_job_times_out_on_a_job_that_never_starts(api_url: str, stack: Stack) -> None:
    """A model announced by a worker that consumes nothing: its jobs stay queued."""
    parked = redis.Redis.from_url(stack.redis_url)
    announce_model(parked, "w-parked-client", "parked-client")
    try:
        with SyncUniversalClient(api_url, ADMIN_KEY) as client:
            job = client.submit_job("parked-client", prompt="x", max_tokens=2)
            started = time.monotonic()
            with pytest.raises(APITimeoutError):
                client.wait_job(job.id, timeout=1.0)
            assert time.monotonic() - started < 5
            asyncio.run(_async_wait_times_out(api_url, job.id))
            assert client.cancel_job(job.id).status is JobStatus.CANCELLED
    finally:
        withdraw_model(parked, "w-parked-client")
        parked.close()


async def _async_wait_times_out(api_url: str, job_id: str) -> None:
    async with UniversalClient(api_url, ADMIN_KEY) as client:
        started = time.monotonic()
        with pytest.raises(APITimeoutError):
            await client.wait_job(job_id, timeout=1.0)
        assert time.monotonic() - started < 5
