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
from api.security.revocation import KeyWatcher
from api.services.batches.runner import BatchRunner
from api.services.batches.store import BatchStore
from api.services.file_quota import FileQuota
from api.services.files import FileStore
from api.services.job_store import JobStore, QueueBounds
from api.services.models import LiveModels
from protocol.settings import Settings


@dataclass(frozen=True)
class Resources:
    settings: Settings
    redis: aioredis.Redis
    relay: Relay
    models: LiveModels
    keys: KeyStore
    authenticator: Authenticator
    watcher: KeyWatcher
    limiter: Limiter
    store: JobStore
    files: FileStore
    batches: BatchStore
    batch_runner: BatchRunner

    @staticmethod
    def of(state: State) -> Resources:
        return cast(Resources, state.resources)


@asynccontextmanager
async def open_resources(settings: Settings) -> AsyncIterator[Resources]:
    """Open Redis, the stream relay, the batch runner and the key watcher; close them in
    reverse order."""
    bootstrap = load_bootstrap(settings.security)
    timeout = settings.redis.socket_timeout_s
    # redis-py's default pool refuses the 101st concurrent command ("Too many connections",
    # a 503 under any burst); a blocking pool makes a burst wait for a connection instead.
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis.url,
        max_connections=settings.redis.max_connections,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        socket_keepalive=True,
        health_check_interval=30,
    )
    redis = aioredis.Redis.from_pool(pool)  # closing the client closes the pool
    relay = Relay(settings.redis.url, block_ms=settings.redis.block_ms, socket_timeout_s=timeout)
    await relay.start()
    keys = KeyStore(redis)
    models = LiveModels(redis, settings.server.models_cache_s, settings)
    store = JobStore(redis, settings.redis.retention_s, QueueBounds.of(settings.server))
    batch = settings.batch
    quota = FileQuota(redis, batch.quota_bytes, batch.quota_files, batch.file_ttl_s)
    files = FileStore(redis, batch.file_ttl_s, quota)
    batches = BatchStore(redis, files, settings.batch.file_ttl_s)
    runner = BatchRunner(redis, settings, store, files, models, batches)
    await runner.start()
    watcher = KeyWatcher(redis, settings.security.key_recheck_s)
    await watcher.start()
    try:
        yield Resources(
            settings=settings,
            redis=redis,
            relay=relay,
            models=models,
            keys=keys,
            authenticator=Authenticator(keys, bootstrap),
            watcher=watcher,
            limiter=Limiter(redis, settings.limits),
            store=store,
            files=files,
            batches=batches,
            batch_runner=runner,
        )
    finally:
        await watcher.stop()
        await runner.stop()
        await relay.stop()
        await redis.aclose()
