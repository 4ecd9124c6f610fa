"""Jobs over the ``/ws`` WebSocket: several at once on one socket (``protocol.ws``).

:class:`Router` is the pure part: it files each server message under the job it belongs
to, or under the ``ref`` of the request it answers. :class:`AsyncWebSocket` feeds it from
a reader task; :class:`SyncWebSocket` feeds it from whichever call is waiting (a blocking
socket has one reader at a time, so no thread is needed).

The key goes in the handshake's ``Authorization`` header; a refused handshake raises the
same :class:`~client._errors.APIStatusError` an HTTP call would (401, 403).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
import msgspec
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as aconnect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection as SyncClientConnection
from websockets.sync.client import connect as sconnect
from websockets.typing import Subprotocol

from client import _calls as calls
from client._core import Core
from client._errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    JobError,
    WebSocketClosedError,
    status_error_class,
)
from protocol import ws
from protocol.ws import Done, Error, JobAccepted, Pong, ServerMessage, Token

JobMessage = Token | Done


def _job_error(msg: Error) -> APIError:
    info = msg.error
    if msg.job_id is None or msg.seq is None:  # a refused request, not a job's end
        cls = status_error_class(msg.status or 400)
        return cls(
            info.message,
            status_code=msg.status or 400,
            body={"error": msgspec.to_builtins(info)},
            type=info.type,
            param=info.param,
            code=info.code,
        )
    return JobError(
        info.message, job_id=msg.job_id, type=info.type, param=info.param, code=info.code
    )


class Router:
    """Server messages filed per job id and per request ``ref``."""

    def __init__(self) -> None:
        self.jobs: dict[str, deque[Token | Done | Error]] = {}
        self.answers: dict[str, JobAccepted | Pong | Error] = {}
        self.closed: WebSocketClosedError | None = None
        self._refs = itertools.count(1)

    def ref(self) -> str:
        return f"r{next(self._refs)}"

    def route(self, msg: ServerMessage) -> None:
        """A reply to a ``ref`` goes to its caller; anything else naming a job (a refused
        ``subscribe`` or ``cancel`` too) to that job's queue."""
        if isinstance(msg, JobAccepted | Pong | Error) and msg.ref is not None:
            self.answers[msg.ref] = msg
        elif isinstance(msg, Token | Done | Error) and msg.job_id is not None:
            self.jobs.setdefault(msg.job_id, deque()).append(msg)

    def answer(self, ref: str) -> JobAccepted | Pong | None:
        msg = self.answers.pop(ref, None)
        if isinstance(msg, Error):
            raise _job_error(msg)
        if msg is None and self.closed is not None:
            raise self.closed
        return msg

    def event(self, job_id: str) -> JobMessage | None:
        """The job's next token or done; its error raises :class:`JobError`."""
        queue = self.jobs.get(job_id)
        if queue:
            msg = queue.popleft()
            if isinstance(msg, Error):
                raise _job_error(msg)
            return msg
        if self.closed is not None:
            raise self.closed
        return None


def _generate(
    model: str,
    messages: calls.Messages | None,
    prompt: str | None,
    params: dict[str, Any],
    ref: str,
) -> bytes:
    if (messages is None) == (prompt is None):
        raise ValueError("give exactly one of messages (chat) or prompt (completion)")
    if messages is not None:
        body = calls.chat_body(model, messages, params)
        kind = "chat"
    else:
        body = calls.completion_body(model, prompt or "", params)
        kind = "completion"
    raw = msgspec.Raw(msgspec.json.encode(body))
    return ws.encode(ws.Generate(body=raw, kind=kind, ref=ref))  # type: ignore[arg-type]


def _headers(core: Core) -> dict[str, str]:
    return {"Authorization": f"Bearer {core.api_key}"} if core.api_key else {}


def _handshake_error(exc: Exception) -> APIError:
    if isinstance(exc, InvalidStatus):
        response = exc.response
        return Core.status_error(
            response.status_code, bytes(response.body or b""), httpx.Headers(dict(response.headers))
        )
    if isinstance(exc, TimeoutError):
        return APITimeoutError("WebSocket handshake timed out")
    return APIConnectionError(f"WebSocket connection failed: {type(exc).__name__}: {exc}")


def _closed(exc: ConnectionClosed) -> WebSocketClosedError:
    rcvd = exc.rcvd
    return WebSocketClosedError(rcvd.code if rcvd else 1006, rcvd.reason if rcvd else "")


class AsyncWebSocket:
    """One open ``/ws`` socket. Use through ``UniversalClient.websocket()``."""

    def __init__(self, conn: ClientConnection) -> None:
        self._conn = conn
        self._router = Router()
        self._changed = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    @asynccontextmanager
    async def connect(
        cls, core: Core, *, open_timeout: float = 10.0
    ) -> AsyncIterator[AsyncWebSocket]:
        try:
            conn = await aconnect(
                core.ws_url(),
                additional_headers=_headers(core),
                subprotocols=[Subprotocol(ws.SUBPROTOCOL)],
                open_timeout=open_timeout,
                proxy=None,
            )
        except (InvalidHandshake, OSError, TimeoutError) as exc:
            raise _handshake_error(exc) from exc
        socket = cls(conn)
        socket._reader = asyncio.create_task(socket._read())
        try:
            yield socket
        finally:
            await conn.close()
            await socket._reader

    async def _read(self) -> None:
        try:
            async for raw in self._conn:
                msg = ws.decode_server(raw)
                async with self._changed:
                    self._router.route(msg)
                    self._changed.notify_all()
        except ConnectionClosed as exc:
            self._router.closed = _closed(exc)
        finally:
            if self._router.closed is None:
                self._router.closed = WebSocketClosedError(1000, "closed")
            async with self._changed:
                self._changed.notify_all()

    async def _await(self, take: Any, timeout: float | None) -> Any:
        try:
            async with asyncio.timeout(timeout), self._changed:
                while (got := take()) is None:
                    await self._changed.wait()
                return got
        except TimeoutError:
            raise APITimeoutError(f"no answer on the WebSocket within {timeout} s") from None

    async def _send(self, data: bytes) -> None:
        try:
            await self._conn.send(data.decode())
        except ConnectionClosed as exc:
            raise _closed(exc) from exc

    async def generate(
        self,
        model: str,
        *,
        messages: calls.Messages | None = None,
        prompt: str | None = None,
        timeout: float = 30.0,
        **params: Any,
    ) -> str:
        """Start a job on this socket (closing the socket cancels it); its id."""
        ref = self._router.ref()
        await self._send(_generate(model, messages, prompt, params, ref))
        accepted = await self._await(lambda: self._router.answer(ref), timeout)
        assert isinstance(accepted, JobAccepted)
        return accepted.job_id

    async def subscribe(self, job_id: str, after: int = 0) -> None:
        """Follow a job from ``after`` (closing the socket does not cancel it)."""
        await self._send(ws.encode(ws.Subscribe(job_id=job_id, after=after)))

    async def cancel(self, job_id: str) -> None:
        await self._send(ws.encode(ws.Cancel(job_id=job_id)))

    async def ping(self, timeout: float = 10.0) -> float:
        """Round-trip seconds of a ``ping``/``pong``."""
        ref, start = self._router.ref(), time.perf_counter()
        await self._send(ws.encode(ws.Ping(ref=ref)))
        await self._await(lambda: self._router.answer(ref), timeout)
        return time.perf_counter() - start

    async def events(self, job_id: str, timeout: float | None = None) -> AsyncIterator[JobMessage]:
        """The job's ``token`` messages, then its ``done``; an ``error`` raises JobError."""
        while True:
            msg: JobMessage = await self._await(lambda: self._router.event(job_id), timeout)
            yield msg
            if isinstance(msg, Done):
                return

    async def text(self, job_id: str, timeout: float | None = None) -> tuple[str, Done]:
        """The job's whole text and its ``done`` message."""
        parts: list[str] = []
        async for msg in self.events(job_id, timeout):
            if isinstance(msg, Token):
                parts.append(msg.text)
            else:
                return "".join(parts), msg
        raise APIConnectionError("the job's stream ended without done")  # pragma: no cover


class SyncWebSocket:
    """The blocking twin of :class:`AsyncWebSocket`: the waiting call reads the socket."""

    def __init__(self, conn: SyncClientConnection) -> None:
        self._conn = conn
        self._router = Router()

    @classmethod
    @contextmanager
    def connect(cls, core: Core, *, open_timeout: float = 10.0) -> Iterator[SyncWebSocket]:
        try:
            conn = sconnect(
                core.ws_url(),
                additional_headers=_headers(core),
                subprotocols=[Subprotocol(ws.SUBPROTOCOL)],
                open_timeout=open_timeout,
                proxy=None,
            )
        except (InvalidHandshake, OSError, TimeoutError) as exc:
            raise _handshake_error(exc) from exc
        with conn:
            yield cls(conn)

    def _await(self, take: Any, timeout: float | None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (got := take()) is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise APITimeoutError(f"no answer on the WebSocket within {timeout} s")
            try:
                raw = self._conn.recv(timeout=left)
            except TimeoutError:
                continue
            except ConnectionClosed as exc:
                self._router.closed = _closed(exc)
                continue
            self._router.route(ws.decode_server(raw))
        return got

    def _send(self, data: bytes) -> None:
        try:
            self._conn.send(data.decode())
        except ConnectionClosed as exc:
            raise _closed(exc) from exc

    def generate(
        self,
        model: str,
        *,
        messages: calls.Messages | None = None,
        prompt: str | None = None,
        timeout: float = 30.0,
        **params: Any,
    ) -> str:
        ref = self._router.ref()
        self._send(_generate(model, messages, prompt, params, ref))
        accepted = self._await(lambda: self._router.answer(ref), timeout)
        assert isinstance(accepted, JobAccepted)
        return accepted.job_id

    def subscribe(self, job_id: str, after: int = 0) -> None:
        self._send(ws.encode(ws.Subscribe(job_id=job_id, after=after)))

    def cancel(self, job_id: str) -> None:
        self._send(ws.encode(ws.Cancel(job_id=job_id)))

    def ping(self, timeout: float = 10.0) -> float:
        ref, start = self._router.ref(), time.perf_counter()
        self._send(ws.encode(ws.Ping(ref=ref)))
        self._await(lambda: self._router.answer(ref), timeout)
        return time.perf_counter() - start

    def events(self, job_id: str, timeout: float | None = None) -> Iterator[JobMessage]:
        while True:
            msg: JobMessage = self._await(lambda: self._router.event(job_id), timeout)
            yield msg
            if isinstance(msg, Done):
                return

    def text(self, job_id: str, timeout: float | None = None) -> tuple[str, Done]:
        parts: list[str] = []
        for msg in self.events(job_id, timeout):
            if isinstance(msg, Token):
                parts.append(msg.text)
            else:
                return "".join(parts), msg
        raise APIConnectionError("the job's stream ended without done")  # pragma: no cover
