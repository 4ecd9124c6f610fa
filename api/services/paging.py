"""Newest-first pages over an owner's index (a sorted set of ids at score 0, ``BYLEX`` =
creation order), for the files and batches listings."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import redis.asyncio as aioredis

T = TypeVar("T")

READ = 100
"""Ids read from the index per round trip."""


async def newest_first(
    redis: aioredis.Redis,
    index: str,
    after: str | None,
    limit: int,
    load: Callable[[Sequence[str]], Awaitable[Sequence[T | None]]],
    keep: Callable[[T], bool] = lambda _: True,
) -> tuple[list[T], bool]:
    """Up to ``limit`` objects after ``after`` that ``keep`` accepts, and whether more ids
    follow. ``load`` reads a batch of ids (``None`` for one that expired: its id is dropped
    from the index as it is met)."""
    start = f"({after}" if after else "+"
    found: list[T] = []
    while len(found) < limit:
        raw = await redis.zrevrangebylex(index, start, "-", 0, READ)
        ids = [i.decode() if isinstance(i, bytes) else str(i) for i in raw]
        if not ids:
            return found, False
        gone: list[str] = []
        for item_id, item in zip(ids, await load(ids), strict=True):
            start = f"({item_id}"
            if item is None:
                gone.append(item_id)
            elif keep(item):
                found.append(item)
                if len(found) == limit:
                    break
        if gone:
            await redis.zrem(index, *gone)
    more = bool(await redis.zrevrangebylex(index, start, "-", 0, 1))
    return found, more
