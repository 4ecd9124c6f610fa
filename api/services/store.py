"""Job records in Redis as the API writes and reads them: one Lua script per operation.

``submit`` checks the ``Idempotency-Key``, the model's queue bound, then writes the job hash
(with the Celery message kept in its ``msg`` field while queued, for the queue position),
pushes the message onto kombu's list, indexes the job under its owner and in
``uml:queued`` (for the workers' orphan sweep, see :mod:`workers.reaper`) and stores the
idempotency key: one atomic round trip, so a job is recorded, queued and indexed together
or not at all.

``read`` and ``cancel`` answer ``None`` for a job of another key, exactly as for a missing
one. A queued job past its deadline is expired by whichever script sees it first (the
worker's claim, a read, a cancel): status ``expired`` and a final event, atomically.

Queue position costs one ``LLEN`` per priority list of the model plus one ``LPOS`` over the
job's own list (a linear scan in Redis, at most ``max_queued_per_model`` entries), and only
for queued jobs. kombu ``LPUSH``\\es and pops from the right, interactive list first.
"""

from __future__ import annotations

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
from protocol.states import JobStatus, Priority

# KEYS: job, owner index, idempotency key ('' for none), the queued index, the model's
#       lists by step.
# ARGV: retention, max queued, index of the target list, message, job id, body hash,
#       idempotency TTL, trim cutoff id, job key prefix, hash fields...
_SUBMIT = """
local idem = KEYS[3]
if idem ~= '' then
  local prev = redis.call('GET', idem)
  if prev then
    local id, hash = string.match(prev, '^(%S+) (%S+)$')
    if hash ~= ARGV[6] then return {'conflict', id} end
    if redis.call('EXISTS', ARGV[9] .. id) == 1 then return {'replay', id} end
  end
end
local queued, ahead, target = 0, 0, tonumber(ARGV[3])
for i = 5, #KEYS do
  local n = redis.call('LLEN', KEYS[i])
  queued = queued + n
  if i - 4 <= target then ahead = ahead + n end
end
if queued >= tonumber(ARGV[2]) then return {'full', tostring(queued)} end
local retention = tonumber(ARGV[1])
redis.call('HSET', KEYS[1], 'msg', ARGV[4], unpack(ARGV, 10))
redis.call('EXPIRE', KEYS[1], retention)
redis.call('LPUSH', KEYS[4 + target], ARGV[4])
local t = redis.call('TIME')
redis.call('ZADD', KEYS[4], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), ARGV[5])
redis.call('ZADD', KEYS[2], 0, ARGV[5])
redis.call('ZREMRANGEBYLEX', KEYS[2], '-', '(' .. ARGV[8])
redis.call('EXPIRE', KEYS[2], retention)
if idem ~= '' then redis.call('SET', idem, ARGV[5] .. ' ' .. ARGV[6], 'EX', ARGV[7]) end
return {'queued', ARGV[5], ahead}
"""

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

# KEYS: job, events. ARGV: owner, now, retention, expired event, cancelled event.
# Returns false (not found), or {status after the call, last seq}.
_CANCEL = (
    FINALIZE_LUA
    + _EXPIRE_IF_DUE
    + """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return false end
local retention = tonumber(ARGV[3])
expire_if_due(KEYS[1], KEYS[2], ARGV[2], ARGV[4], retention)
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'queued' then
  redis.call('HSET', KEYS[1], 'cancel', '1')
  finalize(KEYS[1], KEYS[2], 'cancelled', ARGV[2], ARGV[5], retention)
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
    def __init__(self, queued: int) -> None:
        super().__init__(f"{queued} jobs are already queued for this model")
        self.queued = queued


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


class JobStore:
    """The API's Redis operations on job records; built once per process."""

    def __init__(
        self, redis: aioredis.Redis, retention_s: int, max_queued: int, retry_after_s: int = 5
    ) -> None:
        self.redis = redis
        self.retention_s = retention_s
        self.max_queued = max_queued
        self.retry_after_s = retry_after_s
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
        """Queue ``record`` (its ``id`` is minted here); raise :class:`QueueFull` or
        :class:`IdempotencyConflict`."""
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
            self.max_queued,
            target,
            message,
            job_id,
            body_hash or "-",
            IDEMPOTENCY_TTL_S,
            cutoff,
            job_key(""),
            *fields,
        ]
        keys = [job_key(job_id), jobs_index_key(owner), idem_key, QUEUED, *lists]
        reply = await self._submit(keys=keys, args=args)
        outcome, value = reply[0].decode(), reply[1].decode()
        if outcome == "full":
            raise QueueFull(int(value))
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

    async def cancel(self, job_id: str, owner: str) -> tuple[JobStatus, int] | None:
        """Cancel the job: a queued one ends now, a running one is flagged for its worker.

        Returns its status after the call and the last seq of its log; ``None`` if not found.
        """
        keys = [job_key(job_id), events_key(job_id)]
        args: list[Any] = [owner, time.time(), self.retention_s, self._expired, self._cancelled]
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
