"""The API end to end over real HTTP (uvicorn) with a fake worker that XADDs events.

The fake worker pops the Celery message from ``model.<name>`` itself, reads the job hash,
and writes an event log. It proves the submission contract and the SSE/JSON renderings
with the official openai SDK; the real workers are tested elsewhere.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
import redis
import uvicorn

from api.app import create_app
from protocol.events import DoneEvent, ErrorEvent, Event, TokenEvent, encode_event
from protocol.jobs import from_hash
from protocol.keys import (
    EVENT_FIELD,
    entry_id,
    events_key,
    job_key,
    queue_name,
)
from protocol.openai import ErrorInfo, Usage
from protocol.settings import (
    RedisSettings,
    SecuritySettings,
    ServerSettings,
    Settings,
    WorkerSettings,
)
from tests.auth import ADMIN_KEY, AUTH
from tests.integration.stack import announce_model
from uml.redis_server import free_port

MODEL = "tiny"
WORDS = ["Hel", "lo", " world"]


def wait_for(condition: Callable[[], Any], timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


class FakeWorker(threading.Thread):
    """Consumes ``model.tiny``; the prompt's text picks the script (ok, fail, hang)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.redis = redis.Redis.from_url(url)
        self.stopping = threading.Event()
        self.messages: list[dict[str, Any]] = []

    def run(self) -> None:
        while not self.stopping.is_set():
            item = self.redis.blpop([queue_name(MODEL)], timeout=0.2)
            if item is not None:
                message = json.loads(item[1])
                self.messages.append(message)
                self.serve(message["headers"]["id"])

    def emit(self, job_id: str, event: Event) -> None:
        data = {EVENT_FIELD: encode_event(event)}
        self.redis.xadd(events_key(job_id), data, id=entry_id(event.seq))  # type: ignore[arg-type]

    def serve(self, job_id: str) -> None:
        self.redis.hset(job_key(job_id), "status", "running")  # what a real claim does first
        record = from_hash(self.redis.hgetall(job_key(job_id)))  # type: ignore[arg-type]
        assert record.spec is not None
        text = record.spec.prompt or str(record.spec.messages)
        usage = Usage(prompt_tokens=3, completion_tokens=3, total_tokens=6)
        if "fail" in text:
            error = ErrorInfo(message="engine exploded", type="server_error")
            self.emit(job_id, ErrorEvent(seq=1, error=error))
            return
        if "hang" in text:
            self.emit(job_id, TokenEvent(seq=1, text="..."))
            wait_for(lambda: self.redis.hget(job_key(job_id), "cancel") == b"1")
            self.emit(job_id, DoneEvent(seq=2, finish_reason="cancelled", usage=usage))
            return
        for seq, word in enumerate(WORDS, start=1):
            self.emit(job_id, TokenEvent(seq=seq, text=word))
        self.emit(job_id, DoneEvent(seq=len(WORDS) + 1, finish_reason="stop", usage=usage))


@pytest.fixture
def worker(redis_url: str) -> Iterator[FakeWorker]:
    worker = FakeWorker(redis_url)
    announce_model(worker.redis, "fake", MODEL)
    worker.start()
    yield worker
    worker.stopping.set()
    worker.join(5)
    worker.redis.close()


@pytest.fixture
def base_url(redis_url: str) -> Iterator[str]:
    settings = Settings(
        redis=RedisSettings(url=redis_url, block_ms=1000, socket_timeout_s=5),
        server=ServerSettings(sse_ping_s=0.2),
        worker=WorkerSettings(),
        security=SecuritySettings(admin_key=ADMIN_KEY),
    )
    port = free_port()
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws="none",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def sdk(base_url: str) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=ADMIN_KEY, max_retries=0, timeout=20)
    yield client
    client.close()


USER = [{"role": "user", "content": "hi"}]


def test_chat_sync_and_submission_contract(sdk: openai.OpenAI, worker: FakeWorker) -> None:
    reply = sdk.chat.completions.create(model=MODEL, messages=USER, max_tokens=5)  # type: ignore[arg-type]
    assert reply.choices[0].message.content == "Hello world"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.total_tokens == 6
    message = worker.messages[-1]
    assert message["headers"]["task"] == "uml.generate"
    assert message["headers"]["id"] == reply.id
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    assert (args, kwargs) == ([reply.id], {})
    assert message["properties"]["delivery_info"]["routing_key"] == queue_name(MODEL)
    assert message["properties"]["priority"] == 0
    record = from_hash(worker.redis.hgetall(job_key(reply.id)))  # type: ignore[arg-type]
    assert record.priority == "interactive" and record.spec is not None
    assert record.spec.sampling.max_tokens == 5
    assert 0 < worker.redis.ttl(job_key(reply.id)) <= 86400  # type: ignore[operator]


def test_chat_stream_with_usage(sdk: openai.OpenAI, worker: FakeWorker) -> None:
    stream = sdk.chat.completions.create(
        model=MODEL,
        messages=USER,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello world"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None


def test_completions_sync_and_stream(sdk: openai.OpenAI, worker: FakeWorker) -> None:
    reply = sdk.completions.create(model=MODEL, prompt="hi")
    assert reply.choices[0].text == "Hello world"
    chunks = list(sdk.completions.create(model=MODEL, prompt=["hi"], stream=True))
    assert "".join(c.choices[0].text for c in chunks) == "Hello world"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_models_and_unknown_model(sdk: openai.OpenAI, worker: FakeWorker) -> None:
    assert [m.id for m in sdk.models.list()] == [MODEL]
    with pytest.raises(openai.NotFoundError) as info:
        sdk.chat.completions.create(model="nope", messages=USER)  # type: ignore[arg-type]
    assert info.value.code == "model_not_found"


def test_job_errors_reach_the_sdk(sdk: openai.OpenAI, worker: FakeWorker) -> None:
    with pytest.raises(openai.InternalServerError, match="engine exploded"):
        sdk.completions.create(model=MODEL, prompt="fail")
    with pytest.raises(openai.APIError, match="engine exploded"):
        list(sdk.completions.create(model=MODEL, prompt="fail", stream=True))


def _cancelled(worker: FakeWorker) -> bool:
    if not worker.messages:
        return False
    job_id = worker.messages[-1]["headers"]["id"]
    return bool(worker.redis.hget(job_key(job_id), "cancel") == b"1")


def test_stream_disconnect_cancels_the_job(base_url: str, worker: FakeWorker) -> None:
    body = {"model": MODEL, "prompt": "hang", "stream": True}
    with httpx.stream(
        "POST", f"{base_url}/v1/completions", json=body, headers=AUTH, timeout=10
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: ") and "..." in line:
                break
    wait_for(lambda: _cancelled(worker))


def test_sync_disconnect_cancels_the_job(base_url: str, worker: FakeWorker) -> None:
    body = {"model": MODEL, "prompt": "hang"}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{base_url}/v1/completions",
            json=body,
            headers=AUTH,
            timeout=httpx.Timeout(10, read=0.5),
        )
    wait_for(lambda: _cancelled(worker))
