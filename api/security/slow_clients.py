"""Slow clients: bounds on the time a client takes to send a request (docs/security.md).

A client that opens connections and sends their requests a byte at a time (slowloris,
slow POST) holds a socket and a task each for as long as it likes: uvicorn has a keep-alive
timeout between requests, but none while a request's headers or body arrive. Two bounds::

    connect ─► headers ─────────────► app ─► body ──────────────────────► handler
               ≤ UML_HEADER_TIMEOUT_S        ≤ UML_BODY_TIMEOUT_S
               (header_deadline_protocol)      + bytes / UML_BODY_MIN_RATE
                                               (BodyDeadlineMiddleware)

Past either, the client gets 408 in OpenAI's shape and the connection is closed. The header
bound lives in uvicorn's HTTP protocol (the app only runs once the headers are complete),
in a subclass of the protocol uvicorn would pick itself (httptools, else h11); the body
bound wraps the ASGI ``receive``. A reverse proxy in front should still bound connections
per client (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import anyio
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, ReceiveMessage, Scope, Send
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from api.errors import APIError
from protocol.openai import ErrorInfo, ErrorResponse, encode

HEADERS_TOO_SLOW = "The request's headers did not arrive in time"
BODY_TOO_SLOW = "The request's body did not arrive in time"


def _timeout_response() -> bytes:
    body = encode(
        ErrorResponse(
            error=ErrorInfo(
                message=HEADERS_TOO_SLOW, type="invalid_request_error", code="request_timeout"
            )
        )
    )
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class _HeaderDeadline(asyncio.Protocol):
    """Mixed into uvicorn's HTTP protocol: the headers of a request must arrive within
    ``header_timeout_s`` of the connection opening, or of the first byte after a response
    (an idle kept-alive connection is uvicorn's ``timeout_keep_alive``)."""

    header_timeout_s = 10.0
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    cycle: Any
    _timer: asyncio.TimerHandle | None = None
    _waiting_after: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._timer is None and (self.cycle is None or self.cycle.response_complete):
            self._arm()  # the first bytes of a new request
        super().data_received(data)
        if self.cycle is not self._waiting_after or self.transport.get_protocol() is not self:
            self._disarm()  # its headers are complete (the body has its own bound), or a
            # WebSocket took the connection over

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._waiting_after = self.cycle
        self._timer = self.loop.call_later(self.header_timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        transport = self.transport
        if transport.is_closing() or transport.get_protocol() is not self:
            return  # closed, or upgraded to a WebSocket
        if self.cycle is not self._waiting_after:
            return  # the headers came
        if self.cycle is not None and not self.cycle.response_complete:
            self._arm()  # a pipelined request waits behind a running response
            return
        transport.write(_timeout_response())
        transport.close()


def header_deadline_protocol(
    timeout_s: float, base: type[asyncio.Protocol] = AutoHTTPProtocol
) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class (by default its own choice: httptools, else h11), with
    a deadline on request headers."""
    bases = (_HeaderDeadline, base)
    made = type("HeaderDeadlineProtocol", bases, {"header_timeout_s": timeout_s})
    return cast(type[asyncio.Protocol], made)


def body_too_slow() -> APIError:
    return APIError(408, BODY_TOO_SLOW, code="request_timeout", headers={"Connection": "close"})


class _Receive:
    """``receive`` with a deadline until the body is complete; then as it was (a handler
    waiting for the client to disconnect waits as long as it likes)."""

    def __init__(self, receive: Receive, timeout_s: float, min_rate: int) -> None:
        self._receive = receive
        self._deadline = time.monotonic() + timeout_s
        self._min_rate = min_rate
        self._complete = False

    async def __call__(self) -> ReceiveMessage:
        if self._complete:
            return await self._receive()
        try:
            with anyio.fail_after(max(0.0, self._deadline - time.monotonic())):
                message = await self._receive()
        except TimeoutError:
            raise body_too_slow() from None
        if message["type"] == "http.request":
            self._deadline += len(message.get("body", b"")) / self._min_rate
            self._complete = not message.get("more_body", False)
        else:
            self._complete = True
        return message


class BodyDeadlineMiddleware(ASGIMiddleware):
    """Answers 408 (and closes) when a request's body is not in by its deadline: the
    ``timeout_s`` from when its headers arrived, plus a second per ``min_rate`` bytes sent."""

    scopes = (ScopeType.HTTP,)

    def __init__(self, timeout_s: float, min_rate: int) -> None:
        self.timeout_s = timeout_s
        self.min_rate = min_rate

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        await next_app(scope, _Receive(receive, self.timeout_s, self.min_rate), send)
