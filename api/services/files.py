"""Files (``/v1/files``): batch input files uploaded by clients and the output files batches
write, kept in Redis.

Why Redis: every API replica already reads it, it is the durable store for jobs (AOF), and a
file is read whole by one batch runner or one download, so no shared filesystem or object
store is needed to run several replicas. The cost is memory, bounded by
``UML_BATCH_MAX_FILE_BYTES`` per file, the per-key quota (:mod:`api.services.file_quota`)
and the file retention (``UML_BATCH_FILE_TTL_S``).

A file is one hash ``uml:file:{id}``: its :class:`protocol.batches.FileObject` fields, the
owning key id and ``content``. Another key's file answers 404, as a missing one does.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from api.errors import APIError
from api.services.file_quota import FileQuota
from api.services.paging import newest_first
from protocol.batches import FileObject
from protocol.keys import file_key, files_index_key, reply_text

META_FIELDS = ("id", "bytes", "created_at", "filename", "purpose", "expires_at", "owner")


def new_file_id() -> str:
    """Sortable by creation time, unguessable."""
    return f"file-{int(time.time() * 1000):012x}{secrets.token_hex(8)}"


def not_found(file_id: str) -> APIError:
    return APIError(404, f"No file with id `{file_id}`", param="file_id", code="file_not_found")


def _object(fields: dict[str, str]) -> FileObject:
    expires = fields.get("expires_at")
    return FileObject(
        id=fields["id"] or "",
        bytes=int(fields["bytes"] or 0),
        created_at=int(fields["created_at"] or 0),
        filename=fields["filename"] or "",
        purpose=fields["purpose"] or "",
        expires_at=int(expires) if expires else None,
    )


class FileStore:
    def __init__(self, redis: aioredis.Redis, ttl_s: int, quota: FileQuota) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self.quota = quota

    def fields(self, owner: str, filename: str, purpose: str, content: bytes) -> FileObject:
        now = int(time.time())
        return FileObject(
            id=new_file_id(),
            bytes=len(content),
            created_at=now,
            filename=filename,
            purpose=purpose,
            expires_at=now + self.ttl_s,
        )

    def write(self, pipe: Any, owner: str, obj: FileObject, content: bytes) -> None:
        """Queue the commands that store ``obj`` on ``pipe`` (a MULTI the caller runs)."""
        key = file_key(obj.id)
        pipe.hset(
            key,
            mapping={
                "id": obj.id,
                "bytes": obj.bytes,
                "created_at": obj.created_at,
                "filename": obj.filename,
                "purpose": obj.purpose,
                "expires_at": obj.expires_at or "",
                "owner": owner,
                "content": content,
            },
        )
        pipe.expire(key, self.ttl_s)
        index = files_index_key(owner)
        pipe.zadd(index, {obj.id: 0})
        pipe.expire(index, self.ttl_s)
        self.quota.add(pipe, owner, obj.id, obj.bytes, obj.expires_at or 0)

    async def create(self, owner: str, filename: str, purpose: str, content: bytes) -> FileObject:
        """Store an upload, within the key's quota (400 ``storage_quota_exceeded`` beyond)."""
        obj = self.fields(owner, filename, purpose, content)
        await self.quota.reserve(owner, obj.id, obj.bytes)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                self.write(pipe, owner, obj, content)
                await pipe.execute()
        except BaseException:
            await self.quota.release(owner, obj.id)
            raise
        return obj

    async def get(self, owner: str, file_id: str) -> FileObject:
        raw = await self.redis.hmget(file_key(file_id), META_FIELDS)
        fields = {k: reply_text(v) for k, v in zip(META_FIELDS, raw, strict=True)}
        if not fields["id"] or fields["owner"] != owner:
            raise not_found(file_id)
        return _object(fields)

    async def content(self, owner: str, file_id: str) -> bytes:
        key = file_key(file_id)
        found_owner, content = await self.redis.hmget(key, ["owner", "content"])
        if reply_text(found_owner) != owner or content is None:
            raise not_found(file_id)
        return content if isinstance(content, bytes) else content.encode()

    async def delete(self, owner: str, file_id: str) -> None:
        await self.get(owner, file_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(file_key(file_id))
            pipe.zrem(files_index_key(owner), file_id)
            self.quota.remove(pipe, owner, file_id)
            await pipe.execute()

    async def page(
        self, owner: str, after: str | None, limit: int, purpose: str | None
    ) -> tuple[list[FileObject], bool]:
        """Up to ``limit`` of ``owner``'s files after ``after``, newest first; and whether
        more follow. Ids whose file expired are dropped from the index as they are met."""
        return await newest_first(
            self.redis,
            files_index_key(owner),
            after,
            limit,
            self._objects,
            lambda obj: purpose is None or obj.purpose == purpose,
        )

    async def _objects(self, ids: Sequence[str]) -> list[FileObject | None]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for file_id in ids:
                pipe.hmget(file_key(file_id), META_FIELDS)
            rows = await pipe.execute()
        out: list[FileObject | None] = []
        for row in rows:
            fields = {k: reply_text(v) for k, v in zip(META_FIELDS, row, strict=True)}
            out.append(_object(fields) if fields["id"] else None)
        return out
