"""The process's lifecycled resources, opened and closed by the app's lifespan hook."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import cast

import redis.asyncio as aioredis
from litestar.datastructures import State

from api.relay import Relay
from api.security.keys import Authenticator, KeyStore, load_bootstrap
from api.security.limits import Limiter
from api.services.models import LiveModels
from api.services.store import JobStore
from protocol.settings import Settings


@dataclass(frozen=True)
class Resources:
    settings: Settings
    redis: aioredis.Redis
    relay: Relay
    models: LiveModels
    keys: KeyStore
    authenticator: Authenticator
    limiter: Limiter
    store: JobStore

    @staticmethod
    def of(state: State) -> Resources:
        return cast(Resources, state.resources)


@asynccontextmanager
async def open_resources(settings: Settings) -> AsyncIterator[Resources]:
    """Open Redis and the stream relay; close them in reverse order."""
    bootstrap = load_bootstrap(settings.security)
    timeout = settings.redis.socket_timeout_s
    redis = aioredis.Redis.from_url(
        settings.redis.url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        socket_keepalive=True,
        health_check_interval=30,
    )
    relay = Relay(settings.redis.url, block_ms=settings.redis.block_ms, socket_timeout_s=timeout)
    await relay.start()
    keys = KeyStore(redis)
    try:
        yield Resources(
            settings=settings,
            redis=redis,
            relay=relay,
            models=LiveModels(redis, settings.server.models_cache_s),
            keys=keys,
            authenticator=Authenticator(keys, bootstrap),
            limiter=Limiter(redis, settings.limits),
            store=JobStore(
                redis,
                settings.redis.retention_s,
                settings.server.max_queued_per_model,
                settings.server.queue_full_retry_after_s,
            ),
        )
    finally:
        await relay.stop()
        await redis.aclose()
