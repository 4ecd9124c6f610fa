"""A minimal HTTP/1.1 SSE client on asyncio streams, for load generation.

httpx spent about 4 ms of CPU per request on the 2-core machine (320 GETs: 1.6 s of client
CPU against 0.27 s in the API), so a benchmark driven by it mostly measures itself. This
client does only what a streaming POST needs: one request per connection, chunked
transfer decoding, and SSE ``data:`` lines.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator


async def stream_post(
    host: str, port: int, path: str, body: bytes, api_key: str | None = None
) -> AsyncIterator[bytes]:
    """POST ``body`` as JSON (with ``api_key`` as a Bearer token) and yield every SSE ``data:``."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        auth = f"Authorization: Bearer {api_key}\r\n" if api_key else ""
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"{auth}"
            f"Accept: text/event-stream\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode() + body)
        status = await reader.readline()
        if b" 200 " not in status:
            raise RuntimeError(f"HTTP error: {status.decode().strip()}")
        chunked = False
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"transfer-encoding:") and b"chunked" in line.lower():
                chunked = True
        pending = b""
        async for piece in _body(reader, chunked):
            pending += piece
            *events, pending = pending.split(b"\n\n")
            for event in events:
                for field in event.split(b"\n"):
                    if field.startswith(b"data: "):
                        yield field[6:]
    finally:
        writer.close()


async def _body(reader: asyncio.StreamReader, chunked: bool) -> AsyncIterator[bytes]:
    if not chunked:
        while piece := await reader.read(65536):
            yield piece
        return
    while True:
        size = int((await reader.readline()).split(b";")[0], 16)
        if size == 0:
            return
        yield await reader.readexactly(size)
        await reader.readexactly(2)
