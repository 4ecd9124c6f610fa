"""Model management from the API: choose a worker, send it a load or unload, follow it.

A load or unload is an operation with a record ``uml:modelop:{id}`` (JSON
:class:`protocol.models.ModelOp`): written ``pending`` here, advanced by the worker's
loader thread (``loading`` → ``ready``, ``unloading`` → ``unloaded``, or ``failed``). The
command itself is a Celery remote-control broadcast addressed to one worker's node name;
it is fire-and-forget, so a reader also derives the state from the worker's heartbeat: a
worker that is gone fails its open operations, a model its worker shows ``ready`` is
loaded, one it no longer shows is unloaded.

Load on demand (:meth:`ModelAdmin.ensure`) starts one load per model across every API
replica (a Redis ``SET NX`` names the operation) and waits for the model to be ready.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import Sequence
from typing import Any

import anyio
import msgspec
import redis.asyncio as aioredis

from api.errors import APIError, model_not_found, unavailable
from api.services.job_store import model_lists
from protocol.keys import (
    CONTROL_LOAD,
    CONTROL_UNLOAD,
    MODEL_OP_TTL_S,
    broker_transport_options,
    model_op_key,
    ondemand_key,
)
from protocol.models import (
    LoadCommand,
    LoadModelRequest,
    ModelEntry,
    ModelOp,
    ModelPlacement,
    ModelsOverview,
    ModelStatus,
    OpKind,
    UnloadCommand,
    UnloadModelRequest,
    WorkerStatus,
    load_registry,
)
from protocol.settings import Settings
from protocol.workers import WorkerInfo

_POLL_S = 0.1
_STARTING = "starting"
_ops = msgspec.json.Decoder(ModelOp)


def _no_worker(worker: str) -> APIError:
    return APIError(
        404, f"No live worker with id `{worker}`", param="worker", code="worker_not_found"
    )


def choose_worker(
    workers: Sequence[WorkerInfo],
    model: str,
    known: bool,
    worker: str | None = None,
    device: str | None = None,
) -> WorkerInfo:
    """The worker a load of ``model`` goes to: ``worker`` if named, else the eligible one
    with the most free memory (then free slots). ``known``: the API can tell the worker
    where the model is (its registry or an admin's path); otherwise only a worker whose own
    registry names it is eligible."""
    if worker is not None:
        found = next((w for w in workers if w.id == worker), None)
        if found is None:
            raise _no_worker(worker)
        if not known and model not in found.registered:
            raise model_not_found(model)
        return found
    if device and not any(w.device == device for w in workers):
        raise APIError(
            404,
            f"No live worker has the device `{device}`",
            param="device",
            code="device_not_found",
        )
    eligible = [
        w
        for w in workers
        if w.holds(model) is None
        and (known or model in w.registered)
        and (not device or w.device == device)  # "" is no preference, as for the worker
    ]
    if not eligible:
        if not known and not any(model in w.registered for w in workers):
            raise model_not_found(model)
        raise unavailable(f"No live worker can load the model `{model}` now", retry_after_s=5)
    return max(eligible, key=lambda w: (w.memory_free, w.free_slots, w.id))


def derive(op: ModelOp, workers: Sequence[WorkerInfo]) -> ModelOp:
    """``op`` as the worker's heartbeat shows it (the record may lag, or never be written)."""
    if op.done:
        return op
    worker = next((w for w in workers if w.id == op.worker), None)
    if worker is None:
        return msgspec.structs.replace(
            op, state="failed", error=f"worker `{op.worker}` is gone", updated_at=time.time()
        )
    held = worker.holds(op.model)
    if op.kind == "load" and held is not None and held.state == "ready":
        return msgspec.structs.replace(op, state="ready")
    if op.kind == "unload" and held is None and op.state == "unloading":
        return msgspec.structs.replace(op, state="unloaded")
    return op


class ModelAdmin:
    """Load, unload, on-demand loads and the ``/models`` overview; one per API process."""

    def __init__(self, redis: aioredis.Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.registry: dict[str, ModelEntry] = load_registry(settings.models.models)

    # ---- reads -------------------------------------------------------------------------

    def registered(self, model: str, workers: Sequence[WorkerInfo]) -> bool:
        return model in self.registry or any(model in w.registered for w in workers)

    async def overview(self, workers: Sequence[WorkerInfo]) -> ModelsOverview:
        names = sorted(
            set(self.registry)
            | {n for w in workers for n in w.registered}
            | {m.name for w in workers for m in w.models}
        )
        depths = await self.queue_depths(names)
        models = []
        for name in names:
            placements = [
                ModelPlacement(
                    worker=w.id,
                    host=w.host,
                    device=held.device,
                    state=held.state,
                    active=held.active,
                    memory_bytes=held.memory_bytes,
                )
                for w in workers
                if (held := w.holds(name)) is not None
            ]
            models.append(
                ModelStatus(
                    name=name,
                    registered=self.registered(name, workers),
                    ready=any(p.state == "ready" for p in placements),
                    queued=depths[name],
                    workers=placements,
                )
            )
        return ModelsOverview(models=models, workers=[_worker_status(w) for w in workers])

    async def queue_depths(self, names: Sequence[str]) -> dict[str, int]:
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            for key in model_lists(name):
                pipe.llen(key)
        lengths = await pipe.execute() if names else []
        steps = len(model_lists("x"))
        return {n: sum(lengths[i * steps : (i + 1) * steps]) for i, n in enumerate(names)}

    async def read_op(self, op_id: str, workers: Sequence[WorkerInfo]) -> ModelOp | None:
        raw = await self.redis.get(model_op_key(op_id))
        return None if raw is None else derive(_ops.decode(raw), workers)

    # ---- load and unload ---------------------------------------------------------------

    async def load(self, req: LoadModelRequest, workers: Sequence[WorkerInfo]) -> ModelOp:
        """Start loading ``req.model`` (or answer the load already there, if any)."""
        entry = ModelEntry(path=req.path, engine=req.engine or "") if req.path else None
        known = entry is not None or req.model in self.registry
        if req.worker is None:
            for holder in workers:  # already there (or on its way): nothing to send
                held = holder.holds(req.model)
                if held is not None and held.state != "unloading":
                    return await self._new_op("load", req.model, holder.id, held.state)
        target = choose_worker(workers, req.model, known, req.worker, req.device)
        if entry is None and req.model not in target.registered:
            entry = self.registry.get(req.model)
        op = await self._new_op("load", req.model, target.id)
        command = LoadCommand(op_id=op.id, model=req.model, entry=entry, device=req.device)
        await self._send(CONTROL_LOAD, target, command)
        return op

    async def unload(self, req: UnloadModelRequest, workers: Sequence[WorkerInfo]) -> list[ModelOp]:
        """Start unloading ``req.model`` from ``req.worker``, or from every worker holding it."""
        if req.worker is not None and not any(w.id == req.worker for w in workers):
            raise _no_worker(req.worker)
        targets = [
            w for w in workers if w.holds(req.model) is not None and req.worker in (None, w.id)
        ]
        if not targets:
            raise APIError(
                404,
                f"The model `{req.model}` is not loaded on "
                + (f"worker `{req.worker}`" if req.worker else "any worker"),
                param="model",
                code="model_not_loaded",
            )
        ops = []
        for worker in targets:
            op = await self._new_op("unload", req.model, worker.id)
            await self._send(CONTROL_UNLOAD, worker, UnloadCommand(op_id=op.id, model=req.model))
            ops.append(op)
        return ops

    async def wait(self, ops: list[ModelOp], timeout_s: float, live: Any) -> list[ModelOp]:
        """Poll ``ops`` until every one is done or ``timeout_s`` passes; their last states.
        ``live`` is the :class:`api.services.models.LiveModels` whose workers derive states."""
        deadline = time.monotonic() + timeout_s
        while True:
            workers = (await live.refresh()).workers
            ops = [await self.read_op(op.id, workers) or op for op in ops]
            if all(op.done for op in ops) or time.monotonic() >= deadline:
                return ops
            await asyncio.sleep(_POLL_S)

    # ---- load on demand ----------------------------------------------------------------

    async def ensure(self, model: str, live: Any) -> None:
        """Make ``model`` servable: start a load (once across replicas) and wait for it.

        Unregistered: 404. Not ready within ``load_wait_s``: 503 with Retry-After.
        """
        workers = (await live.refresh()).workers
        if not self.registered(model, workers):
            raise model_not_found(model)
        deadline = time.monotonic() + self.settings.models.load_wait_s
        op_id = await self._claim_ondemand(model, workers)
        while time.monotonic() < deadline:
            await asyncio.sleep(_POLL_S)
            snap = await live.refresh()
            if model in snap.models:
                return
            op = await self.read_op(op_id, snap.workers) if op_id else None
            if op is not None and op.state == "failed":
                await self.redis.delete(ondemand_key(model))
                raise unavailable(f"Loading the model `{model}` failed: {op.error}", 5)
            if (op is None or op.done) and not any(w.holds(model) for w in snap.workers):
                op_id = await self._claim_ondemand(model, snap.workers)
        raise unavailable(f"The model `{model}` is still loading; retry shortly", 5)

    async def _claim_ondemand(self, model: str, workers: Sequence[WorkerInfo]) -> str | None:
        """The id of the on-demand load of ``model``: one this call starts, or the one in
        flight; None while another replica is starting one (its heartbeat will show it)."""
        if any(w.holds(model) for w in workers):
            return None  # loading (or unloading) somewhere: wait for the heartbeat
        key = ondemand_key(model)
        ttl = max(1, int(self.settings.models.load_wait_s))
        for _ in range(2):
            if await self.redis.set(key, _STARTING, nx=True, ex=ttl):
                try:
                    op = await self.load(LoadModelRequest(model=model), workers)
                except BaseException:
                    await self.redis.delete(key)
                    raise
                await self.redis.set(key, op.id, ex=ttl)
                return op.id
            raw = await self.redis.get(key)
            current = raw.decode() if isinstance(raw, bytes) else raw
            if current is None:
                continue
            if current == _STARTING:
                return None
            running = await self.read_op(current, workers)
            if running is not None and not running.done:
                return running.id
            await self.redis.delete(key)  # a finished load of an earlier time: start anew
        return None

    # ---- plumbing ----------------------------------------------------------------------

    async def _new_op(
        self, kind: OpKind, model: str, worker: str, state: str = "pending"
    ) -> ModelOp:
        now = time.time()
        op = ModelOp(
            id=f"op-{uuid.uuid4().hex[:16]}",
            kind=kind,
            model=model,
            worker=worker,
            state=state,  # type: ignore[arg-type]
            created_at=now,
            updated_at=now,
        )
        await self.redis.set(model_op_key(op.id), msgspec.json.encode(op), ex=MODEL_OP_TTL_S)
        return op

    async def _send(self, command: str, worker: WorkerInfo, args: msgspec.Struct) -> None:
        """Broadcast ``command`` to ``worker``'s node (a PUBLISH), off the event loop."""
        node = worker.node or f"{worker.id}@{worker.host}"
        send = functools.partial(
            _broadcast, self.settings, command, {"command": msgspec.to_builtins(args)}, node
        )
        await anyio.to_thread.run_sync(send)


def _broadcast(settings: Settings, command: str, arguments: dict[str, Any], node: str) -> None:
    """One remote-control message through a short-lived Celery app: loads and unloads are
    rare, and nothing then outlives the call (no pool for the lifespan to close)."""
    from celery import Celery

    app = Celery("uml", broker=settings.redis.url, set_as_current=False)
    app.conf.update(
        broker_transport_options=broker_transport_options(settings.redis.socket_timeout_s)
    )
    try:
        app.control.broadcast(command, arguments=arguments, destination=[node], reply=False)
    finally:
        app.close()


def _worker_status(w: WorkerInfo) -> WorkerStatus:
    return WorkerStatus(
        id=w.id,
        host=w.host,
        device=w.device,
        memory_free=w.memory_free,
        memory_total=w.memory_total,
        slots=w.slots,
        free_slots=w.free_slots,
        active=w.active,
        models=[m.name for m in w.models],
        seen_at=w.seen_at,
    )
