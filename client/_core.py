"""The clients' pure core: build requests, merge headers, decide retries, decode answers.

Nothing here does I/O. :class:`~client._async.UniversalClient` and
:class:`~client._sync.SyncUniversalClient` only run the loop (send, sleep, read) around
these decisions, the way httpx's ``BaseClient`` serves ``Client`` and ``AsyncClient``.

Retries (:meth:`Core.retry_delay`): a ``429`` or ``503`` answer, or a connection that
could not be opened, is retried for every request; a connection lost after the request
went out (a read timeout, a reset) is retried only for an idempotent request (``GET``,
or a ``POST`` carrying an ``Idempotency-Key``), since a plain ``POST`` may already have
queued a job. The delay is the answer's ``Retry-After`` when it sends one (at most
:data:`MAX_RETRY_AFTER_S`; longer means give up), else capped exponential backoff with
jitter.
"""

from __future__ import annotations

import email.utils
import os
import random
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import httpx
import msgspec

from client._errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    JobError,
    status_error_class,
)
from protocol.events import ErrorEvent, Event, decode_event, is_final

T = TypeVar("T")

DEFAULT_BASE_URL = "http://localhost:8000"
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_CONNECT_TIMEOUT_S = 5.0
DEFAULT_MAX_RETRIES = 3
RETRY_STATUSES = frozenset({429, 503})
MAX_RETRY_AFTER_S = 60.0
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 8.0
JITTER = 0.25
API_KEY_ENV = "UML_API_KEY"
BASE_URL_ENV = "UML_BASE_URL"
USER_AGENT = "uml-client/0.1"


@dataclass(frozen=True)
class Call:
    """One logical request; every retry of it is built from the same Call."""

    method: str
    path: str
    json: Any = None
    params: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    files: dict[str, Any] | None = None
    data: dict[str, str] | None = None
    stream: bool = False
    timeout: float | None = None

    @property
    def idempotent(self) -> bool:
        return self.method in ("GET", "HEAD", "DELETE") or "Idempotency-Key" in self.headers

    def with_idempotency_key(self, key: str | None = None) -> Call:
        """This call carrying one ``Idempotency-Key`` (new unless given), kept on every retry."""
        return replace(self, headers={**self.headers, "Idempotency-Key": key or new_key()})


def new_key() -> str:
    return f"uml-{uuid.uuid4().hex}"


def resolve_api_key(api_key: str | None) -> str | None:
    """The key given, else ``UML_API_KEY`` from the environment."""
    if api_key:
        return api_key
    return os.environ.get(API_KEY_ENV) or None


def resolve_base_url(base_url: str | None) -> str:
    return (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")


def parse_retry_after(headers: httpx.Headers | dict[str, str] | None) -> float | None:
    """Seconds from ``retry-after-ms``, ``Retry-After`` (seconds or an HTTP date), or None."""
    if not headers:
        return None
    headers = httpx.Headers(headers)
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(float(ms) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        when = email.utils.parsedate_tz(value)
        if when is None:
            return None
        return max(email.utils.mktime_tz(when) - time.time(), 0.0)


def backoff(attempt: int, rng: random.Random | None = None) -> float:
    """Capped exponential backoff, less up to :data:`JITTER` of it at random."""
    base: float = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt)
    jitter: float = (rng or random.Random()).random()
    return base * (1 - JITTER * jitter)


class Core:
    """Everything both client faces share, none of it I/O."""

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_retries: int = DEFAULT_MAX_RETRIES,
        headers: dict[str, str] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.base_url = resolve_base_url(base_url)
        self.api_key = resolve_api_key(api_key)
        self.timeout = timeout
        self.max_retries = max_retries
        self.extra_headers = dict(headers or {})
        self.rng = rng or random.Random()

    def __repr__(self) -> str:  # never shows the key
        return f"Core(base_url={self.base_url!r}, key={'set' if self.api_key else 'unset'})"

    # ---- building ------------------------------------------------------------------------

    def headers(self, call: Call) -> dict[str, str]:
        """Defaults, then the client's extra headers, then the call's own (last wins)."""
        merged = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if call.stream:
            merged["Accept"] = "text/event-stream"
        if self.api_key:
            merged["Authorization"] = f"Bearer {self.api_key}"
        return {**merged, **self.extra_headers, **call.headers}

    def http_timeout(self, call: Call) -> httpx.Timeout:
        total = self.timeout if call.timeout is None else call.timeout
        read = call.timeout if call.stream else total  # a stream may idle between pings
        return httpx.Timeout(total, connect=min(DEFAULT_CONNECT_TIMEOUT_S, total), read=read)

    def build(self, call: Call) -> httpx.Request:
        content = None if call.json is None else msgspec.json.encode(call.json)
        headers = self.headers(call)
        if content is not None:
            headers.setdefault("Content-Type", "application/json")
        return httpx.Request(
            call.method,
            self.base_url + call.path,
            params=call.params,
            headers=headers,
            content=content,
            files=call.files,
            data=call.data,
            extensions={"timeout": self.http_timeout(call).as_dict()},
        )

    def ws_url(self, path: str = "/ws") -> str:
        url = httpx.URL(self.base_url + path)
        return str(url.copy_with(scheme="wss" if url.scheme == "https" else "ws"))

    # ---- retries -------------------------------------------------------------------------

    def retry_delay(
        self,
        call: Call,
        attempt: int,
        *,
        status: int | None = None,
        headers: httpx.Headers | None = None,
        error: Exception | None = None,
    ) -> float | None:
        """Seconds to wait before retry number ``attempt + 1``, or None to give up."""
        if attempt >= self.max_retries:
            return None
        if error is not None:
            opened = not isinstance(error, httpx.ConnectError | httpx.ConnectTimeout)
            if opened and not call.idempotent:
                return None
            return backoff(attempt, self.rng)
        if status not in RETRY_STATUSES:
            return None
        after = parse_retry_after(headers)
        if after is None:
            return backoff(attempt, self.rng)
        return after if after <= MAX_RETRY_AFTER_S else None

    # ---- decoding ------------------------------------------------------------------------

    @staticmethod
    def translate(exc: httpx.TransportError) -> APIConnectionError:
        """The one place transport exceptions become ours."""
        if isinstance(exc, httpx.TimeoutException):
            return APITimeoutError(f"Request timed out ({type(exc).__name__})")
        return APIConnectionError(f"Connection error: {type(exc).__name__}: {exc}")

    @staticmethod
    def status_error(status: int, content: bytes, headers: httpx.Headers) -> APIStatusError:
        """The exception for an error answer, from its OpenAI-shaped body when it has one."""
        body: Any
        try:
            body = msgspec.json.decode(content) if content else None
        except msgspec.DecodeError:
            body = content.decode(errors="replace")
        info = body.get("error") if isinstance(body, dict) else None
        if isinstance(info, dict):
            message = str(info.get("message") or f"HTTP {status}")
            kind, param, code = info.get("type"), info.get("param"), info.get("code")
        else:
            message = f"HTTP {status}: {str(body)[:200] if body else 'no body'}"
            kind = param = code = None
        cls = status_error_class(status)
        return cls(
            message,
            status_code=status,
            body=body,
            headers=dict(headers.items()),
            type=kind,
            param=param,
            code=code,
        )

    @staticmethod
    def decode(content: bytes, type: type[T]) -> T:
        return msgspec.json.decode(content, type=type)


# ---- streams ---------------------------------------------------------------------------


@dataclass
class SSE:
    data: str
    event: str = "message"
    id: str | None = None


class SSEDecoder:
    """Server-sent events from lines (without their line ends); comments are dropped."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event = "message"
        self._id: str | None = None

    def feed(self, line: str) -> SSE | None:
        if not line:
            if not self._data:
                self._event = "message"
                return None
            sse = SSE(data="\n".join(self._data), event=self._event, id=self._id)
            self._data, self._event = [], "message"
            return sse
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            self._id = value
        return None


def openai_chunk(sse: SSE, type: type[T]) -> T | None:
    """An OpenAI SSE payload as a chunk; None at ``[DONE]``; an ``{"error"}`` raises."""
    if sse.data.strip() == "[DONE]":
        return None
    raw = msgspec.json.decode(sse.data)
    if isinstance(raw, dict) and "error" in raw and "choices" not in raw:
        info = raw["error"] if isinstance(raw["error"], dict) else {"message": str(raw["error"])}
        raise JobError(
            str(info.get("message", "stream error")),
            type=info.get("type"),
            param=info.get("param"),
            code=info.get("code"),
        )
    return msgspec.convert(raw, type=type)


class JobCursor:
    """Where a job's event stream stands, so a reconnect resumes with no gap, no duplicate."""

    def __init__(
        self,
        job_id: str,
        after: int = 0,
        max_reconnects: int = 10,
        deadline: float | None = None,
    ) -> None:
        self.job_id = job_id
        self.last_seq = after
        self.finished = False
        self.max_reconnects = max_reconnects
        self.deadline = deadline
        """``time.monotonic()`` past which following the job raises APITimeoutError."""
        self.failures = 0
        self.reconnects = 0

    def call(self) -> Call:
        """The request that resumes after the last seq seen (``Last-Event-ID``); with a
        deadline, its read timeout is the time left."""
        headers = {"Last-Event-ID": str(self.last_seq)} if self.last_seq else {}
        left = None if self.deadline is None else max(self.deadline - time.monotonic(), 0.001)
        return Call(
            "GET", f"/v1/jobs/{self.job_id}/events", headers=headers, stream=True, timeout=left
        )

    def check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise APITimeoutError(f"job {self.job_id} did not finish in time")

    def accept(self, sse: SSE) -> Event | None:
        """The event of ``sse``, or None for a duplicate or a non-event; errors raise."""
        if sse.event == "error":  # the relay gave up; reconnecting is the cure
            raise APIConnectionError(f"the server's stream failed: {sse.data[:200]}")
        event = decode_event(sse.data)
        if event.seq <= self.last_seq:
            return None
        self.last_seq = event.seq
        self.failures = 0
        if isinstance(event, ErrorEvent):
            self.finished = True
            info = event.error
            raise JobError(
                info.message, job_id=self.job_id, type=info.type, param=info.param, code=info.code
            )
        self.finished = is_final(event)
        return event

    def reconnect_delay(self, rng: random.Random | None = None) -> float | None:
        """After a lost connection: seconds to wait before resuming, or None to give up."""
        if self.failures >= self.max_reconnects:
            return None
        delay = backoff(self.failures, rng) if self.failures else 0.0
        self.failures += 1
        self.reconnects += 1
        return delay
