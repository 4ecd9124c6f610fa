"""Batch records (``/v1/batches``): create, read, list and cancel, as the API does them.

A batch is the hash ``uml:batch:{id}`` (:func:`to_batch` reads it); its input file is
checked by :mod:`api.services.batches.parse` and the batch is driven by
:class:`api.services.batches.runner.BatchRunner` (the states are drawn in
:mod:`api.services.batches`).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from typing import Any

import msgspec
import redis.asyncio as aioredis

from api import validation
from api.errors import APIError, invalid_request
from api.services.files import FileStore
from api.services.paging import newest_first
from protocol import scripts
from protocol.batches import (
    BATCH_ENDPOINTS,
    BATCH_TERMINAL,
    COMPLETION_WINDOW_S,
    Batch,
    BatchCreate,
    BatchErrors,
    BatchStatus,
    BatchUsage,
    RequestCounts,
)
from protocol.keys import BATCHES_ACTIVE, batch_key, batches_index_key, reply_text

_create_decoder = msgspec.json.Decoder(BatchCreate)

_TIMES = (
    "created_at",
    "in_progress_at",
    "expires_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)


def new_batch_id() -> str:
    """Sortable by creation time, unguessable."""
    return f"batch_{int(time.time() * 1000):012x}{secrets.token_hex(8)}"


def not_found(batch_id: str) -> APIError:
    return APIError(404, f"No batch with id `{batch_id}`", param="batch_id", code="batch_not_found")


def _creation(body: bytes) -> BatchCreate:
    req = validation.decode(_create_decoder, body)
    if req.endpoint not in BATCH_ENDPOINTS:
        raise invalid_request(
            f"endpoint must be one of {', '.join(BATCH_ENDPOINTS)}",
            param="endpoint",
            code="unsupported_parameter",
        )
    if req.completion_window not in COMPLETION_WINDOW_S:
        raise invalid_request(
            f"completion_window must be one of {', '.join(COMPLETION_WINDOW_S)}",
            param="completion_window",
        )
    validation.check_metadata(req.metadata or {})
    return req


def to_batch(raw: dict[Any, Any]) -> Batch:
    """A batch hash (as HGETALL returns it) → the wire object."""
    f = {reply_text(k): reply_text(v) for k, v in raw.items()}

    def num(name: str) -> int:
        return int(f.get(name) or 0)

    def opt(name: str) -> int | None:
        value = f.get(name)
        return int(value) if value else None

    errors = f.get("errors")
    metadata = f.get("metadata")
    output_tokens = num("output_tokens")
    input_tokens = num("input_tokens")
    times: dict[str, Any] = {name: opt(name) for name in _TIMES}
    times["created_at"] = num("created_at")
    return Batch(
        id=f["id"],
        endpoint=f["endpoint"],
        errors=msgspec.json.decode(errors, type=BatchErrors) if errors else None,
        input_file_id=f["input_file_id"],
        completion_window=f["completion_window"],
        status=f["status"],
        output_file_id=f.get("output_file_id") or None,
        error_file_id=f.get("error_file_id") or None,
        request_counts=RequestCounts(
            total=num("total"), completed=num("completed"), failed=num("failed")
        ),
        usage=BatchUsage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            total_tokens=input_tokens + output_tokens,
        ),
        metadata=msgspec.json.decode(metadata) if metadata else None,
        model=f.get("model") or None,
        **times,
    )


class BatchStore:
    """The API's Redis operations on batch records."""

    def __init__(self, redis: aioredis.Redis, files: FileStore, ttl_s: int) -> None:
        self.redis = redis
        self.files = files
        self.ttl_s = ttl_s
        self._cancel = redis.register_script(scripts.load("cancel_batch"))
        self._move = redis.register_script(scripts.load("move_batch"))

    async def create(self, owner: str, body: bytes) -> Batch:
        req = _creation(body)
        source = await self.files.get(owner, req.input_file_id)
        if source.purpose != "batch":
            raise invalid_request(
                f"File `{source.id}` has purpose `{source.purpose}`, not `batch`",
                param="input_file_id",
            )
        batch_id = new_batch_id()
        now = int(time.time())
        fields: dict[Any, str | int] = {
            "id": batch_id,
            "owner": owner,
            "endpoint": req.endpoint,
            "input_file_id": req.input_file_id,
            "completion_window": req.completion_window,
            "status": BatchStatus.VALIDATING,
            "created_at": now,
            "expires_at": now + COMPLETION_WINDOW_S[req.completion_window],
        }
        if req.metadata:
            fields["metadata"] = msgspec.json.encode(req.metadata).decode()
        key = batch_key(batch_id)
        index = batches_index_key(owner)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields)
            pipe.expire(key, self.ttl_s)
            pipe.zadd(index, {batch_id: 0})
            pipe.expire(index, self.ttl_s)
            pipe.sadd(BATCHES_ACTIVE, batch_id)
            await pipe.execute()
        return to_batch(fields)

    async def get(self, owner: str, batch_id: str) -> Batch:
        raw = await self.redis.hgetall(batch_key(batch_id))
        if not raw or reply_text(raw.get(b"owner", b"")) != owner:
            raise not_found(batch_id)
        return to_batch(raw)

    async def cancel(self, owner: str, batch_id: str) -> Batch:
        outcome = await self._cancel(keys=[batch_key(batch_id)], args=[owner, int(time.time())])
        if not outcome:
            raise not_found(batch_id)
        status = reply_text(outcome)
        if status in BATCH_TERMINAL or status == BatchStatus.FINALIZING:
            if status != BatchStatus.CANCELLED:
                raise APIError(
                    409,
                    f"A batch that is {status} cannot be cancelled",
                    param="batch_id",
                    code="batch_not_cancellable",
                )
        return await self.get(owner, batch_id)

    async def move(self, batch_id: str, from_status: str, to_status: str) -> bool:
        """Move the batch to ``to_status`` (stamping ``{to_status}_at``) only if it is in
        ``from_status``: a step repeated after a takeover moves nothing twice."""
        args: list[str | int] = [from_status, to_status, f"{to_status}_at", int(time.time())]
        return bool(await self._move(keys=[batch_key(batch_id)], args=args))

    async def page(self, owner: str, after: str | None, limit: int) -> tuple[list[Batch], bool]:
        return await newest_first(self.redis, batches_index_key(owner), after, limit, self._load)

    async def _load(self, ids: Sequence[str]) -> list[Batch | None]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for batch_id in ids:
                pipe.hgetall(batch_key(batch_id))
            rows = await pipe.execute()
        return [to_batch(raw) if raw else None for raw in rows]
