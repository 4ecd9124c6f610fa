"""Job records in Redis as the API writes and reads them: one Lua script per operation
(``protocol/scripts/``: ``submit_job.lua``, ``read_job.lua``, ``cancel_job-2.lua``).

``submit`` checks the ``Idempotency-Key``, the key's share of the model's queue and the
queue's bound (both per priority, counted on the live queued jobs of
:mod:`protocol.queued`, so a cancelled job's message left in kombu's list holds no room),
then writes the job hash (with the Celery message kept in its ``msg`` field while queued,
for the queue position), pushes the message onto kombu's list, counts the job as queued,
indexes it under its owner and in ``uml:queued`` (for the workers' orphan sweep, see
:mod:`workers.reaper`) and stores the idempotency key: one atomic round trip, so a job is
recorded, queued, counted and indexed together or not at all, and the bound is exact.

``read`` and ``cancel`` answer ``None`` for a job of another key, exactly as for a missing
one (a ``cancel`` without an owner, the API's own for an abandoned call, takes any job). A
queued job past its deadline is expired by whichever script sees it first (the worker's
claim, a read, a cancel): status ``expired`` and a final event, atomically.

Queue position costs one ``LLEN`` per priority list of the model plus one ``LPOS`` over the
job's own list (a linear scan in Redis, at most the queue's bound plus the cancelled
messages not yet popped), and only for queued jobs. kombu ``LPUSH``\\es and pops from the
right, interactive list first.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from api.enqueue import queue_list, task_message
from protocol import scripts
from protocol.events import cancelled_unstarted, expired_unstarted, template
from protocol.jobs import JobRecord, from_hash, new_job_id, record_to_hash
from protocol.keys import (
    CELERY_PRIORITY_BATCH,
    CELERY_PRIORITY_INTERACTIVE,
    CELERY_PRIORITY_STEPS,
    IDEMPOTENCY_TTL_S,
    QUEUED,
    TASK_GENERATE,
    events_key,
    idempotency_key,
    job_key,
    jobs_index_key,
    queue_name,
    reply_text,
)
from protocol.queued import key_live_key, live_key
from protocol.settings import ServerSettings
from protocol.states import JobStatus, Priority

VIEW_FIELDS = tuple(f for f in JobRecord.__struct_fields__ if f not in ("spec", "cancel"))
"""The hash fields a listing reads (the spec and the queued message stay in Redis)."""


class QueueFull(Exception):
    """The model's queue of this priority holds its bound: the service is full (503)."""

    def __init__(self, queued: int, limit: int, priority: Priority) -> None:
        super().__init__(f"{queued} {priority.value} jobs are already queued for this model")
        self.queued = queued
        self.limit = limit
        self.priority = priority


class KeyShareFull(QueueFull):
    """This key holds its share of the model's queue of this priority: its own limit (429);
    other keys are still admitted."""


class IdempotencyConflict(Exception):
    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


@dataclass(frozen=True)
class Submitted:
    job_id: str
    replayed: bool = False
    """True when an ``Idempotency-Key`` named an existing job with the same body."""
    position: int | None = None
    """A new job's queue position (jobs ahead of it on its model) when it was pushed."""


@dataclass(frozen=True)
class Snapshot:
    record: JobRecord
    queue_position: int | None
    last_seq: int


def model_lists(model: str) -> list[str]:
    """kombu's lists of ``model``'s queue, in the order its consumers pop them."""
    queue = queue_name(model)
    return [queue_list(queue, step) for step in CELERY_PRIORITY_STEPS]


def _celery_priority(priority: Priority) -> int:
    if priority is Priority.INTERACTIVE:
        return CELERY_PRIORITY_INTERACTIVE
    return CELERY_PRIORITY_BATCH


@dataclass(frozen=True)
class QueueBounds:
    """How many jobs one model's queue holds per priority, and one key's share of them."""

    interactive: int
    batch: int
    share: float = 1.0
    """The fraction of a priority's bound one API key may hold queued (at least one job)."""
    retry_after_s: int = 5

    @classmethod
    def of(cls, server: ServerSettings) -> QueueBounds:
        return cls(
            interactive=server.max_queued_per_model,
            batch=server.max_queued_batch_per_model,
            share=server.queue_share_per_key,
            retry_after_s=server.queue_full_retry_after_s,
        )

    def bound(self, priority: Priority) -> int:
        return self.interactive if priority is Priority.INTERACTIVE else self.batch

    def per_key(self, priority: Priority) -> int:
        return max(1, math.floor(self.bound(priority) * self.share))

    def share_cap(self, priority: Priority) -> int:
        """What submission checks a key against: its share, or 0 when that is the whole
        bound (the queue is then simply full, 503, not the key over its share)."""
        cap = self.per_key(priority)
        return cap if cap < self.bound(priority) else 0


class JobStore:
    """The API's Redis operations on job records; built once per process."""

    def __init__(self, redis: aioredis.Redis, retention_s: int, bounds: QueueBounds) -> None:
        self.redis = redis
        self.retention_s = retention_s
        self.bounds = bounds
        self._submit = redis.register_script(scripts.load("submit_job"))
        self._read = redis.register_script(scripts.load("read_job"))
        self._cancel = redis.register_script(scripts.load("cancel_job"))
        self._expired = template(expired_unstarted())
        self._cancelled = template(cancelled_unstarted())

    async def submit(
        self,
        record: JobRecord,
        idem: str | None = None,
        body_hash: str = "",
    ) -> Submitted:
        """Queue ``record`` (its ``id`` is minted here); raise :class:`KeyShareFull`,
        :class:`QueueFull` or :class:`IdempotencyConflict`."""
        job_id = new_job_id()
        record.id = job_id
        owner = record.owner or ""
        queue = queue_name(record.model)
        priority = _celery_priority(record.priority)
        message = task_message(TASK_GENERATE, job_id, [job_id], queue, priority)
        lists = model_lists(record.model)
        target = lists.index(queue_list(queue, priority)) + 1
        cutoff = f"job-{int((time.time() - self.retention_s) * 1000):012x}"
        idem_key = idempotency_key(owner, idem) if idem else ""
        fields = [item for pair in record_to_hash(record).items() for item in pair]
        args: list[Any] = [
            self.retention_s,
            self.bounds.bound(record.priority),
            target,
            message,
            job_id,
            body_hash or "-",
            IDEMPOTENCY_TTL_S,
            cutoff,
            job_key(""),
            self.bounds.share_cap(record.priority),
            *fields,
        ]
        live = [
            live_key(record.priority, record.model),
            key_live_key(record.priority, owner, record.model),
        ]
        keys = [job_key(job_id), jobs_index_key(owner), idem_key, QUEUED, *live, *lists]
        reply = await self._submit(keys=keys, args=args)
        outcome, value = reply[0].decode(), reply[1].decode()
        if outcome == "share":
            raise KeyShareFull(int(value), self.bounds.per_key(record.priority), record.priority)
        if outcome == "full":
            raise QueueFull(int(value), self.bounds.bound(record.priority), record.priority)
        if outcome == "conflict":
            raise IdempotencyConflict(value)
        if outcome == "replay":
            return Submitted(value, replayed=True)
        return Submitted(value, position=int(reply[2]))

    async def read(self, job_id: str, owner: str) -> Snapshot | None:
        """The job as its owner sees it (expiring it first if its deadline passed)."""
        model = await self.redis.hget(job_key(job_id), "model")
        if model is None:
            return None
        keys = [job_key(job_id), events_key(job_id), *model_lists(reply_text(model))]
        args: list[Any] = [owner, time.time(), self.retention_s, self._expired]
        reply = await self._read(keys=keys, args=args)
        if not reply:
            return None
        flat, position, last = reply
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
        record = from_hash(fields)
        return Snapshot(record, None if position < 0 else int(position), int(last))

    async def cancel(self, job_id: str, owner: str | None) -> tuple[JobStatus, int] | None:
        """Cancel the job: a queued one ends now, a running one is flagged for its worker.

        ``owner`` scopes the cancel to that key's jobs (``POST /v1/jobs/{id}/cancel``, a
        WebSocket ``cancel``, a batch's stop); ``None`` is the API's own cancel of a call its
        client abandoned, whoever's job it is. Returns the job's status after the call and
        the last seq of its log; ``None`` if not found.
        """
        keys = [job_key(job_id), events_key(job_id)]
        args: list[Any] = [time.time(), self.retention_s, self._expired, self._cancelled]
        if owner is not None:
            args.append(owner)
        reply = await self._cancel(keys=keys, args=args)
        if not reply:
            return None
        status, last = reply
        return JobStatus(status.decode()), int(last)

    async def page(
        self, owner: str, after: str | None, limit: int, status: JobStatus | None, scan: int
    ) -> tuple[list[JobRecord], str | None, bool]:
        """Up to ``limit`` of ``owner``'s jobs after ``after``, newest first.

        Reads at most ``scan`` index entries; returns the jobs, the cursor to continue from
        (the last id examined) and whether more may follow.
        """
        start = f"({after}" if after else "+"
        found: list[JobRecord] = []
        cursor: str | None = None
        examined = 0
        index = jobs_index_key(owner)
        while len(found) < limit and examined < scan:
            batch = min(100, scan - examined)
            raw = await self.redis.zrevrangebylex(index, start, "-", 0, batch)
            ids = [reply_text(i) for i in raw]
            if not ids:
                return found, cursor, False
            records = await self._records(ids)
            for job_id, record in zip(ids, records, strict=True):
                examined += 1
                cursor = job_id
                if record is not None and (status is None or view_status(record) == status):
                    found.append(record)
                    if len(found) == limit:
                        break
            start = f"({cursor}"
        more = bool(await self.redis.zrevrangebylex(index, start, "-", 0, 1))
        return found, cursor, more

    async def _records(self, ids: Sequence[str]) -> list[JobRecord | None]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(job_key(job_id), VIEW_FIELDS)
            rows = await pipe.execute()
        out: list[JobRecord | None] = []
        for row in rows:
            fields = {k: v for k, v in zip(VIEW_FIELDS, row, strict=True) if v is not None}
            out.append(from_hash(fields) if "id" in fields else None)
        return out


def view_status(record: JobRecord, now: float | None = None) -> JobStatus:
    """The status a reader sees: a queued job past its deadline is ``expired``."""
    if record.status is JobStatus.QUEUED and record.deadline is not None:
        if record.deadline <= (time.time() if now is None else now):
            return JobStatus.EXPIRED
    return record.status
