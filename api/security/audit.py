"""The audit log: one record per HTTP request, per WebSocket handshake and per operation a
socket sends, to the ``uml.audit`` logger and ``uml:audit``.

:class:`AuditMiddleware` is the outermost route middleware. It mints the request id, times
the request, and on the way out reads what the inner layers left behind: the verified key
(``scope["user"]``, set by the auth middleware; ``anonymous`` when there is none), the
status and the ``x-uml-job-id`` header of the response, and what handlers added with
:func:`note` (model, token counts, admin action). An exception escaping the stack (a 401
from the auth middleware, a 429) is recorded with the status its handler will answer; a
client that left before the response started, as 499 (:class:`api.exchange.Exchange`).
Requests that never reach a route (unknown path) are recorded by :func:`after_exception`.

Writing costs the request nothing it waits on: the record is logged, then queued for
:class:`AuditWriter`, whose task ``XADD``\\s batches in one pipeline each, capped with
``MAXLEN ~``. A full queue or a Redis failure drops records (counted, logged), never
requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import msgspec
import redis.asyncio as aioredis
from litestar.datastructures import MutableScopeHeaders, State
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from redis.exceptions import RedisError

from api.errors import status_of
from api.exchange import Exchange
from protocol.audit import ANONYMOUS, AuditList, AuditRecord
from protocol.auth import ApiKey
from protocol.keys import AUDIT_STREAM, EVENT_FIELD
from protocol.settings import SecuritySettings

log = logging.getLogger("uml.audit")
_warn = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"
JOB_HEADER = b"x-uml-job-id"
_STATE = "uml.audit"
_REQUEST_ID = "uml.request_id"
_ACTIVE = "uml.audited"
QUEUE_SIZE = 10_000
BATCH = 512
_PAGE = 500


def _state(scope: Scope) -> dict[str, Any]:
    state: dict[str, Any] = scope.setdefault("state", {})
    return state


def request_id(scope: Scope) -> str:
    """This request's id, minted on first use."""
    state = _state(scope)
    if _REQUEST_ID not in state:
        state[_REQUEST_ID] = secrets.token_hex(12)
    rid: str = state[_REQUEST_ID]
    return rid


def note(scope: Scope, **fields: Any) -> None:
    """Add fields (``model``, ``prompt_tokens``, ``action``, …) to this request's record."""
    _state(scope).setdefault(_STATE, {}).update(fields)


class AuditWriter:
    """Queues records and ``XADD``\\s them in batches from one background task."""

    def __init__(self, redis: aioredis.Redis, settings: SecuritySettings) -> None:
        self._redis = redis
        self.settings = settings
        self._queue: asyncio.Queue[AuditRecord] = asyncio.Queue(QUEUE_SIZE)
        self.dropped = 0

    @staticmethod
    def of(state: State) -> AuditWriter:
        writer: AuditWriter = state.audit
        return writer

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, redis: aioredis.Redis, settings: SecuritySettings
    ) -> AsyncIterator[AuditWriter]:
        """Run the writer task; on exit, flush what is queued (bounded) and stop."""
        writer = cls(redis, settings)
        task = asyncio.create_task(writer._run(), name="uml-audit-writer")
        try:
            yield writer
        finally:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(writer._queue.join(), 5)
            task.cancel()
            # bounded: redis-py can turn the cancellation of a command in flight into a
            # ConnectionError, which the loop survives; the process is exiting anyway
            await asyncio.wait([task], timeout=2)

    def submit(self, record: AuditRecord) -> None:
        """Log the record and queue it for Redis; never blocks, never raises."""
        line = msgspec.json.encode(record)
        log.info(line.decode())
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            self.dropped += 1

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._write(batch)
            except (RedisError, OSError) as exc:
                self.dropped += len(batch)
                _warn.warning("audit: %d records not written to Redis: %s", len(batch), exc)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _write(self, batch: list[AuditRecord]) -> None:
        maxlen = self.settings.audit_maxlen
        async with self._redis.pipeline(transaction=False) as pipe:
            for record in batch:
                data = msgspec.json.encode(record)
                pipe.xadd(AUDIT_STREAM, {EVENT_FIELD: data}, maxlen=maxlen, approximate=True)
            await pipe.execute()


_decode_record = msgspec.json.Decoder(AuditRecord)


async def read(
    redis: aioredis.Redis, since: float | None, key_id: str | None, limit: int
) -> AuditList:
    """Records newest first, from ``since`` (Unix seconds) on, optionally of one key."""
    low = "-" if since is None else f"{max(int(since * 1000), 0)}-0"
    high = "+"
    out: list[AuditRecord] = []
    while len(out) < limit:
        raw = await redis.xrevrange(AUDIT_STREAM, max=high, min=low, count=_PAGE)
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]], raw or [])
        for entry_id, fields in entries:
            record = _decode_record.decode(fields[EVENT_FIELD.encode()])
            if key_id is None or record.key_id == key_id:
                record.id = entry_id.decode()
                out.append(record)
                if len(out) == limit:
                    break
        if len(entries) < _PAGE:
            break
        high = f"({entries[-1][0].decode()}"
    return AuditList(data=out)


_TEXT_FIELDS = ("prompt", "completion")


def _record(
    writer: AuditWriter, scope: Scope, started: float, t0: float, status: int, job_id: str | None
) -> AuditRecord:
    key = scope.get("user")
    extra = dict(_state(scope).get(_STATE, {}))
    if not writer.settings.audit_log_text:
        for name in _TEXT_FIELDS:
            extra.pop(name, None)
    return AuditRecord(
        time=started,
        request_id=request_id(scope),
        key_id=key.id if isinstance(key, ApiKey) else ANONYMOUS,
        key_name=key.name if isinstance(key, ApiKey) else None,
        scope=key.scope if isinstance(key, ApiKey) else None,
        method=str(scope.get("method", "WS")),
        path=scope["path"],
        status=status,
        latency_ms=round((time.perf_counter() - t0) * 1000, 3),
        job_id=job_id,
        **extra,
    )


def socket_record(
    writer: AuditWriter,
    key: ApiKey | None,
    *,
    path: str,
    status: int,
    started: float,
    t0: float,
    request_id: str,
    socket: str | None = None,
    method: str = "WS",
    **fields: Any,
) -> AuditRecord:
    """The record of a WebSocket handshake (``GET /ws``) or of one operation a socket sent
    (``WS /ws/generate``, ``/ws/subscribe``, ``/ws/cancel``): the same fields as HTTP's, with
    ``socket`` naming the handshake's ``request_id``."""
    if not writer.settings.audit_log_text:
        for name in _TEXT_FIELDS:
            fields.pop(name, None)
    return AuditRecord(
        time=started,
        request_id=request_id,
        key_id=key.id if key is not None else ANONYMOUS,
        key_name=key.name if key is not None else None,
        scope=key.scope if key is not None else None,
        method=method,
        path=path,
        status=status,
        latency_ms=round((time.perf_counter() - t0) * 1000, 3),
        socket=socket,
        **fields,
    )


class AuditMiddleware:
    """Writes one :class:`AuditRecord` per HTTP request once the response has been sent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        started, t0 = time.time(), time.perf_counter()
        request_id(scope)
        _state(scope)[_ACTIVE] = True
        exchange = Exchange(receive, send)
        failure: BaseException | None = None
        try:
            await self.app(scope, exchange.receive, exchange.send)
        except BaseException as exc:
            failure = exc
            raise
        finally:
            writer = AuditWriter.of(scope["litestar_app"].state)
            status = exchange.status(failure)
            writer.submit(_record(writer, scope, started, t0, status, _job_id(exchange)))


def _job_id(exchange: Exchange) -> str | None:
    for name, value in exchange.headers:
        if name.lower() == JOB_HEADER:
            return value.decode()
    return None


async def after_exception(exc: Exception, scope: Scope) -> None:
    """Record a request that failed before reaching a route (404, 405).

    Litestar calls this hook for every exception; one raised inside a route is recorded by
    :class:`AuditMiddleware` instead.
    """
    if scope["type"] != ScopeType.HTTP or _state(scope).get(_ACTIVE):
        return
    _state(scope)[_ACTIVE] = True
    writer = AuditWriter.of(scope["litestar_app"].state)
    writer.submit(_record(writer, scope, time.time(), time.perf_counter(), status_of(exc), None))


async def add_request_id(message: Message, scope: Scope) -> None:
    """``before_send`` hook: every HTTP response carries ``x-request-id``."""
    if message["type"] == "http.response.start":
        MutableScopeHeaders.from_message(message)[REQUEST_ID_HEADER] = request_id(scope)
