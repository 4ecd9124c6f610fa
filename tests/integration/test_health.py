"""/health over a private Redis, a real worker and a real API: it sees the worker go."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from tests.auth import AUTH
from tests.integration.stack import Stack, wait_for
from uml.redis_server import start_redis

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_health_reports_when_the_only_worker_is_gone(
    tmp_path: Path, tiny_model: Path, how: int
) -> None:
    server = start_redis(tmp_path / "redis", appendonly=False)
    stack = Stack(
        redis_url=server.url, log_dir=tmp_path, extra_env={"UML_WORKER_HEARTBEAT_TTL_S": "2"}
    )
    try:
        worker = stack.start_worker("solo", tiny_model, slots=2)
        _, base = stack.start_api()

        def health() -> dict[str, object]:
            response = httpx.get(f"{base}/health", timeout=5)
            assert response.status_code == 200
            return dict(response.json())

        wait_for(lambda: health()["status"] == "ok", 10, "a healthy service")
        assert health()["models"] == ["solo"]
        worker.stop(how)
        wait_for(
            lambda: health()["status"] == "no_workers", 10, "/health to notice the worker left"
        )
        assert health()["workers"] == 0
        models = httpx.get(f"{base}/v1/models", headers=AUTH, timeout=5).json()
        assert models["data"] == []
    finally:
        stack.stop()
        server.stop()
