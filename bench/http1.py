"""Raw HTTP/1.1 over asyncio streams for the benches that drive hundreds of requests on a
few kept-alive connections (an HTTP client library would add its own cost to the figures),
and the model's Celery lists as the benches count them."""

from __future__ import annotations

import asyncio

import redis

from api.enqueue import queue_list
from protocol.keys import CELERY_PRIORITY_STEPS, queue_name
from tests.auth import ADMIN_KEY


def head(
    method: str,
    path: str,
    host: str,
    port: int,
    body: bytes,
    close: bool,
    key: str = ADMIN_KEY,
) -> bytes:
    """One request's bytes: a JSON ``body`` sent with ``key``."""
    conn = "close" if close else "keep-alive"
    return (
        f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n"
        f"Connection: {conn}\r\n\r\n"
    ).encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """The status and headers of one response (the body is left to the caller)."""
    status = int((await reader.readline()).split()[1])
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


async def cancel_all(
    host: str, port: int, ids: list[str], connections: int, key: str = ADMIN_KEY
) -> None:
    """``POST /v1/jobs/{id}/cancel`` for every id, over ``connections`` kept-alive sockets."""
    todo = iter(ids)

    async def one_connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for job_id in todo:
                path = f"/v1/jobs/{job_id}/cancel"
                writer.write(head("POST", path, host, port, b"", False, key))
                _, headers = await read_response(reader)
                await reader.readexactly(int(headers["content-length"]))
        finally:
            writer.close()

    await asyncio.gather(*(one_connection() for _ in range(connections)))


def list_messages(client: redis.Redis, model: str) -> int:
    """Messages in ``model``'s Celery lists (live or cancelled; prefetched ones are not)."""
    lists = {queue_list(queue_name(model), p) for p in CELERY_PRIORITY_STEPS}
    return sum(int(client.llen(name)) for name in lists)
