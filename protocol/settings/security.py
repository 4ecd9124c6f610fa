"""Keys, CORS, audit and per-key limits: ``SecuritySettings`` (``UML_*``) and
``LimitSettings`` (``UML_LIMIT_*``).
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta, Struct


class SecuritySettings(Struct, frozen=True, kw_only=True):
    """Read from ``UML_<FIELD>``. The admin key is a secret: it is never logged or printed."""

    admin_key: Annotated[
        str,
        Meta(description="Bootstrap admin API key (24+ printable characters); empty: none."),
    ] = ""
    admin_key_file: Annotated[
        str,
        Meta(description="File holding the bootstrap admin key, read when UML_ADMIN_KEY is empty."),
    ] = ""
    cors_origins: Annotated[
        str,
        Meta(
            description="Comma-separated origins a browser may call the API from "
            "(e.g. https://app.example.com); empty: no CORS headers at all."
        ),
    ] = ""
    cors_allow_credentials: Annotated[
        bool,
        Meta(description="Let browsers send cookies / HTTP auth cross-origin (never with `*`)."),
    ] = False
    audit_maxlen: Annotated[
        int, Meta(ge=100, description="Approximate number of records kept in the uml:audit stream.")
    ] = 100_000
    audit_log_text: Annotated[
        bool,
        Meta(description="Also write prompt and completion text into audit records (default off)."),
    ] = False
    key_recheck_s: Annotated[
        float,
        Meta(
            ge=1,
            description="Each API process re-reads the keys of its open streams and sockets this "
            "often, besides at once on every revoke or rotate it is told of.",
        ),
    ] = 30.0

    @property
    def cors_origin_list(self) -> list[str]:
        """The origins of ``cors_origins``, blanks dropped."""
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    def __repr__(self) -> str:
        """Never show the admin key, even when a whole settings object gets logged."""
        fields = ", ".join(
            f"{name}={'***' if name == 'admin_key' and value else value!r}"
            for name, value in msgspec.structs.asdict(self).items()
        )
        return f"SecuritySettings({fields})"


class LimitSettings(Struct, frozen=True, kw_only=True):
    """Per-key rate limits, read from ``UML_LIMIT_<FIELD>``; a key's own limits override them.

    The bootstrap admin key is never limited. See docs/security.md, "Rate limits".
    """

    enabled: Annotated[
        bool, Meta(description="Enforce per-key limits; false turns them and RateLimit-* off.")
    ] = True
    rpm: Annotated[int, Meta(ge=1, description="Default requests per minute per key.")] = 600
    rph: Annotated[int, Meta(ge=1, description="Default requests per hour per key.")] = 20000
    burst: Annotated[
        int, Meta(ge=1, description="Default burst limit: requests per second per key.")
    ] = 50
    tpm: Annotated[
        int,
        Meta(ge=1, description="Default prompt+completion tokens per minute per key."),
    ] = 1_000_000
    max_streams: Annotated[
        int, Meta(ge=1, description="Most streaming responses one key may have open at once.")
    ] = 64
    stream_lease_s: Annotated[
        float,
        Meta(
            ge=5,
            description="A stream slot not renewed this long (its API process died) is freed.",
        ),
    ] = 60.0
    max_sockets: Annotated[
        int, Meta(ge=1, description="Most WebSockets (/ws) one key may have open at once.")
    ] = 16
    ws_messages_per_s: Annotated[
        float,
        Meta(gt=0, description="Messages per second one WebSocket may send, sustained."),
    ] = 20.0
    ws_message_burst: Annotated[
        int,
        Meta(
            ge=1,
            description="Messages one WebSocket may send at once above the sustained rate; a "
            "socket that goes on sending this many more after being told to slow down is closed.",
        ),
    ] = 40
