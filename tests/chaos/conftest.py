"""Chaos tests break real processes on purpose: each test gets a stack of its own (a
redis-server with AOF on, a worker, API processes), so killing a piece of it harms no other
test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.stack import Stack
from uml.redis_server import RedisServer, start_redis

MODEL = "tiny"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from workers.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("chaos-models") / "tiny", seed=0)


@pytest.fixture
def redis_dir(tmp_path: Path) -> Path:
    return tmp_path / "redis"


@pytest.fixture
def aof_redis(redis_dir: Path) -> Iterator[list[RedisServer]]:
    """A redis-server with AOF (everysec); a list so a test can restart it in place."""
    servers = [start_redis(redis_dir, appendonly=True)]
    yield servers
    servers[-1].stop()


FAST_RECOVERY = {"UML_WORKER_LEASE_S": "2", "UML_WORKER_HEARTBEAT_S": "0.5"}
"""Leases of 2 s renewed every 0.5 s: a dead worker's jobs are re-queued within ~2.5 s."""


@pytest.fixture
def chaos_stack(aof_redis: list[RedisServer], tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(redis_url=aof_redis[0].url, log_dir=tmp_path, extra_env=dict(FAST_RECOVERY))
    try:
        yield stack
    finally:
        stack.stop()
