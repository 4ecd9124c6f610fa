"""The audit record: one per HTTP request, WebSocket handshake or socket operation, in the
JSON log and the Redis stream ``uml:audit``.

It names the key by id and name, never the key itself. Prompt and completion text appear
only when ``UML_AUDIT_LOG_TEXT`` is on.
"""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct, field

ANONYMOUS = "anonymous"
"""The ``key_id`` of a request that presented no valid key."""


class AuditRecord(Struct, kw_only=True, omit_defaults=True):
    time: Annotated[float, Meta(description="Unix seconds when the request arrived.")]
    request_id: Annotated[str, Meta(description="Also answered as the x-request-id header.")]
    key_id: Annotated[str, Meta(description="The key's public id, or `anonymous`.")]
    method: str
    path: str
    status: int
    latency_ms: float
    key_name: str | None = None
    scope: str | None = None
    job_id: str | None = None
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    action: Annotated[
        str | None, Meta(description="An admin action: key.create, key.revoke, key.rotate.")
    ] = None
    target: Annotated[str | None, Meta(description="What the action changed (a key id).")] = None
    socket: Annotated[
        str | None,
        Meta(description="For an operation sent over a WebSocket: its handshake's request_id."),
    ] = None
    prompt: str | None = None
    completion: str | None = None
    id: Annotated[str | None, Meta(description="The uml:audit stream entry id (on reads).")] = None


class AuditList(Struct, kw_only=True):
    object: str = "list"
    data: list[AuditRecord] = field(default_factory=list)
