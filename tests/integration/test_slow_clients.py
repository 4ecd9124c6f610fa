"""Slow clients against the real ``uml serve``: partial headers and a partial body are cut
with 408 within their bound (1 s here, plus a margin), and nothing else is.

The module runs its own Redis and API with ``UML_HEADER_TIMEOUT_S=1`` and
``UML_BODY_TIMEOUT_S=1``; no worker (nothing here runs a job).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from protocol import ws
from tests.auth import ADMIN_KEY
from tests.integration.raw_http import read_response
from tests.integration.stack import Stack
from uml.redis_server import start_redis

BOUND_S = 1.0
MARGIN_S = 2.0


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    server = start_redis(Path(tmp_path_factory.mktemp("slow-redis")), appendonly=False)
    stack = Stack(
        redis_url=server.url,
        log_dir=tmp_path_factory.mktemp("slow-logs"),
        extra_env={"UML_HEADER_TIMEOUT_S": str(BOUND_S), "UML_BODY_TIMEOUT_S": str(BOUND_S)},
    )
    try:
        _, url = stack.start_api()
        yield int(url.rsplit(":", 1)[1])
    finally:
        stack.stop()
        server.stop()


def open_socket(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=BOUND_S + MARGIN_S + 3)


def trickle_until_closed(sock: socket.socket, opening: bytes, drip: bytes) -> tuple[float, bytes]:
    """Send ``opening``, then ``drip`` every 0.2 s; return when the server closes, with the
    seconds that took and all it answered."""
    started = time.monotonic()
    sock.sendall(opening)
    sock.settimeout(0.2)
    answer = b""
    while time.monotonic() - started < BOUND_S + MARGIN_S + 3:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            try:
                sock.sendall(drip)
            except OSError:
                break
            continue
        except OSError:
            break
        if not chunk:
            break
        answer += chunk
    return time.monotonic() - started, answer


def timeout_error(answer: bytes) -> dict[str, Any]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer
    assert b"connection: close" in head.lower(), head
    error: dict[str, Any] = json.loads(body)["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "request_timeout"
    return error


def test_partial_headers_are_cut_with_408_within_the_bound(port: int) -> None:
    socks = [open_socket(port) for _ in range(5)]
    try:
        for sock in socks:
            took, answer = trickle_until_closed(
                sock, b"GET /health HTTP/1.1\r\nHost: uml\r\n", b"X-Slow: 1\r\n"
            )
            assert took < BOUND_S + MARGIN_S, took
            assert "headers" in timeout_error(answer)["message"]
    finally:
        for sock in socks:
            sock.close()


def test_a_connection_that_sends_nothing_is_cut_within_the_bound(port: int) -> None:
    with open_socket(port) as sock:
        took, answer = trickle_until_closed(sock, b"", b"")
    assert BOUND_S - 0.2 < took < BOUND_S + MARGIN_S, took
    timeout_error(answer)


def test_a_partial_authenticated_body_is_cut_with_408_within_the_bound(port: int) -> None:
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: uml\r\n"
        f"Authorization: Bearer {ADMIN_KEY}\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000\r\n\r\n{"
    )
    with open_socket(port) as sock:
        took, answer = trickle_until_closed(sock, head.encode(), b" ")
    assert BOUND_S - 0.2 < took < BOUND_S + MARGIN_S, took
    assert "body" in timeout_error(answer)["message"]


def test_requests_in_time_on_a_kept_alive_connection_are_served(port: int) -> None:
    """Headers sent in pieces within the bound, and a second request after a pause on the
    same connection, are answered as usual."""
    with open_socket(port) as sock:
        for _ in range(2):
            sock.sendall(b"GET /health HTTP/1.1\r\n")
            time.sleep(BOUND_S / 2)
            sock.sendall(b"Host: uml\r\n\r\n")
            answer = read_response(sock)
            assert answer.startswith(b"HTTP/1.1 200"), answer
            time.sleep(BOUND_S / 2)


def test_a_websocket_outlives_the_header_bound(port: int) -> None:
    with connect(f"ws://127.0.0.1:{port}/ws?api_key={ADMIN_KEY}") as sock:
        time.sleep(BOUND_S + 1)
        sock.send(ws.encode(ws.Ping(ref="late")).decode())
        assert json.loads(sock.recv(timeout=5)) == {"type": "pong", "ref": "late"}
