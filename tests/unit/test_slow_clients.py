"""The slow-client bounds of api.security.slow_clients on a bare uvicorn (both of its HTTP
implementations) and on the ASGI ``receive`` (the real ``uml serve``:
tests/integration/test_slow_clients.py)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import anyio
import pytest
import uvicorn
from litestar.types import Receive, ReceiveMessage, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from api.errors import APIError
from api.security.slow_clients import _Receive, header_deadline_protocol
from uml.redis_server import free_port

BOUND_S = 0.5


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    assert scope["type"] == "http"
    headers = [(b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"hi"})


@pytest.fixture(scope="module", params=[HttpToolsProtocol, H11Protocol], ids=["httptools", "h11"])
def port(request: pytest.FixtureRequest) -> Iterator[int]:
    port = free_port()
    http = header_deadline_protocol(BOUND_S, request.param)
    config = uvicorn.Config(hello, port=port, http=http, log_config=None, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield port
    server.should_exit = True
    thread.join(10)


def until_closed(sock: socket.socket) -> tuple[float, bytes]:
    started, answer = time.monotonic(), b""
    sock.settimeout(5)
    while chunk := sock.recv(65536):
        answer += chunk
    return time.monotonic() - started, answer


@pytest.mark.parametrize(
    "sent", [b"", b"GET / HTTP/1.1\r\nHost: x\r\n"], ids=["nothing", "partial headers"]
)
def test_headers_not_in_by_the_bound_get_408_and_the_connection_closes(
    port: int, sent: bytes
) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(sent)
        took, answer = until_closed(sock)
    assert BOUND_S - 0.1 < took < BOUND_S + 1.5, took
    assert answer.startswith(b"HTTP/1.1 408") and b'"code":"request_timeout"' in answer


def test_the_bound_starts_again_with_each_request_on_a_kept_alive_connection(
    port: int,
) -> None:
    """From connecting, then from the first byte after each response: an idle kept-alive
    connection is uvicorn's keep-alive timeout, not this bound."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(5)
        for n in range(3):
            if n:
                time.sleep(BOUND_S * 0.7)
            sock.sendall(b"GET / HTTP/1.1\r\n")
            time.sleep(BOUND_S * 0.7)
            sock.sendall(b"Host: x\r\n\r\n")
            answer = b""
            while len(answer) < 20 or not answer.endswith(b"hi"):
                chunk = sock.recv(65536)
                assert chunk, answer
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200"), answer


def feed(*messages: ReceiveMessage, gap_s: float) -> Receive:
    queue = list(messages)

    async def receive() -> ReceiveMessage:
        await anyio.sleep(gap_s if queue else 3600)
        return queue.pop(0)

    return receive


async def test_the_body_deadline_grows_with_the_bytes_sent() -> None:
    chunk: ReceiveMessage = {"type": "http.request", "body": b"x" * 100, "more_body": True}
    last: ReceiveMessage = {"type": "http.request", "body": b"", "more_body": False}
    # 0.2 s base + 1 s per 100 bytes: five chunks 0.15 s apart fit; the base alone would not
    receive = _Receive(feed(*[chunk] * 5, last, gap_s=0.15), timeout_s=0.2, min_rate=100)
    for _ in range(6):
        await receive()
    with anyio.fail_after(1):  # once the body is in, no deadline: the wait is the client's
        with pytest.raises(TimeoutError):
            with anyio.fail_after(0.5):
                await receive()


async def test_a_body_slower_than_its_deadline_is_408() -> None:
    chunk: ReceiveMessage = {"type": "http.request", "body": b"x", "more_body": True}
    receive = _Receive(feed(chunk, chunk, chunk, gap_s=0.15), timeout_s=0.2, min_rate=100)
    await receive()
    with pytest.raises(APIError) as refused:
        await receive()
    assert refused.value.status == 408 and refused.value.headers == {"Connection": "close"}
