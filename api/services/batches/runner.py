"""The batch runner: drives every unfinished batch, in whichever API replica holds its lease.

Each API process runs one :class:`BatchRunner` task. Every ``tick_s`` it tries to take (or
renew) the lease ``uml:batches:runner``; the holder advances each batch in
``uml:batches:active`` one step (see :mod:`api.services.batches` for the states). If the
holder dies another replica takes over when the lease lapses, and carries on where it
stopped: every step is idempotent.

- *validating* (:mod:`~api.services.batches.validate`): parse the input file (in a
  thread), write the runnable lines to the batch's ``todo`` list and the invalid ones to
  ``err``; drop lines for models nobody serves.
- *in_progress*: move finished jobs from ``pending`` to ``out``/``err`` (their lines made by
  :mod:`~api.services.batches.results`; one script per job: a result is recorded exactly
  once); then submit ``todo`` lines from the cursor until
  ``inflight`` jobs of the batch are queued or running. A line is submitted with the
  ``Idempotency-Key`` ``batch:{id}:{line}``, so a submission repeated after a crash
  returns the same job. Jobs are batch priority, with the batch's expiry as deadline.
- *cancelling* / expiry: cancel the pending jobs once, keep collecting until none is left,
  write a ``batch_cancelled`` / ``batch_expired`` error line for each line that did not
  finish, then finalize.
- *finalizing*: write the output and error files and the final state in one transaction.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Any

import anyio
import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError, WatchError

from api.services.batches.parse import Prepared, error_line
from api.services.batches.results import JOB_FIELDS, STOPPED, result_line
from api.services.batches.store import BatchStore
from api.services.batches.validate import Validator
from api.services.files import FileStore
from api.services.job_store import JobStore, QueueFull
from api.services.models import LiveModels
from protocol import scripts
from protocol.batches import BatchStatus
from protocol.jobs import queued_record
from protocol.keys import (
    BATCH_RUNNER_LEASE,
    BATCHES_ACTIVE,
    batch_key,
    batch_part_key,
    job_key,
    reply_text,
)
from protocol.settings import Settings
from protocol.states import TERMINAL, JobStatus, Priority

log = logging.getLogger(__name__)

_prepared = msgspec.json.Decoder(Prepared)
_encode = msgspec.json.encode


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


class BatchRunner:
    def __init__(
        self,
        redis: aioredis.Redis,
        settings: Settings,
        store: JobStore,
        files: FileStore,
        models: LiveModels,
        batches: BatchStore,
    ) -> None:
        self.redis = redis
        self.cfg = settings.batch
        self.store = store
        self.files = files
        self.batches = batches
        self.validator = Validator(redis, settings, models, batches)
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._lease = redis.register_script(scripts.load("lock"))
        self._unlock = redis.register_script(scripts.load("unlock"))
        self._settle = redis.register_script(scripts.load("settle_batch_line"))
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="uml-batch-runner")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task], timeout=5)
            try:
                await self._unlock(keys=[BATCH_RUNNER_LEASE], args=[self.holder])
            except RedisError:
                pass

    def poke(self) -> None:
        """Run a pass now (a batch was created or cancelled in this process)."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                await self.pass_once()
            except asyncio.CancelledError:
                raise
            except RedisError as exc:
                log.warning("batch runner: redis unavailable: %s", exc)
            except Exception:
                log.exception("batch runner pass failed")
            with anyio.move_on_after(self.cfg.tick_s):
                await self._wake.wait()
            self._wake.clear()

    async def pass_once(self) -> bool:
        """Advance every active batch one step if this process holds the lease (taken only
        while some batch is unfinished: an idle pass costs one SCARD)."""
        if not await self.redis.scard(BATCHES_ACTIVE):
            return False
        ttl_ms = int(self.cfg.lease_s * 1000)
        if not await self._lease(keys=[BATCH_RUNNER_LEASE], args=[self.holder, ttl_ms]):
            return False
        for raw in await self.redis.smembers(BATCHES_ACTIVE):
            batch_id = reply_text(raw)
            try:
                await self.advance(batch_id)
            except (RedisError, asyncio.CancelledError):
                raise
            except Exception:
                log.exception("batch %s: step failed", batch_id)
        return True

    async def advance(self, batch_id: str) -> None:
        fields = {
            reply_text(k): reply_text(v)
            for k, v in (await self.redis.hgetall(batch_key(batch_id))).items()
        }
        status = fields.get("status")
        if status is None or status in (
            BatchStatus.COMPLETED,
            BatchStatus.FAILED,
            BatchStatus.EXPIRED,
            BatchStatus.CANCELLED,
        ):
            await self.redis.srem(BATCHES_ACTIVE, batch_id)
            return
        if status == BatchStatus.VALIDATING:
            await self.validator.run(batch_id, fields)
            return
        if status == BatchStatus.FINALIZING:
            await self._finalize(batch_id, fields, BatchStatus.FINALIZING, BatchStatus.COMPLETED)
            return
        reason = fields.get("stop_reason")
        if not reason and time.time() >= float(fields.get("expires_at") or "inf"):
            await self.redis.hset(batch_key(batch_id), "stop_reason", "expired")
            reason = "expired"
        await self._collect(batch_id, fields, reason or None)
        if reason:
            await self._stop(batch_id, fields, reason)
            return
        done_feeding = await self._feed(batch_id, fields)
        if done_feeding and not await self.redis.scard(batch_part_key(batch_id, "pending")):
            if await self.batches.move(batch_id, status, BatchStatus.FINALIZING):
                await self._finalize(
                    batch_id, fields, BatchStatus.FINALIZING, BatchStatus.COMPLETED
                )

    # ---- in progress ---------------------------------------------------------------------

    async def _feed(self, batch_id: str, fields: dict[str, str]) -> bool:
        """Submit lines until ``inflight`` are out; True once every line is submitted."""
        key = batch_key(batch_id)
        raw_cursor, raw_len = await self.redis.hmget(key, ["cursor", "todo_len"])
        cursor, todo_len = int(raw_cursor or 0), int(raw_len or 0)
        if cursor >= todo_len:
            return True
        pending = batch_part_key(batch_id, "pending")
        room = self.cfg.inflight - await self.redis.scard(pending)
        if room <= 0:
            return False
        raw = await self.redis.lrange(batch_part_key(batch_id, "todo"), cursor, cursor + room - 1)
        owner = fields.get("owner", "")
        deadline = float(fields["expires_at"])
        for offset, item in enumerate(raw):
            prepared = _prepared.decode(item)
            metadata = {"batch_id": batch_id, "custom_id": prepared.custom_id}
            record = queued_record(prepared.spec, owner, Priority.BATCH, deadline, metadata)
            try:
                submitted = await self.store.submit(
                    record, f"batch:{batch_id}:{prepared.line}", batch_id
                )
            except QueueFull:
                return False
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.sadd(pending, submitted.job_id)
                pipe.expire(pending, self.cfg.file_ttl_s)
                pipe.hset(key, "cursor", cursor + offset + 1)
                await pipe.execute()
        return cursor + len(raw) >= todo_len

    async def _collect(self, batch_id: str, fields: dict[str, str], reason: str | None) -> None:
        """Record the line of every pending job that has finished."""
        pending = batch_part_key(batch_id, "pending")
        ids = [reply_text(i) for i in await self.redis.smembers(pending)]
        if not ids:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(job_key(job_id), JOB_FIELDS)
            rows = await pipe.execute()
        keys = [
            batch_key(batch_id),
            pending,
            batch_part_key(batch_id, "out"),
            batch_part_key(batch_id, "err"),
        ]
        for job_id, row in zip(ids, rows, strict=True):
            job = dict(zip(JOB_FIELDS, row, strict=True))
            status = reply_text(job["status"])
            if status and JobStatus(status) not in TERMINAL:
                continue
            target, line, usage = result_line(fields["endpoint"], job_id, job, reason)
            ok = target == "out"
            await self._settle(
                keys=keys,
                args=[
                    job_id,
                    target,
                    _encode(line),
                    int(ok),
                    int(not ok),
                    usage.prompt_tokens if usage else 0,
                    usage.completion_tokens if usage else 0,
                ],
            )

    # ---- stopping and finalizing ---------------------------------------------------------

    async def _stop(self, batch_id: str, fields: dict[str, str], reason: str) -> None:
        """Cancel the batch's pending jobs once; when none is left, finalize."""
        key = batch_key(batch_id)
        pending = batch_part_key(batch_id, "pending")
        if not fields.get("stop_sent"):
            owner = fields.get("owner", "")
            for raw in await self.redis.smembers(pending):
                await self.store.cancel(reply_text(raw), owner)
            await self.redis.hset(key, "stop_sent", "1")
            await self._collect(batch_id, fields, reason)
        if await self.redis.scard(pending):
            return
        status = fields["status"]
        final = BatchStatus.CANCELLED if reason == "cancelled" else BatchStatus.EXPIRED
        await self._finalize(batch_id, fields, status, final, unfinished=reason)

    async def _unfinished_lines(self, batch_id: str, reason: str) -> list[bytes]:
        """An error line for each todo line never submitted."""
        cursor = int(await self.redis.hget(batch_key(batch_id), "cursor") or 0)
        code, message = STOPPED[reason]
        lines: list[bytes] = []
        for item in await self.redis.lrange(batch_part_key(batch_id, "todo"), cursor, -1):
            p = _prepared.decode(item)
            lines.append(_encode(error_line(batch_id, p.line, p.custom_id, code, message)))
        return lines

    async def _finalize(
        self,
        batch_id: str,
        fields: dict[str, str],
        from_status: str,
        final: str,
        unfinished: str | None = None,
    ) -> None:
        """Write the output and error files and the final state in one transaction."""
        key = batch_key(batch_id)
        parts = [batch_part_key(batch_id, p) for p in ("todo", "pending", "out", "err")]
        extra = await self._unfinished_lines(batch_id, unfinished) if unfinished else []
        owner = fields.get("owner", "")
        async with self.redis.pipeline(transaction=True) as pipe:
            await pipe.watch(key)
            if reply_text(await pipe.hget(key, "status")) != from_status:
                return  # another runner got here first
            out = [_bytes(line) for line in await pipe.lrange(parts[2], 0, -1)]
            err = [_bytes(line) for line in await pipe.lrange(parts[3], 0, -1)] + extra
            pipe.multi()  # type: ignore[no-untyped-call]
            now = int(time.time())
            updates: dict[Any, str | int] = {"status": final, f"{final}_at": now}
            if extra:
                pipe.hincrby(key, "failed", len(extra))
            for name, lines in (("output", out), ("error", err)):
                if not lines:
                    continue
                content = b"\n".join(lines) + b"\n"
                obj = self.files.fields(
                    owner, f"batch_{batch_id}_{name}.jsonl", "batch_output", content
                )
                self.files.write(pipe, owner, obj, content)
                updates[f"{name}_file_id"] = obj.id
            pipe.hset(key, mapping=updates)
            pipe.delete(*parts)
            pipe.srem(BATCHES_ACTIVE, batch_id)
            try:
                await pipe.execute()
            except WatchError:
                return
        log.info(
            "batch %s %s: %d output lines, %d error lines", batch_id, final, len(out), len(err)
        )
