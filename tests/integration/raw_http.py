"""HTTP over a bare socket, for tests that send what no client library would (partial
headers, a body that never ends) and read exactly what the server answers."""

from __future__ import annotations

import socket


def read_response(sock: socket.socket) -> bytes:
    """One whole HTTP response with a ``Content-Length`` (it may come in several reads)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length and (chunk := sock.recv(65536)):
        body += chunk
    return head + b"\r\n\r\n" + body
