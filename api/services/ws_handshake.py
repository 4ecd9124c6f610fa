"""The ``/ws`` handshake: which key it carries, and what admits it.

The key comes from ``Authorization: Bearer`` or ``X-API-Key`` (as for HTTP), else ``?api_key=``
or an offered subprotocol ``uml.key.<key>`` (browsers cannot set headers on a WebSocket). A
handshake is a request: it is charged to the key's request windows, takes one of the key's
socket slots (``UML_LIMIT_MAX_SOCKETS``), and is audited whether it is accepted or not.
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from api.errors import unavailable
from api.security.audit import AuditWriter, socket_record
from api.security.keys import Credential
from api.security.limits import rate_limited
from api.security.middleware import presented_key
from api.security.redact import QUERY_KEY, split_query
from api.services.ws import Op
from api.state import Resources
from protocol import ws
from protocol.audit import AuditRecord
from protocol.auth import ApiKey


def key_of(socket: Any) -> str:
    """The key a handshake carries: headers first (as for HTTP), then query, subprotocol."""
    headers = socket.headers
    if headers.get("authorization") is not None or headers.get("x-api-key") is not None:
        return presented_key(socket)
    scope = socket.scope
    if QUERY_KEY not in scope:  # the app runs without api.security.redact (tests)
        redact_query_key(scope)
    query = scope.get(QUERY_KEY)
    if query:
        return str(query)
    for proto in scope.get("subprotocols") or ():
        if proto.startswith(ws.KEY_SUBPROTOCOL_PREFIX) and len(proto) > len(
            ws.KEY_SUBPROTOCOL_PREFIX
        ):
            return str(proto[len(ws.KEY_SUBPROTOCOL_PREFIX) :])
    return presented_key(socket)  # raises the same 401 as HTTP


def redact_query_key(scope: Any) -> None:
    """Take the key out of the scope's query string (into ``scope[QUERY_KEY]``), in place,
    blanking every key-bearing value: the server's log line for the handshake must never
    carry the key. :class:`api.security.redact.RedactQueryKeys` does this before routing."""
    redacted, key = split_query(scope.get("query_string") or b"")
    scope["query_string"] = redacted
    scope[QUERY_KEY] = key


def chosen_subprotocol(socket: Any) -> str | None:
    """``uml.v1`` when offered (a browser that offers protocols needs one chosen back)."""
    offered = socket.scope.get("subprotocols") or ()
    return ws.SUBPROTOCOL if ws.SUBPROTOCOL in offered else None


async def admit(socket: Any, res: Resources) -> tuple[Credential, str | None]:
    """Authenticate the handshake and charge it as a request; take a socket slot."""
    try:
        credential = await res.authenticator.verify(key_of(socket))
    except (RedisConnectionError, RedisTimeoutError):
        raise unavailable("The key store is unavailable; retry shortly") from None
    socket.scope["user"] = credential.key
    policy = res.limiter.policy(credential.key)
    if policy is not None:
        decision = await res.limiter.admit(policy, False)
        if not decision.allowed:
            raise rate_limited(decision)
    return credential, await res.limiter.open_socket(policy)


def handshake_record(
    writer: AuditWriter,
    socket: Any,
    op: Op,
    status: int,
) -> AuditRecord:
    key = socket.scope.get("user")
    """The audit record of a handshake: accepted (101) or refused with ``status``."""
    return socket_record(
        writer,
        key if isinstance(key, ApiKey) else None,
        method="GET",
        path="/ws",
        status=status,
        started=op.started,
        t0=op.t0,
        request_id=op.request_id,
    )
