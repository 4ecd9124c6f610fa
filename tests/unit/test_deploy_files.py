"""docker-compose.yml and the Procfile describe the same deployment (no Docker engine here)."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_compose_file_wires_the_services() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"redis", "api", "worker", "model-init", "flower"} <= set(services)
    assert services["api"]["deploy"]["replicas"] == 2
    assert "UML_ADMIN_KEY" in services["api"]["environment"]
    for name in ("api", "worker"):
        assert services[name]["environment"]["REDIS_URL"] == "redis://redis:6379/0"
        assert services[name]["build"]["dockerfile"] == "ops/Dockerfile"
    assert "ops/redis.conf" in services["redis"]["volumes"][0]
    assert "/ready" in " ".join(services["api"]["healthcheck"]["test"])


def test_flower_runs_behind_basic_auth() -> None:
    flower = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["flower"]
    assert flower["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert "UML_FLOWER_BASIC_AUTH" in flower["environment"]
    assert flower["command"][:2] == ["uml", "flower"]
    assert flower["build"]["target"] == "flower"
    assert all(port.startswith("127.0.0.1:") for port in flower["ports"])


def test_dockerfile_targets_exist() -> None:
    text = (ROOT / "ops" / "Dockerfile").read_text()
    assert "AS api" in text and "AS worker" in text and "AS flower" in text


def test_procfile_runs_every_process() -> None:
    names = {
        line.split(":", 1)[0]
        for line in (ROOT / "Procfile").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert names == {"redis", "api", "worker", "flower"}


def test_redis_conf_keeps_jobs_across_restarts() -> None:
    conf = (ROOT / "ops" / "redis.conf").read_text()
    assert "appendonly yes" in conf and "appendfsync everysec" in conf


def test_redis_conf_bounds_memory_and_never_evicts() -> None:
    """A full Redis refuses writes (503 from the API) rather than dropping job data."""
    settings = dict(
        line.split(None, 1)
        for line in (ROOT / "ops" / "redis.conf").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert settings["maxmemory-policy"] == "noeviction"
    assert settings["maxmemory"].removesuffix("gb").isdigit()
