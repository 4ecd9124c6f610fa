"""``/ws``: jobs over a WebSocket (messages in :mod:`protocol.ws`, session in
:mod:`api.services.ws`).

The key is checked at the handshake, before the socket is accepted, by the same
authenticator as every HTTP route, and the handshake is charged to the key's request
windows and takes one of its socket slots; a refused handshake is an HTTP 401 or 429 with
OpenAI's error body. Every handshake, accepted or not, is audited. The route opts out of
the HTTP auth middleware only because it also accepts the key as ``?api_key=`` or a
``uml.key.<key>`` subprotocol, which browsers need.
"""

from __future__ import annotations

import asyncio
import contextlib

from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect

from api.errors import APIError
from api.security.audit import AuditWriter
from api.security.middleware import PUBLIC
from api.services.ws import Op, Session
from api.services.ws_frames import Overflow
from api.services.ws_handshake import admit, chosen_subprotocol, handshake_record
from api.state import Resources
from protocol import ws
from protocol.openai import ErrorResponse, encode


async def _deny(socket: WebSocket, exc: APIError) -> None:  # type: ignore[type-arg]
    """Refuse the handshake with a plain HTTP answer (the ASGI denial-response extension),
    or, on a server without it, close before accepting (the client sees a 403)."""
    await socket.receive()  # websocket.connect
    if "websocket.http.response" not in (socket.scope.get("extensions") or {}):
        await socket.close(ws.CLOSE_UNAUTHORIZED, exc.info.message)
        return
    body = encode(ErrorResponse(error=exc.info))
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
    await socket.send(
        {"type": "websocket.http.response.start", "status": exc.status, "headers": headers}
    )
    await socket.send({"type": "websocket.http.response.body", "body": body, "more_body": False})


async def _run(socket: WebSocket, session: Session) -> None:  # type: ignore[type-arg]
    async def receive() -> None:
        with contextlib.suppress(WebSocketDisconnect, Overflow):
            while True:
                await session.handle(await socket.receive_data("text"))

    async def send() -> None:
        while True:
            await socket.send_data((await session.outbox.queue.get()).decode())

    tasks = [asyncio.ensure_future(w) for w in (receive(), send(), *session.endings())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await session.close()
    closing = session.close_code()
    if closing is not None:
        with contextlib.suppress(Exception):
            await socket.close(*closing)


@websocket("/ws", opt=PUBLIC)
async def ws_endpoint(socket: WebSocket) -> None:  # type: ignore[type-arg]
    """Generate, subscribe to and cancel jobs; see docs/client.md."""
    res = Resources.of(socket.app.state)
    writer = AuditWriter.of(socket.app.state)
    op = Op("handshake")
    try:
        credential, slot = await admit(socket, res)
    except APIError as exc:
        writer.submit(handshake_record(writer, socket, op, exc.status))
        await _deny(socket, exc)
        return
    writer.submit(handshake_record(writer, socket, op, 101))
    await socket.accept(subprotocols=chosen_subprotocol(socket))
    await _run(socket, Session(res, credential, writer, op.request_id, slot))
