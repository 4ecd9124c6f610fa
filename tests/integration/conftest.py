"""One real stack per test session: its own redis-server, a tiny-model worker, an API process.

The stack gets a Redis of its own, not the flushable ``redis_server`` of the unit tests: a
flush there would wipe the live worker's heartbeat and kombu's queue bindings mid-session.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.auth import AUTH
from tests.integration.stack import Stack, keys_in_logs
from uml.redis_server import start_redis

MODEL = "tiny"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from workers.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("models") / "tiny", seed=0)


@pytest.fixture(scope="session")
def stack(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    server = start_redis(tmp_path_factory.mktemp("stack-redis"), appendonly=False)
    stack = Stack(redis_url=server.url, log_dir=tmp_path_factory.mktemp("logs"))
    try:
        stack.start_worker(MODEL, tiny_model, slots=32)
        yield stack
    finally:
        stack.stop()
        server.stop()
    # every key any test made, in any spelling it was sent: none reached a process log
    assert not keys_in_logs(stack.log_dir), keys_in_logs(stack.log_dir)


@pytest.fixture(scope="session")
def api_url(stack: Stack) -> str:
    _, base = stack.start_api()
    return base


@pytest.fixture
def http(api_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_url, timeout=60, headers=AUTH) as client:
        yield client


@pytest.fixture(scope="session")
def two_apis(api_url: str, stack: Stack) -> list[str]:
    """The session's API and a second replica on the same Redis."""
    _, second = stack.start_api()
    return [api_url, second]


@pytest.fixture
def clients(two_apis: list[str]) -> Iterator[list[httpx.Client]]:
    """One client per replica, without a key (tests pass the key they mean)."""
    made = [httpx.Client(base_url=url, timeout=30) for url in two_apis]
    yield made
    for client in made:
        client.close()
