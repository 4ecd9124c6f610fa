"""Keys never reach a log line through a URL's query string.

A browser cannot set headers on a WebSocket, so ``/ws`` also takes its key as ``?api_key=``.
The server's own log lines (uvicorn's handshake and access lines) print the path with its
query, and they read it from the ASGI scope after the app has run. :class:`RedactQueryKeys`
wraps the whole app, before routing (so a mistyped path is covered too), and rewrites the
scope's query string once, for every HTTP and WebSocket connection:

* the key the server accepts is taken out first (:func:`split_query`) and left in the scope
  under :data:`QUERY_KEY` for the ``/ws`` handshake;
* every parameter whose name decodes to ``api_key`` (``api%5Fkey``, ``api_key`` after a
  ``;``) and every value that decodes to something key-shaped is replaced by ``redacted``,
  whether or not the server would have accepted it.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

from litestar.types import ASGIApp, Receive, Scope, Send

QUERY_KEY = "uml.query_api_key"
"""The scope entry holding the key taken out of the query string (absent: none)."""
PARAM = "api_key"
REDACTED = b"redacted"
_KEY_SHAPED = re.compile(r"uml_[A-Za-z0-9_-]{16,}")
"""A stored key (``uml_<id>_<secret>``) or a generated bootstrap key (``uml_admin_<secret>``)."""


def _decode(part: bytes) -> str:
    return unquote_plus(part.decode("latin-1"), encoding="utf-8", errors="replace")


def split_query(raw: bytes) -> tuple[bytes, str | None]:
    """``raw`` with every key-bearing value blanked, and the key the server accepts: the
    first ``&``-separated parameter named ``api_key`` (percent-decoded), as Litestar reads it."""
    accepted: str | None = None
    out: list[bytes] = []
    for param in raw.split(b"&"):
        name, eq, value = param.partition(b"=")
        if accepted is None and eq and _decode(name) == PARAM:
            accepted = _decode(value)
        out.append(b";".join(_blank(part) for part in param.split(b";")))
    return b"&".join(out), accepted


def _blank(part: bytes) -> bytes:
    name, eq, value = part.partition(b"=")
    if _decode(name).strip() == PARAM or _KEY_SHAPED.search(_decode(value if eq else name)):
        return name + b"=" + REDACTED if eq else REDACTED
    return part


class RedactQueryKeys:
    """The outermost ASGI layer: take the key out of the query, blank key-shaped values."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("query_string")
        if isinstance(raw, bytes) and raw:
            redacted, key = split_query(raw)
            scope["query_string"] = redacted
            if key is not None:
                scope[QUERY_KEY] = key  # type: ignore[literal-required]
        await self.app(scope, receive, send)
