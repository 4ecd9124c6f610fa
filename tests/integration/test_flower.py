"""``uml flower`` against the test stack's Redis: behind basic auth, it sees the live worker
(``/api/workers``) and a finished ``uml.generate`` (``/api/tasks``), although workers start
with task events off (Flower turns them on at runtime)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from protocol.keys import TASK_GENERATE
from tests.integration.stack import Proc, Stack, wait_for
from uml.redis_server import free_port

pytestmark = pytest.mark.timeout(180)

USER = "ops"
PASSWORD = "flower-test-password-7f3a"


@pytest.fixture
def flower(stack: Stack) -> Iterator[str]:
    port = free_port()
    log_path = stack.log_dir / "flower.log"
    env = {**stack._env(), "UML_FLOWER_USER": USER, "UML_FLOWER_PASSWORD": PASSWORD}
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "uml.cli", "flower", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    proc = Proc(process, log_path)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.alive(), f"flower exited:\n{proc.log()}"
        try:
            return httpx.get(f"{base}/healthcheck", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, 60, "Flower", interval=0.2)
        yield base
    finally:
        proc.stop()
        assert PASSWORD not in proc.log()


def test_flower_sees_the_worker_and_a_finished_generate(flower: str, http: httpx.Client) -> None:
    assert httpx.get(f"{flower}/api/workers", timeout=10).status_code == 401
    auth = httpx.BasicAuth(USER, PASSWORD)
    with httpx.Client(base_url=flower, auth=auth, timeout=15) as ops:
        workers: dict[str, object] = {}

        def worker_listed() -> bool:
            nonlocal workers
            workers = ops.get("/api/workers", params={"refresh": "true"}).json()
            return bool(workers)

        wait_for(worker_listed, 60, "Flower to list the live worker", interval=0.5)
        job_ids: list[str] = []

        def generate_seen() -> bool:
            # a job run before Flower turned events on is invisible to it: run another
            body = {"model": "tiny", "prompt": "hello", "max_tokens": 4}
            response = http.post("/v1/completions", json=body)
            assert response.status_code == 200, response.text
            job_ids.append(response.json()["id"])
            tasks = ops.get("/api/tasks").json()
            return any(
                t.get("name") == TASK_GENERATE and t.get("state") == "SUCCESS"
                for task_id, t in tasks.items()
                if task_id in job_ids
            )

        wait_for(generate_seen, 90, "Flower to show a finished uml.generate", interval=1)
