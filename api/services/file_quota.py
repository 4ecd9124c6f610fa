"""Per-key storage quota of ``/v1/files``: the bytes and the number of files one API key may
keep in Redis (``UML_BATCH_QUOTA_BYTES``, ``UML_BATCH_QUOTA_FILES``; docs/batches.md).

A key's usage is two Redis keys, :func:`~protocol.keys.file_usage_key` (file id → expiry)
and :func:`~protocol.keys.file_sizes_key` (file id → bytes)::

    upload ──► reserve_file-2.lua: drop expired ids, sum, refuse (400) or reserve ──┐
                                                                                    ▼
    MULTI: the file's hash + index + usage (score: the file's expiry) ◄──────── write
    DELETE /v1/files/{id}: MULTI removes the hash and its usage
    a file's TTL runs out: the next check drops its id (score <= now)

The check and the reservation are one script, so two concurrent uploads cannot both squeeze
under the limit. A reservation lapses by itself (:data:`RESERVATION_S`) if its API process
dies before the write; the write replaces it with the file's own expiry. A batch's output
files are counted when written but never refused: a batch's results are not lost to a quota.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import redis.asyncio as aioredis

from api.errors import APIError
from protocol import scripts
from protocol.keys import file_sizes_key, file_usage_key

RESERVATION_S = 300
"""How long an upload's reserved room waits for its write (which follows at once)."""


def over_quota(size: int, used: int, files: int, max_bytes: int, max_files: int) -> APIError:
    """400, as OpenAI answers for its storage limits."""
    limits = []
    if max_bytes:
        limits.append(f"{max_bytes} bytes")
    if max_files:
        limits.append(f"{max_files} files")
    return APIError(
        400,
        f"Storage quota exceeded: this key keeps {files} files of {used} bytes in all, and "
        f"may keep at most {' and '.join(limits)}; this upload adds {size} bytes. Delete "
        "files you no longer need (DELETE /v1/files/{file_id}), or wait for them to expire.",
        param="file",
        code="storage_quota_exceeded",
    )


class FileQuota:
    def __init__(self, redis: aioredis.Redis, max_bytes: int, max_files: int, ttl_s: int) -> None:
        self.redis = redis
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.ttl_s = ttl_s
        self._reserve = redis.register_script(scripts.load("reserve_file"))

    async def check(self, owner: str, size: int) -> None:
        """Refuse early a file of ``size`` bytes that would not fit (nothing is reserved)."""
        await self._run(owner, "", size)

    async def reserve(self, owner: str, file_id: str, size: int) -> None:
        """Hold room for ``file_id`` until its write (or :data:`RESERVATION_S`); or 400."""
        await self._run(owner, file_id, size)

    async def release(self, owner: str, file_id: str) -> None:
        """Give back a reservation whose write failed (best effort: it lapses anyway)."""
        with anyio.CancelScope(shield=True):
            async with self.redis.pipeline(transaction=True) as pipe:
                self.remove(pipe, owner, file_id)
                await pipe.execute()

    def add(self, pipe: Any, owner: str, file_id: str, size: int, expires_at: int) -> None:
        """Queue on ``pipe`` (the file's own MULTI) the commands that count the file."""
        usage, sizes = file_usage_key(owner), file_sizes_key(owner)
        pipe.zadd(usage, {file_id: expires_at})
        pipe.hset(sizes, file_id, size)
        pipe.expire(usage, self.ttl_s)
        pipe.expire(sizes, self.ttl_s)

    def remove(self, pipe: Any, owner: str, file_id: str) -> None:
        pipe.zrem(file_usage_key(owner), file_id)
        pipe.hdel(file_sizes_key(owner), file_id)

    async def _run(self, owner: str, file_id: str, size: int) -> None:
        if not self.max_bytes and not self.max_files:
            return
        now = int(time.time())
        lapses = now + RESERVATION_S
        fits, used, files = await self._reserve(
            keys=[file_usage_key(owner), file_sizes_key(owner)],
            args=[now, file_id, size, lapses, self.max_bytes, self.max_files, self.ttl_s],
        )
        if not fits:
            raise over_quota(size, int(used), int(files), self.max_bytes, self.max_files)
