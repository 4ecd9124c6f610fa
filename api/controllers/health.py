"""``GET /health`` (liveness) and ``GET /ready`` (readiness); neither needs an API key.

``/health`` always answers 200 while the process serves HTTP; its body says what it sees
(Redis, live workers), for people. ``/ready`` is for load balancers and orchestrators: 200
only when this replica can take work (Redis answers, and the models it should serve have a
live worker), else 503 in OpenAI's error shape with ``Retry-After``.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Literal

from litestar import Controller, get
from litestar.datastructures import State
from msgspec import Struct
from redis.exceptions import RedisError

from api.errors import unavailable
from api.openapi import ERRORS
from api.security.middleware import PUBLIC
from api.services.models import ready_models
from api.state import Resources
from protocol.workers import WorkerInfo

READY_RETRY_AFTER_S = 5
"""``Retry-After`` of a 503 from ``/ready``: about how long a worker takes to appear."""


class Health(Struct, kw_only=True):
    status: Literal["ok", "no_workers", "redis_down"]
    redis: bool
    workers: int
    models: list[str]


class Ready(Struct, kw_only=True):
    status: Literal["ready"]
    workers: int
    models: list[str]


def unready_reason(
    workers: Collection[WorkerInfo], registered: Collection[str], load_on_demand: bool
) -> str | None:
    """Why a replica with these live workers can't take work; ``None`` when it can.

    Some live worker is always needed. With load on demand any live worker can load a
    registered model; without it every registered model needs a worker that holds it.
    """
    if not workers:
        return "No live worker"
    if load_on_demand:
        return None
    missing = sorted(set(registered) - ready_models(list(workers)))
    if missing:
        return f"No live worker holds {', '.join(f'`{m}`' for m in missing)}"
    return None


def registry_of(state: State) -> tuple[frozenset[str], bool]:
    """The models of the API's registry (``UML_MODELS``) and whether load on demand is on."""
    res = Resources.of(state)
    admin = res.models.admin
    registered = frozenset(admin.registry) if admin is not None else frozenset()
    return registered, res.settings.models.load_on_demand


class HealthController(Controller):
    path = "/"
    tags = ["ops"]
    opt = PUBLIC

    @get(
        "/health",
        summary="Service health (liveness)",
        description="Always 200; `status` says what is wrong. Needs no API key.",
        security=[{}],
    )
    async def health(self, state: State) -> Health:
        try:
            snap = await Resources.of(state).models.refresh()
        except (RedisError, OSError):
            return Health(status="redis_down", redis=False, workers=0, models=[])
        status: Literal["ok", "no_workers"] = "ok" if snap.workers else "no_workers"
        return Health(
            status=status, redis=True, workers=len(snap.workers), models=sorted(snap.models)
        )

    @get(
        "/ready",
        summary="Readiness: can this replica take work",
        description="200 when Redis answers and the models have live workers (or can be "
        "loaded on demand); else 503 with `Retry-After`. Needs no API key.",
        security=[{}],
        responses={503: ERRORS[503]},
    )
    async def ready(self, state: State) -> Ready:
        try:
            snap = await Resources.of(state).models.refresh()
        except (RedisError, OSError) as exc:
            raise unavailable("Redis is unreachable", READY_RETRY_AFTER_S) from exc
        registered, on_demand = registry_of(state)
        reason = unready_reason(snap.workers, registered, on_demand)
        if reason is not None:
            raise unavailable(f"Not ready: {reason}", READY_RETRY_AFTER_S)
        return Ready(status="ready", workers=len(snap.workers), models=sorted(snap.models))
