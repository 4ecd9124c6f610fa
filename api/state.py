"""The process's lifecycled resources, opened and closed by the app's lifespan hook."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import cast

import anyio.to_thread
import redis.asyncio as aioredis
from celery import Celery
from litestar.datastructures import State

from api.relay import Relay
from api.services.models import LiveModels
from protocol.keys import broker_transport_options
from protocol.settings import Settings


@dataclass(frozen=True)
class Resources:
    settings: Settings
    redis: aioredis.Redis
    celery: Celery
    relay: Relay
    models: LiveModels

    @staticmethod
    def of(state: State) -> Resources:
        return cast(Resources, state.resources)


def make_celery(settings: Settings) -> Celery:
    """A send-only Celery app: the API publishes ``uml.generate`` by name, never consumes."""
    app = Celery("uml-api", broker=settings.redis.url, set_as_current=False)
    app.conf.broker_transport_options = broker_transport_options(settings.redis.socket_timeout_s)
    app.conf.broker_connection_retry_on_startup = True
    return app


@asynccontextmanager
async def open_resources(settings: Settings) -> AsyncIterator[Resources]:
    """Open Redis, Celery and the stream relay; close them in reverse order."""
    timeout = settings.redis.socket_timeout_s
    redis = aioredis.Redis.from_url(
        settings.redis.url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        socket_keepalive=True,
        health_check_interval=30,
    )
    relay = Relay(settings.redis.url, block_ms=settings.redis.block_ms, socket_timeout_s=timeout)
    celery = make_celery(settings)
    await relay.start()
    try:
        yield Resources(
            settings=settings,
            redis=redis,
            celery=celery,
            relay=relay,
            models=LiveModels(redis, settings.server.models_cache_s),
        )
    finally:
        await relay.stop()
        await anyio.to_thread.run_sync(celery.close)
        await redis.aclose()
