"""Live models: what the workers' heartbeats say they hold, cached briefly.

A worker lists itself in ``uml:workers`` and refreshes ``uml:worker:{id}`` (a TTL'd JSON
:class:`protocol.workers.WorkerInfo`). A member whose record has expired is dead and is
pruned here. A model is servable when some live worker holds it in state ``ready``; with
load on demand on, a registered model that is not is loaded first
(:meth:`api.services.model_ops.ModelAdmin.ensure`).
"""

from __future__ import annotations

import time

import msgspec
import redis.asyncio as aioredis

from api.errors import model_not_found
from api.services.model_ops import ModelAdmin
from protocol.keys import WORKERS_SET, worker_key
from protocol.settings import Settings
from protocol.workers import WorkerInfo

_decoder = msgspec.json.Decoder(WorkerInfo)


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    workers: tuple[WorkerInfo, ...]
    models: frozenset[str]
    taken_at: float


async def read_workers(redis: aioredis.Redis) -> list[WorkerInfo]:
    """Every live worker's heartbeat; members whose record expired are removed from the set."""
    members = await redis.smembers(WORKERS_SET)
    ids = sorted(m.decode() if isinstance(m, bytes) else m for m in members)
    if not ids:
        return []
    raws = await redis.mget([worker_key(i) for i in ids])
    workers: list[WorkerInfo] = []
    dead: list[str] = []
    for worker_id, raw in zip(ids, raws, strict=True):
        if raw is None:
            dead.append(worker_id)
            continue
        try:
            workers.append(_decoder.decode(raw))
        except msgspec.DecodeError:
            continue
    if dead:
        await redis.srem(WORKERS_SET, *dead)
    return workers


def ready_models(workers: list[WorkerInfo]) -> frozenset[str]:
    return frozenset(m.name for w in workers for m in w.models if m.state == "ready")


class LiveModels:
    """The servable models, re-read from Redis at most every ``cache_s`` seconds."""

    def __init__(
        self, redis: aioredis.Redis, cache_s: float, settings: Settings | None = None
    ) -> None:
        self.redis = redis
        self.cache_s = cache_s
        self.admin = ModelAdmin(redis, settings) if settings is not None else None
        """Load and unload (``/load_model``, ``/models``); None in a bare test instance."""
        self._snapshot: Snapshot | None = None

    async def refresh(self) -> Snapshot:
        workers = await read_workers(self.redis)
        self._snapshot = Snapshot(
            workers=tuple(workers), models=ready_models(workers), taken_at=time.monotonic()
        )
        return self._snapshot

    async def snapshot(self) -> Snapshot:
        snap = self._snapshot
        if snap is None or time.monotonic() - snap.taken_at >= self.cache_s:
            snap = await self.refresh()
        return snap

    async def context(self, model: str) -> int:
        """The longest context (prompt + completion tokens) a ready worker of ``model``
        announces; 0 when none announces one."""
        snap = await self.snapshot()
        return max(
            (
                m.max_seq_len
                for w in snap.workers
                for m in w.models
                if m.name == model and m.state == "ready"
            ),
            default=0,
        )

    async def require(self, model: str) -> None:
        """Return if ``model`` is servable; else re-check Redis once, then load it on demand
        (when on, and registered) or answer 404."""
        snap = self._snapshot
        if snap and time.monotonic() - snap.taken_at < self.cache_s and model in snap.models:
            return
        if model in (await self.refresh()).models:
            return
        admin = self.admin
        if admin is None or not admin.settings.models.load_on_demand:
            raise model_not_found(model)
        await admin.ensure(model, self)
