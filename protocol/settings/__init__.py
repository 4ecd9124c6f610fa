"""Settings, one small frozen object per concern, read from the environment.

Every field is read from ``UML_<NAME>`` (upper case); ``RedisSettings.url`` also from
``REDIS_URL``. Settings live in ``protocol/`` because the API, the workers and the CLI
all read the same names; this module needs nothing beyond msgspec.
"""

from __future__ import annotations

import functools
import os
import typing
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import Meta, Struct

T = TypeVar("T", bound=Struct)


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


class WorkerSettings(Struct, frozen=True, kw_only=True):
    """Read from ``UML_WORKER_<FIELD>``."""

    slots: Annotated[int, Meta(ge=1, description="Concurrent jobs per worker process.")] = 16
    engine: Annotated[str, Meta(description="Default engine: torch or exllamav2.")] = "torch"
    device: Annotated[str, Meta(description="Default device: cpu or cuda:N.")] = "cpu"
    heartbeat_s: Annotated[float, Meta(gt=0, description="Seconds between worker heartbeats.")] = (
        1.0
    )
    heartbeat_ttl_s: Annotated[
        float, Meta(gt=0, description="A worker silent this long counts as gone.")
    ] = 5.0
    max_seq_len: Annotated[
        int, Meta(ge=16, description="Longest prompt+completion a job may reach.")
    ] = 2048
    switch_interval_ms: Annotated[
        float,
        Meta(
            gt=0, description="Python's thread switch interval in a worker (the default is 5 ms)."
        ),
    ] = 0.5
    cpu_threads: Annotated[
        int,
        Meta(
            ge=0,
            description="Torch threads of a CPU engine; 0 leaves one core for the API and Redis.",
        ),
    ] = 0
    lease_s: Annotated[
        float,
        Meta(
            gt=0,
            description="A running job's lease, renewed with every heartbeat; a job whose lease "
            "lapsed (its worker died) is re-queued by the reaper and resumes elsewhere.",
        ),
    ] = 15.0
    max_attempts: Annotated[
        int,
        Meta(
            ge=1,
            description="Attempts a job gets; one whose worker died this many times fails "
            "with code worker_lost.",
        ),
    ] = 3
    interactive_slots: Annotated[
        int,
        Meta(
            ge=-1,
            description="Slots of each model that batch-priority jobs may not take, so an "
            "interactive request starts at once under a batch backlog; -1: max(1, slots // 4).",
        ),
    ] = -1
    key_reserve_slots: Annotated[
        int,
        Meta(
            ge=-1,
            description="Slots of each model kept for API keys with no job running on it "
            "while more than one key has work for it, so a new key's request starts at once "
            "behind other keys' long streams; -1: slots // 8.",
        ),
    ] = -1
    shutdown_grace_s: Annotated[
        float,
        Meta(
            ge=0,
            description="On SIGTERM a worker takes no new job and lets running ones finish "
            "this long; then it hands the rest back to the queue, to resume elsewhere.",
        ),
    ] = 30.0


class ModelSettings(Struct, frozen=True, kw_only=True):
    """The model registry and model management, read from ``UML_<FIELD>`` (docs/models.md)."""

    models: Annotated[
        str,
        Meta(
            description="TOML file of the model registry (name -> path, engine, options); "
            "read by workers (what they can load) and the API (what is registered)."
        ),
    ] = ""
    load_on_demand: Annotated[
        bool,
        Meta(
            description="A request for a registered model no worker holds loads it on an "
            "eligible worker and waits, instead of answering 404."
        ),
    ] = True
    load_wait_s: Annotated[
        float,
        Meta(
            gt=0,
            description="Longest wait for a load: of a request that loads on demand, and of "
            "POST /load_model?wait=true.",
        ),
    ] = 120.0
    unload_drain_s: Annotated[
        float,
        Meta(
            gt=0,
            description="Longest an unload waits for the model's running jobs to finish "
            "before it frees the memory anyway.",
        ),
    ] = 600.0


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


class BatchSettings(Struct, frozen=True, kw_only=True):
    """Files and batches (``/v1/files``, ``/v1/batches``), read from ``UML_BATCH_<FIELD>``."""

    max_file_bytes: Annotated[
        int,
        Meta(
            ge=1024, description="Largest file /v1/files accepts (413 beyond); files live in Redis."
        ),
    ] = 64 * 1024 * 1024
    max_lines: Annotated[int, Meta(ge=1, description="Most requests in one batch input file.")] = (
        50_000
    )
    file_ttl_s: Annotated[
        int,
        Meta(ge=60, description="Seconds a file (input or output) and a batch record are kept."),
    ] = 30 * 24 * 3600
    inflight: Annotated[
        int,
        Meta(
            ge=1,
            description="Most jobs of one batch queued or running at once; the rest wait in the "
            "batch, leaving the model's queue to other work.",
        ),
    ] = 256
    tick_s: Annotated[
        float, Meta(gt=0, description="Seconds between the batch runner's passes.")
    ] = 0.25
    lease_s: Annotated[
        float,
        Meta(
            ge=1,
            description="The batch runner's lease: one API replica drives every batch; another "
            "takes over this long after it dies.",
        ),
    ] = 10.0
    quota_bytes: Annotated[
        int,
        Meta(
            ge=0,
            description="Bytes of files one key may keep, its uploads and its batches' outputs "
            "together; an upload past it gets 400 `storage_quota_exceeded`. 0: no limit.",
        ),
    ] = 512 * 1024 * 1024
    quota_files: Annotated[
        int,
        Meta(
            ge=0,
            description="Files one key may keep, uploads and batch outputs together; an upload "
            "past it gets 400 `storage_quota_exceeded`. 0: no limit.",
        ),
    ] = 1000


class FlowerSettings(Struct, frozen=True, kw_only=True):
    """``uml flower``, read from ``UML_FLOWER_<FIELD>``. The password is a secret: it is never
    logged or printed, and reaches Flower through its environment, not its command line."""

    user: Annotated[str, Meta(description="Flower basic-auth user, with UML_FLOWER_PASSWORD.")] = ""
    password: Annotated[str, Meta(description="Flower basic-auth password (a secret).")] = ""
    basic_auth: Annotated[
        str,
        Meta(
            description="Flower basic auth as `user:password[,user:password...]`, instead of "
            "UML_FLOWER_USER and UML_FLOWER_PASSWORD (a secret)."
        ),
    ] = ""
    address: Annotated[str, Meta(description="Address Flower listens on.")] = "127.0.0.1"
    port: Annotated[int, Meta(ge=1, le=65535, description="Port Flower listens on.")] = 5555

    def credentials(self) -> str:
        """The ``user:password`` list Flower checks; ValueError when none is set."""
        if self.basic_auth:
            pairs = [p.strip() for p in self.basic_auth.split(",") if p.strip()]
            if not pairs or any(":" not in p or p.startswith(":") for p in pairs):
                raise ValueError("UML_FLOWER_BASIC_AUTH must look like user:password[,...]")
            return ",".join(pairs)
        if self.user and self.password:
            return f"{self.user}:{self.password}"
        raise ValueError(
            "Flower needs basic auth: set UML_FLOWER_USER and UML_FLOWER_PASSWORD, "
            "or UML_FLOWER_BASIC_AUTH=user:password"
        )

    def __repr__(self) -> str:
        """Never show the password, even when a whole settings object gets logged."""
        return f"FlowerSettings(user={self.user!r}, address={self.address!r}, port={self.port})"


class LogSettings(Struct, frozen=True, kw_only=True):
    """Process logs, read from ``UML_LOG_<FIELD>`` (docs/operations.md, "Logs")."""

    format: Annotated[
        Literal["auto", "json", "text"],
        Meta(
            description="json (one object per line, with request and job ids), text, or auto: "
            "text on a terminal and under `uml dev`, json otherwise."
        ),
    ] = "auto"
    level: Annotated[str, Meta(description="Root log level (DEBUG, INFO, WARNING, ...).")] = "INFO"


class Settings(Struct, frozen=True, kw_only=True):
    redis: RedisSettings
    server: ServerSettings
    worker: WorkerSettings
    models: ModelSettings = msgspec.field(default_factory=ModelSettings)
    security: SecuritySettings = msgspec.field(default_factory=SecuritySettings)
    limits: LimitSettings = msgspec.field(default_factory=LimitSettings)
    batch: BatchSettings = msgspec.field(default_factory=BatchSettings)
    flower: FlowerSettings = msgspec.field(default_factory=FlowerSettings)
    log: LogSettings = msgspec.field(default_factory=LogSettings)


_PREFIXES: dict[type[Struct], str] = {
    RedisSettings: "UML_REDIS_",
    ServerSettings: "UML_",
    WorkerSettings: "UML_WORKER_",
    ModelSettings: "UML_",
    SecuritySettings: "UML_",
    LimitSettings: "UML_LIMIT_",
    BatchSettings: "UML_BATCH_",
    FlowerSettings: "UML_FLOWER_",
    LogSettings: "UML_LOG_",
}


def env_name(cls: type[Struct], field_name: str) -> str:
    return f"{_PREFIXES[cls]}{field_name.upper()}"


def load(cls: type[T], env: dict[str, str] | None = None) -> T:
    """Build ``cls`` from its environment variables; a bad value raises a clear ValueError."""
    env = dict(os.environ) if env is None else env
    values: dict[str, Any] = {}
    for name in cls.__struct_fields__:
        key = env_name(cls, name)
        if key in env:
            values[name] = env[key]
    if cls is RedisSettings and "url" not in values and env.get("REDIS_URL"):
        values["url"] = env["REDIS_URL"]
    try:
        return msgspec.convert(values, cls, strict=False)
    except msgspec.ValidationError as exc:
        raise ValueError(f"invalid setting for {cls.__name__}: {exc}") from None


@functools.cache
def get_settings() -> Settings:
    """The process's settings, read once."""
    return Settings(
        redis=load(RedisSettings),
        server=load(ServerSettings),
        worker=load(WorkerSettings),
        models=load(ModelSettings),
        security=load(SecuritySettings),
        limits=load(LimitSettings),
        batch=load(BatchSettings),
        flower=load(FlowerSettings),
        log=load(LogSettings),
    )


def describe() -> list[tuple[str, str, str]]:
    """(variable, default, description) for every setting: the sample config and --help."""
    rows: list[tuple[str, str, str]] = []
    for cls in _PREFIXES:
        hints = typing.get_type_hints(cls, include_extras=True)
        defaults = dict(zip(cls.__struct_fields__, cls.__struct_defaults__, strict=True))
        for name in cls.__struct_fields__:
            metas = [m for m in getattr(hints[name], "__metadata__", ()) if isinstance(m, Meta)]
            text = next((m.description for m in metas if m.description), "")
            rows.append((env_name(cls, name), repr(defaults[name]), text))
    return rows
