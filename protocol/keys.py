"""Every Redis key, Celery task name and queue name, built in one place."""

from __future__ import annotations

PREFIX = "uml"

TASK_GENERATE = "uml.generate"
"""The Celery task that runs one generation job; its only argument is the job id."""

WORKERS_SET = f"{PREFIX}:workers"
"""A set of worker ids that have sent a heartbeat; stale members are pruned by readers."""

LEASES = f"{PREFIX}:leases"
"""Running jobs' leases: a sorted set of job ids scored by lease expiry (Unix ms), set when
a worker claims a job, renewed with its heartbeats, removed when the job ends."""

QUEUED = f"{PREFIX}:queued"
"""Queued jobs: a sorted set of job ids scored by when their message was last seen queued
(Unix ms, Redis time); the reaper's orphan sweep re-pushes a message that vanished (kombu
pops with BRPOP, so a reply lost in a Redis restart loses the message)."""

KOMBU_UNACKED = "unacked"
"""kombu's hash of delivered, unacknowledged messages by delivery tag (its default name)."""
KOMBU_UNACKED_INDEX = "unacked_index"
"""kombu's sorted set of those delivery tags, scored by delivery time (Unix seconds)."""

REAPER_LOCK = f"{PREFIX}:reaper"
"""Held (with a TTL) by the one worker whose reaper pass is running."""

CONTROL_LOAD = "uml_load_model"
"""The Celery remote-control command that makes one worker load a model."""
CONTROL_UNLOAD = "uml_unload_model"
"""The Celery remote-control command that makes one worker unload a model."""
IDLE_QUEUE = "uml.idle"
"""The queue a worker holding no model consumes (nothing is ever sent to it)."""
MODEL_OP_TTL_S = 3600

# Celery priorities on the Redis transport: kombu keeps one list per priority step and
# pops the lowest number first, so interactive work uses the lower number.
CELERY_PRIORITY_INTERACTIVE = 0
CELERY_PRIORITY_BATCH = 6
CELERY_PRIORITY_STEPS = (0, 3, 6, 9)


APIKEYS_SET = f"{PREFIX}:apikeys"
"""A set of the ids of every stored API key (``uml keys list``, ``GET /admin/keys``)."""

KEY_CHANGES_CHANNEL = f"{PREFIX}:keys:changed"
"""Pub/sub channel: the id of every API key just revoked or rotated, so each API process
re-checks the connections it holds open with that key (see ``api/security/revocation.py``)."""

AUDIT_STREAM = f"{PREFIX}:audit"
"""The audit log: a capped stream of :class:`protocol.audit.AuditRecord` JSON in ``data``."""


def apikey_key(key_id: str) -> str:
    """One API key's record: JSON of :class:`protocol.auth.ApiKey` (hash only, no secret)."""
    return f"{PREFIX}:apikey:{key_id}"


def reply_text(value: bytes | str | None) -> str:
    """A Redis reply as text (redis-py answers bytes unless told otherwise); ``""`` for nil."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def job_key(job_id: str) -> str:
    """The job record: a Redis hash of :class:`protocol.jobs.JobRecord` fields."""
    return f"{PREFIX}:job:{job_id}"


def events_key(job_id: str) -> str:
    """The job's event log: a Redis stream with entry ids ``{seq}-1``."""
    return f"{PREFIX}:job:{job_id}:events"


def jobs_index_key(key_id: str) -> str:
    """One API key's jobs: a sorted set of job ids, all at score 0, so that ``BYLEX`` order
    is creation order (a job id starts with its creation time). Trimmed of ids older than
    the retention at each submission, and expiring a retention after the newest one."""
    return f"{PREFIX}:jobs:{key_id}"


def idempotency_key(key_id: str, idem: str) -> str:
    """``Idempotency-Key`` ``idem`` of API key ``key_id``: ``"{job id} {body sha256}"``, 24 h."""
    return f"{PREFIX}:idem:{key_id}:{idem}"


IDEMPOTENCY_TTL_S = 24 * 3600


def worker_key(worker_id: str) -> str:
    """A worker's heartbeat record (JSON, with a TTL of a few seconds)."""
    return f"{PREFIX}:worker:{worker_id}"


def model_op_key(op_id: str) -> str:
    """A load or unload operation: JSON of :class:`protocol.models.ModelOp`, kept an hour."""
    return f"{PREFIX}:modelop:{op_id}"


def ondemand_key(model: str) -> str:
    """The load on demand of ``model`` in flight: the id of its operation, TTL'd."""
    return f"{PREFIX}:ondemand:{model}"


def queue_name(model: str) -> str:
    """The Celery queue a worker consumes while it holds ``model``."""
    return f"model.{model}"


def entry_id(seq: int) -> str:
    """The explicit stream entry id of event ``seq``; Redis rejects duplicates and reorders."""
    return f"{seq}-1"


def seq_of(entry_id_: str | bytes) -> int:
    """The sequence number encoded in a stream entry id."""
    text = entry_id_.decode() if isinstance(entry_id_, bytes) else entry_id_
    return int(text.split("-", 1)[0])


EVENT_FIELD = "data"
"""The field of every stream entry that clients see; its value is one JSON-encoded event."""
IDS_FIELD = "ids"
"""A token event's entry also holds its token ids ("5,17,3") here: the worker that resumes
a job forces exactly these. Every other reader takes only ``EVENT_FIELD``."""


def broker_transport_options(socket_timeout_s: float = 10.0) -> dict[str, object]:
    """Kombu Redis transport options shared by the API (send side) and the workers.

    Priorities map onto :data:`CELERY_PRIORITY_STEPS`; the visibility timeout sits far above
    any job so kombu never redelivers on its own (crash recovery is the reaper's job); the
    socket options let both sides ride out a Redis restart.
    """
    return {
        "priority_steps": list(CELERY_PRIORITY_STEPS),
        "queue_order_strategy": "priority",
        "sep": ":",
        "visibility_timeout": 7 * 24 * 3600,
        "socket_timeout": socket_timeout_s,
        "socket_connect_timeout": socket_timeout_s,
        "socket_keepalive": True,
        "health_check_interval": 10,
        "retry_on_timeout": True,
    }


def ratelimit_key(key_id: str, window: str) -> str:
    """One API key's counter for ``window`` (rpm, rph, burst, tpm): a hash ``w``, ``c``, ``p``.

    The ``{key_id}`` hash tag keeps all of a key's counters in one cluster slot.
    """
    return f"{PREFIX}:rl:{{{key_id}}}:{window}"


def streams_key(key_id: str) -> str:
    """One API key's open streams: a sorted set of lease tokens scored by lease expiry (ms)."""
    return f"{PREFIX}:rl:{{{key_id}}}:streams"


def sockets_key(key_id: str) -> str:
    """One API key's open WebSockets: a sorted set of lease tokens scored by lease expiry."""
    return f"{PREFIX}:rl:{{{key_id}}}:sockets"


def file_key(file_id: str) -> str:
    """An uploaded or produced file: a hash of its :class:`protocol.batches.FileObject` fields,
    ``owner`` and ``content`` (the bytes), with the file retention as TTL."""
    return f"{PREFIX}:file:{file_id}"


def files_index_key(key_id: str) -> str:
    """One API key's files: a sorted set of file ids at score 0 (``BYLEX`` = creation order)."""
    return f"{PREFIX}:files:{key_id}"


def file_usage_key(key_id: str) -> str:
    """One API key's stored files, for its quota: a sorted set of file ids scored by when
    each expires (Unix s); an upload's reservation is scored by when it lapses."""
    return f"{PREFIX}:fileuse:{{{key_id}}}"


def file_sizes_key(key_id: str) -> str:
    """The bytes of each file in :func:`file_usage_key` (a hash: file id → bytes)."""
    return f"{PREFIX}:fileuse:{{{key_id}}}:bytes"


def batch_key(batch_id: str) -> str:
    """A batch: a hash of its scalar fields, counters and JSON parts (``errors``, ``metadata``)."""
    return f"{PREFIX}:batch:{batch_id}"


def batch_part_key(batch_id: str, part: str) -> str:
    """A batch's working set, deleted when it ends: ``todo`` (list of prepared lines),
    ``pending`` (set of its queued or running job ids), ``out`` and ``err`` (lists of output
    lines)."""
    return f"{PREFIX}:batch:{batch_id}:{part}"


def batches_index_key(key_id: str) -> str:
    """One API key's batches: a sorted set of batch ids at score 0 (creation order)."""
    return f"{PREFIX}:batches:{key_id}"


BATCHES_ACTIVE = f"{PREFIX}:batches:active"
"""A set of the ids of batches that are not finished; the batch runner drives each."""

BATCH_RUNNER_LEASE = f"{PREFIX}:batches:runner"
"""The batch runner's lease: the id of the API process driving every batch, with a TTL."""
