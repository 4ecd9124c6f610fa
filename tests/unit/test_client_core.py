"""The client's pure core: headers, retry decisions, error mapping, SSE, resume cursors."""

from __future__ import annotations

import email.utils
import random
import time

import httpx
import msgspec
import pytest

from client import _calls as calls
from client._core import (
    BACKOFF_CAP_S,
    MAX_RETRY_AFTER_S,
    SSE,
    Call,
    Core,
    JobCursor,
    SSEDecoder,
    backoff,
    openai_chunk,
    parse_retry_after,
)
from client._errors import (
    APIConnectionError,
    APITimeoutError,
    InternalServerError,
    JobError,
    NotFoundError,
    RateLimitError,
    ServiceUnavailableError,
)
from protocol.events import DoneEvent, TokenEvent
from protocol.openai import ChatCompletionChunk

POST = Call("POST", "/v1/chat/completions", json={"model": "m"})
GET = Call("GET", "/v1/jobs/x")


def core(**kw: object) -> Core:
    return Core(base_url="http://h:1", api_key="k-123", rng=random.Random(0), **kw)  # type: ignore[arg-type]


def test_api_key_from_argument_else_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UML_API_KEY", "from-env")
    assert Core().api_key == "from-env"
    assert Core(api_key="arg").api_key == "arg"
    monkeypatch.delenv("UML_API_KEY")
    assert Core().api_key is None
    assert "Authorization" not in Core().headers(GET)


def test_headers_merge_call_wins_and_key_never_in_repr() -> None:
    c = Core(base_url="http://h:1/", api_key="secret-key", headers={"X-A": "client"})
    h = c.headers(Call("GET", "/p", headers={"X-A": "call"}))
    assert h["Authorization"] == "Bearer secret-key"
    assert h["X-A"] == "call"
    assert c.base_url == "http://h:1"
    assert "secret-key" not in repr(c)
    request = c.build(Call("POST", "/v1/x", json={"a": 1}))
    assert request.url == "http://h:1/v1/x"
    assert request.headers["content-type"] == "application/json"
    assert request.extensions["timeout"]["read"] == c.timeout


def test_retry_on_429_and_503_honours_retry_after() -> None:
    c = core()
    assert c.retry_delay(POST, 0, status=429, headers=httpx.Headers({"Retry-After": "2"})) == 2
    assert (
        c.retry_delay(POST, 0, status=503, headers=httpx.Headers({"retry-after-ms": "250"})) == 0.25
    )
    d = c.retry_delay(POST, 0, status=503, headers=httpx.Headers())
    assert d is not None and 0.5 * 0.75 <= d <= 0.5
    too_long = httpx.Headers({"Retry-After": str(MAX_RETRY_AFTER_S + 1)})
    assert c.retry_delay(POST, 0, status=429, headers=too_long) is None
    for status in (400, 401, 404, 409, 500):
        assert c.retry_delay(POST, 0, status=status, headers=httpx.Headers()) is None
    assert c.retry_delay(POST, 3, status=503, headers=httpx.Headers()) is None  # max_retries


def test_retry_after_http_date() -> None:
    when = email.utils.formatdate(time.time() + 5, usegmt=True)
    assert 3 <= (parse_retry_after({"Retry-After": when}) or 0) <= 5
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after(None) is None


def test_connection_errors_retry_only_when_safe() -> None:
    c = core()
    connect = httpx.ConnectError("refused")
    read = httpx.ReadTimeout("slow")
    assert c.retry_delay(POST, 0, error=connect) is not None  # nothing was sent
    assert c.retry_delay(POST, 0, error=read) is None  # a job may exist
    assert c.retry_delay(POST.with_idempotency_key(), 0, error=read) is not None
    assert c.retry_delay(GET, 0, error=read) is not None


def test_backoff_is_capped_with_jitter() -> None:
    rng = random.Random(1)
    delays = [backoff(a, rng) for a in range(12)]
    assert all(0 < d <= BACKOFF_CAP_S for d in delays)
    assert min(delays[6:]) >= BACKOFF_CAP_S * 0.75
    assert delays[0] < delays[3]


def test_one_idempotency_key_per_submission() -> None:
    body = calls.submission(
        "m", messages=None, prompt="p", priority=None, deadline=None, metadata=None, params={}
    )
    call = calls.submit_job(body, None)
    c = core()
    first, second = c.build(call), c.build(call)
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"]
    assert calls.submit_job(body, None).headers != call.headers
    assert calls.submit_job(body, "mine").headers["Idempotency-Key"] == "mine"
    assert body == {"type": "completion", "body": {"model": "m", "prompt": "p"}}
    with pytest.raises(ValueError):
        calls.submission(
            "m", messages=[], prompt="p", priority=None, deadline=None, metadata=None, params={}
        )


def test_status_errors_are_typed_from_the_openai_body() -> None:
    info = {"message": "no model", "type": "invalid_request_error", "param": "model"}
    body = msgspec.json.encode({"error": {**info, "code": "model_not_found"}})
    err = Core.status_error(404, body, httpx.Headers({"x-request-id": "r1"}))
    assert isinstance(err, NotFoundError)
    assert (err.message, err.param, err.code, err.request_id) == (
        "no model",
        "model",
        "model_not_found",
        "r1",
    )
    assert isinstance(Core.status_error(429, b"{}", httpx.Headers()), RateLimitError)
    assert isinstance(Core.status_error(503, b"", httpx.Headers()), ServiceUnavailableError)
    bad_gateway = Core.status_error(502, b"<html>", httpx.Headers())
    assert isinstance(bad_gateway, InternalServerError) and "<html>" in bad_gateway.message


def test_transport_errors_translate_at_one_boundary() -> None:
    assert isinstance(Core.translate(httpx.ReadTimeout("x")), APITimeoutError)
    err = Core.translate(httpx.ConnectError("refused"))
    assert type(err) is APIConnectionError


def test_sse_decoder() -> None:
    d = SSEDecoder()
    lines = [": ping", "", "id: 3", 'data: {"a":', "data: 1}", "", "event: error", "data: x", ""]
    out = [e for e in (d.feed(line) for line in lines) if e is not None]
    assert out == [SSE(data='{"a":\n1}', id="3"), SSE(data="x", event="error", id="3")]


def test_openai_chunks() -> None:
    assert openai_chunk(SSE(data="[DONE]"), ChatCompletionChunk) is None
    chunk = openai_chunk(
        SSE(
            data='{"id":"j","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"hi"}}]}'
        ),
        ChatCompletionChunk,
    )
    assert chunk is not None and chunk.choices[0].delta.content == "hi"
    with pytest.raises(JobError) as info:
        openai_chunk(
            SSE(data='{"error":{"message":"boom","type":"server_error"}}'), ChatCompletionChunk
        )
    assert info.value.type == "server_error"


def _sse(event: object) -> SSE:
    return SSE(data=msgspec.json.encode(event).decode())


def test_job_cursor_resumes_without_gap_or_duplicate() -> None:
    cursor = JobCursor("j", after=0, max_reconnects=2)
    assert cursor.call().headers == {}
    assert isinstance(cursor.accept(_sse(TokenEvent(seq=1, text="a"))), TokenEvent)
    assert cursor.accept(_sse(TokenEvent(seq=1, text="a"))) is None  # a replayed duplicate
    assert cursor.call().headers == {"Last-Event-ID": "1"}
    assert cursor.reconnect_delay() == 0.0
    assert cursor.reconnect_delay() is not None
    assert cursor.reconnect_delay() is None  # two failures in a row: give up
    done = DoneEvent(
        seq=2,
        finish_reason="stop",
        usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    )  # type: ignore[arg-type]
    cursor.accept(_sse(done))
    assert cursor.finished and cursor.failures == 0


def test_job_cursor_error_event_raises() -> None:
    cursor = JobCursor("j")
    data = '{"type":"error","seq":1,"error":{"message":"bad","type":"server_error"}}'
    with pytest.raises(JobError) as info:
        cursor.accept(SSE(data=data))
    assert info.value.job_id == "j" and cursor.finished
    with pytest.raises(APIConnectionError):
        JobCursor("j").accept(SSE(data="{}", event="error"))


def test_ws_url() -> None:
    assert Core(base_url="https://h/x").ws_url() == "wss://h/x/ws"
    assert Core(base_url="http://h:8").ws_url() == "ws://h:8/ws"


def test_job_cursor_deadline_bounds_reads() -> None:
    assert JobCursor("j").call().timeout is None
    soon = JobCursor("j", deadline=time.monotonic() + 30)
    timeout = soon.call().timeout
    assert timeout is not None and 29 < timeout <= 30
    read = Core().http_timeout(soon.call()).read
    assert read is not None and read <= 30
    soon.check_deadline()
    with pytest.raises(APITimeoutError):
        JobCursor("j", deadline=time.monotonic() - 1).check_deadline()
