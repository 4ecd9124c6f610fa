"""What one HTTP exchange ended as, for the audit log and the request metrics.

:class:`Exchange` wraps an ASGI ``receive`` and ``send`` and keeps the status the response
started with. A client that closes the connection before the response starts (it abandons
a half-sent body, or leaves while a sync call waits for its job) ended the exchange
itself: that is **499** (nginx's "client closed request"), whatever the app then tries to
answer (Litestar turns the ``http.disconnect`` read mid-body into a 500 no one receives).
"""

from __future__ import annotations

import asyncio

from litestar.types import Message, Receive, ReceiveMessage, Send

from api.errors import status_of

CLIENT_CLOSED = 499


class Exchange:
    """One request's ``receive`` and ``send``, watched."""

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self.started: int | None = None
        """The status of ``http.response.start``, once sent."""
        self.headers: list[tuple[bytes, bytes]] = []
        """The headers the response started with."""
        self.client_left = False
        """The client closed the connection before the response started."""

    async def receive(self) -> ReceiveMessage:
        message = await self._receive()
        if message["type"] == "http.disconnect" and self.started is None:
            self.client_left = True
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = message["status"]
            self.headers = list(message.get("headers", ()))
        await self._send(message)

    def status(self, exc: BaseException | None = None) -> int:
        """The status to record, given the exception that ended the app (if one did)."""
        if self.client_left or isinstance(exc, asyncio.CancelledError):
            return CLIENT_CLOSED
        if exc is not None:  # escaped the stack: its exception handler answers it
            return status_of(exc)
        return 500 if self.started is None else self.started
