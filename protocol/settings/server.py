"""The API process and its Redis: ``RedisSettings`` (``UML_REDIS_*``, ``REDIS_URL``) and
``ServerSettings`` (``UML_*``: bind, request bounds, queue bounds, timeouts).
"""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct


class RedisSettings(Struct, frozen=True, kw_only=True):
    """Read from ``UML_REDIS_<FIELD>``; the URL also from ``REDIS_URL``."""

    url: Annotated[
        str, Meta(description="Redis URL for broker, job records and event logs (also REDIS_URL).")
    ] = "redis://127.0.0.1:6379/0"
    retention_s: Annotated[
        int,
        Meta(ge=60, description="Seconds job records and event logs are kept after they finish."),
    ] = 86400
    socket_timeout_s: Annotated[
        float, Meta(gt=0, description="Socket timeout of Redis connections.")
    ] = 10.0
    block_ms: Annotated[
        int, Meta(ge=10, description="BLOCK of the relay's XREAD; stays below the socket timeout.")
    ] = 2000
    max_connections: Annotated[
        int,
        Meta(
            ge=8,
            description="Redis connections one API process may hold; a request finding none "
            "free waits up to the socket timeout for one (then 503).",
        ),
    ] = 512


class ServerSettings(Struct, frozen=True, kw_only=True):
    """Read from ``UML_<FIELD>``."""

    host: Annotated[str, Meta(description="Address the API binds.")] = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535, description="Port the API binds.")] = 8000
    max_body_bytes: Annotated[
        int, Meta(ge=1024, description="Largest request body accepted (413 beyond).")
    ] = 1_048_576
    max_tokens_cap: Annotated[
        int, Meta(ge=1, description="Largest max_tokens a request may ask for.")
    ] = 4096
    default_max_tokens: Annotated[
        int, Meta(ge=1, description="max_tokens of a chat request that names none.")
    ] = 256
    max_stop: Annotated[int, Meta(ge=0, description="Most stop strings per request.")] = 4
    max_stop_chars: Annotated[
        int, Meta(ge=1, description="Longest stop string, in characters.")
    ] = 256
    max_messages: Annotated[int, Meta(ge=1, description="Most messages in one chat request.")] = 512
    max_prompt_chars: Annotated[
        int,
        Meta(
            ge=1,
            description="Most prompt characters per request (all messages together); the "
            "worker still enforces the model's token context.",
        ),
    ] = 200_000
    sse_ping_s: Annotated[
        float, Meta(gt=0, description="Seconds between SSE comment pings on an idle stream.")
    ] = 15.0
    shutdown_grace_s: Annotated[
        float,
        Meta(
            ge=0,
            description="On SIGTERM the API stops accepting and lets open requests and "
            "streams run this long, then ends them; their jobs run on, for the client to "
            "resume on another replica.",
        ),
    ] = 30.0
    access_log: Annotated[
        bool, Meta(description="Log every HTTP request line (uvicorn's access log).")
    ] = False
    models_cache_s: Annotated[
        float, Meta(ge=0, description="Seconds the API caches the set of live models.")
    ] = 1.0
    max_queued_per_model: Annotated[
        int,
        Meta(
            ge=1,
            description="Most interactive-priority jobs queued for one model (cancelled and "
            "expired ones do not count); beyond it submissions get 503 with Retry-After.",
        ),
    ] = 10_000
    max_queued_batch_per_model: Annotated[
        int,
        Meta(
            ge=1,
            description="Most batch-priority jobs (batch lines, /v1/jobs with priority batch) "
            "queued for one model: a bound of their own, so a batch backlog never takes the "
            "room interactive work is admitted into.",
        ),
    ] = 10_000
    queue_share_per_key: Annotated[
        float,
        Meta(
            gt=0,
            le=1,
            description="Fraction of each of those bounds one API key may hold queued (at "
            "least one job); beyond it that key gets 429 with Retry-After while other keys "
            "are still admitted.",
        ),
    ] = 0.25
    queue_full_retry_after_s: Annotated[
        int,
        Meta(
            ge=1,
            description="Retry-After (seconds) of a 503 for a full model queue and of a 429 "
            "for a key over its share of it.",
        ),
    ] = 5
    header_timeout_s: Annotated[
        float,
        Meta(
            gt=0,
            description="Seconds a client has to send a request's headers, from connecting or "
            "from its first byte after a response; past it: 408 and the connection is closed.",
        ),
    ] = 10.0
    body_timeout_s: Annotated[
        float,
        Meta(
            gt=0,
            description="Seconds a client has to send a request's body, plus one second per "
            "UML_BODY_MIN_RATE bytes sent; past it: 408 and the connection is closed.",
        ),
    ] = 30.0
    body_min_rate: Annotated[
        int,
        Meta(
            ge=1,
            description="Bytes of body that earn a second more of UML_BODY_TIMEOUT_S: an "
            "upload slower than this (bytes/s) runs out of time.",
        ),
    ] = 64 * 1024
