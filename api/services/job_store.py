"""Job records in Redis as the API writes and reads them: one Lua script per operation.

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
from protocol.events import FINALIZE_LUA, cancelled_unstarted, expired_unstarted, template
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
from protocol.queued import QUEUED_LUA, key_live_key, live_key
from protocol.settings import ServerSettings
from protocol.states import JobStatus, Priority

# KEYS: job, owner index, idempotency key ('' for none), the queued index, the model's live
#       queued jobs of the job's priority, the owner's share of them, the model's lists by step.
# ARGV: retention, the priority's bound, index of the target list, message, job id, body
#       hash, idempotency TTL, trim cutoff id, job key prefix, the owner's share (0: none
#       below the bound), hash fields...
# Returns {'queued', id, jobs ahead} | {'replay'|'conflict', id} | {'share'|'full', count}.
_SUBMIT = (
    QUEUED_LUA
    + """
local idem = KEYS[3]
if idem ~= '' then
  local prev = redis.call('GET', idem)
  if prev then
    local id, hash = string.match(prev, '^(%S+) (%S+)$')
    if hash ~= ARGV[6] then return {'conflict', id} end
    if redis.call('EXISTS', ARGV[9] .. id) == 1 then return {'replay', id} end
  end
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local retention = tonumber(ARGV[1])
local stale = '(' .. (now_ms - retention * 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', stale)
redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', stale)
local mine = redis.call('ZCARD', KEYS[6])
if tonumber(ARGV[10]) > 0 and mine >= tonumber(ARGV[10]) then return {'share', tostring(mine)} end
local queued = redis.call('ZCARD', KEYS[5])
if queued >= tonumber(ARGV[2]) then return {'full', tostring(queued)} end
local ahead, target = 0, tonumber(ARGV[3])
for i = 7, 6 + target do ahead = ahead + redis.call('LLEN', KEYS[i]) end
redis.call('HSET', KEYS[1], 'msg', ARGV[4], unpack(ARGV, 11))
redis.call('EXPIRE', KEYS[1], retention)
mark_queued(KEYS[1], now_ms, retention * 1000)
redis.call('LPUSH', KEYS[6 + target], ARGV[4])
redis.call('ZADD', KEYS[4], now_ms, ARGV[5])
redis.call('ZADD', KEYS[2], 0, ARGV[5])
redis.call('ZREMRANGEBYLEX', KEYS[2], '-', '(' .. ARGV[8])
redis.call('EXPIRE', KEYS[2], retention)
if idem ~= '' then redis.call('SET', idem, ARGV[5] .. ' ' .. ARGV[6], 'EX', ARGV[7]) end
return {'queued', ARGV[5], ahead}
"""
)

_EXPIRE_IF_DUE = """
local function expire_if_due(job, events, now, template, retention)
  local f = redis.call('HMGET', job, 'status', 'deadline')
  if f[1] == 'queued' and f[2] and tonumber(f[2]) <= tonumber(now) then
    finalize(job, events, 'expired', now, template, retention)
  end
end
local function last_seq(events)
  local last = redis.call('XREVRANGE', events, '+', '-', 'COUNT', 1)
  if last[1] then return tonumber(string.match(last[1][1], '^(%d+)')) end
  return 0
end
"""

# KEYS: job, events, the model's lists by step. ARGV: owner, now, retention, expired event.
# Returns false (not found), or {fields (no msg, no spec), queue position or -1, last seq}.
_READ = (
    FINALIZE_LUA
    + _EXPIRE_IF_DUE
    + """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return false end
expire_if_due(KEYS[1], KEYS[2], ARGV[2], ARGV[4], tonumber(ARGV[3]))
local h = redis.call('HGETALL', KEYS[1])
local out, msg, status, prio = {}, false, nil, nil
for i = 1, #h, 2 do
  if h[i] == 'msg' then msg = h[i + 1]
  elseif h[i] ~= 'spec' then
    table.insert(out, h[i]); table.insert(out, h[i + 1])
    if h[i] == 'status' then status = h[i + 1] end
  end
end
local position = -1
if status == 'queued' and msg then
  position = 0
  for i = 3, #KEYS do
    local at = redis.call('LPOS', KEYS[i], msg)
    local n = redis.call('LLEN', KEYS[i])
    if at then position = position + n - 1 - at; break end
    position = position + n
  end
end
return {out, position, last_seq(KEYS[2])}
"""
)

# KEYS: job, events. ARGV: now, retention, expired event, cancelled event[, owner].
# With an owner, another key's job is not found; without, whoever's job it is.
# Returns false (not found), or {status after the call, last seq}.
_CANCEL = (
    FINALIZE_LUA
    + _EXPIRE_IF_DUE
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
if ARGV[5] and redis.call('HGET', KEYS[1], 'owner') ~= ARGV[5] then return false end
local retention = tonumber(ARGV[2])
expire_if_due(KEYS[1], KEYS[2], ARGV[1], ARGV[3], retention)
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'queued' then
  redis.call('HSET', KEYS[1], 'cancel', '1')
  finalize(KEYS[1], KEYS[2], 'cancelled', ARGV[1], ARGV[4], retention)
  status = 'cancelled'
elseif status == 'running' then
  redis.call('HSET', KEYS[1], 'cancel', '1')
end
return {status, last_seq(KEYS[2])}
"""
)

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
        self._submit = redis.register_script(_SUBMIT)
        self._read = redis.register_script(_READ)
        self._cancel = redis.register_script(_CANCEL)
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
