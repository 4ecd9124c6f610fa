"""``GET /health``: is Redis reachable, and which live workers serve which models."""

from __future__ import annotations

from typing import Literal

from litestar import Controller, get
from litestar.datastructures import State
from msgspec import Struct
from redis.exceptions import RedisError

from api.security.middleware import PUBLIC
from api.state import Resources


class Health(Struct, kw_only=True):
    status: Literal["ok", "no_workers", "redis_down"]
    redis: bool
    workers: int
    models: list[str]


class HealthController(Controller):
    path = "/health"
    tags = ["ops"]
    opt = PUBLIC

    @get(
        summary="Service health",
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
