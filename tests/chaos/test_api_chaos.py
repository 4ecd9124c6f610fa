"""Break an API process or Redis under a live stream or live traffic; nothing acknowledged
is lost and clients recover by themselves."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.auth import AUTH
from tests.chaos.conftest import MODEL
from tests.integration.stack import Stack, wait_for
from uml.redis_server import RedisServer, start_redis

pytestmark = pytest.mark.timeout(180)

TERMINAL = {"succeeded", "failed", "cancelled", "expired"}


def events_from(base: str, job_id: str, after: int, stop_after: int | None) -> list[dict[str, Any]]:
    """The job's events after ``after`` read from ``base``, at most ``stop_after``."""
    out: list[dict[str, Any]] = []
    headers = {**AUTH, "Last-Event-ID": str(after)}
    with (
        httpx.Client(base_url=base, timeout=30) as client,
        client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as response,
    ):
        assert response.status_code == 200, response.read()
        seq = None
        for line in response.iter_lines():
            if line.startswith("id: "):
                seq = int(line[4:])
            elif line.startswith("data: "):
                event = json.loads(line[6:])
                assert event["seq"] == seq
                out.append(event)
                if stop_after is not None and len(out) >= stop_after:
                    break
    return out


def test_an_api_replica_killed_mid_stream_loses_nothing(
    chaos_stack: Stack, tiny_model: Path
) -> None:
    """kill -9 the API a client streams from; it resumes on the other with Last-Event-ID."""
    chaos_stack.start_worker(MODEL, tiny_model, slots=4)
    doomed, first = chaos_stack.start_api()
    _, second = chaos_stack.start_api()
    body = {"model": MODEL, "prompt": "Once", "max_tokens": 1500, "temperature": 0.8, "seed": 7}
    with httpx.Client(base_url=first, headers=AUTH, timeout=30) as http:
        job = http.post("/v1/jobs", json={"type": "completion", "body": body}).json()

    got = events_from(first, job["id"], 0, stop_after=40)
    doomed.stop(signal.SIGKILL)
    assert not doomed.alive()
    got += events_from(second, job["id"], got[-1]["seq"], stop_after=None)

    assert [e["seq"] for e in got] == list(range(1, len(got) + 1))
    assert got[-1]["type"] == "done"
    with httpx.Client(base_url=second, headers=AUTH, timeout=30) as http:
        final = http.get(f"/v1/jobs/{job['id']}").json()
    assert final["status"] == "succeeded"
    assert "".join(e["text"] for e in got if e["type"] == "token") == final["text"]


class Submitter(threading.Thread):
    """Submits jobs in a loop; records every acknowledged (202) job and every refusal."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.accepted: list[str] = []
        self.refused: list[httpx.Response] = []
        self.errors = 0
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.base, headers=AUTH, timeout=10) as http:
            i = 0
            while not self.stop.is_set():
                i += 1
                body = {"model": MODEL, "prompt": f"n{i}", "max_tokens": 8, "temperature": 0}
                try:
                    response = http.post("/v1/jobs", json={"type": "completion", "body": body})
                except httpx.HTTPError:
                    self.errors += 1
                    time.sleep(0.05)
                    continue
                if response.status_code == 202:
                    self.accepted.append(response.json()["id"])
                else:
                    self.refused.append(response)
                    time.sleep(0.05)


def test_redis_restart_under_load(
    chaos_stack: Stack, aof_redis: list[RedisServer], redis_dir: Path, tiny_model: Path
) -> None:
    """While Redis is down the API answers 503 + Retry-After; afterwards everything recovers
    by itself and every job acknowledged with a 202 finishes, on the same worker process
    (Celery/kombu 5.7 used to stop it: workers/transport.py)."""
    worker = chaos_stack.start_worker(MODEL, tiny_model, slots=8)
    _, base = chaos_stack.start_api()
    load = Submitter(base)
    load.start()
    try:
        wait_for(lambda: len(load.accepted) >= 20, 30, "jobs to be accepted")
        before = len(load.accepted)
        aof_redis[0].stop()  # SIGTERM: redis fsyncs the AOF on its way down
        wait_for(lambda: len(load.refused) >= 3, 30, "refusals while Redis is down")
        aof_redis.append(start_redis(redis_dir, port=aof_redis[0].port, appendonly=True))
        wait_for(lambda: len(load.accepted) >= before + 20, 60, "the API to recover")
    finally:
        load.stop.set()
        load.join(15)
    for response in load.refused:
        assert response.status_code == 503, response.text
        assert int(response.headers["retry-after"]) >= 1
        error = response.json()["error"]
        assert error["type"] == "service_unavailable" and error["message"]

    with httpx.Client(base_url=base, headers=AUTH, timeout=30) as http:
        pending = set(load.accepted)

        def all_done() -> bool:
            for job_id in list(pending):
                status = http.get(f"/v1/jobs/{job_id}").json().get("status")
                if status in TERMINAL:
                    assert status == "succeeded", (job_id, status)
                    pending.discard(job_id)
            return not pending

        def all_done_on_a_live_worker() -> bool:
            assert worker.process.poll() is None, worker.log()[-3000:]
            return all_done()

        wait_for(all_done_on_a_live_worker, 120, "every acknowledged job to finish", interval=0.2)


def test_sigterm_on_an_api_ends_its_streams_after_the_grace_period_and_their_jobs_run_on(
    chaos_stack: Stack, tiny_model: Path
) -> None:
    """A draining API cuts a sync stream at the end of its grace period without cancelling
    the job; the client follows the rest on another replica by the job id header."""
    chaos_stack.start_worker(MODEL, tiny_model, slots=4)
    chaos_stack.extra_env["UML_SHUTDOWN_GRACE_S"] = "1"
    leaving, first = chaos_stack.start_api()
    chaos_stack.extra_env.pop("UML_SHUTDOWN_GRACE_S")
    _, second = chaos_stack.start_api()
    body = {"model": MODEL, "prompt": "abc", "max_tokens": 1800, "temperature": 0, "stream": True}
    before = []
    with httpx.Client(base_url=first, headers=AUTH, timeout=30) as http:
        with http.stream("POST", "/v1/completions", json=body) as response:
            job_id = response.headers["x-uml-job-id"]
            lines = response.iter_lines()
            for line in lines:
                if line.startswith("data: {"):
                    before.append(json.loads(line[6:])["choices"][0]["text"])
                    if len(before) == 20:
                        break
            started = time.monotonic()
            leaving.stop(signal.SIGTERM, timeout=30)
            with pytest.raises(httpx.RemoteProtocolError):  # cut, not ended: no [DONE]
                for line in lines:  # what this replica sent before it cut the stream
                    if line.startswith("data: {"):
                        before.append(json.loads(line[6:])["choices"][0]["text"])
    # uvicorn re-raises the signal once it has shut down cleanly
    assert leaving.process.returncode in (0, -signal.SIGTERM), leaving.log()[-2000:]
    assert time.monotonic() - started < 15
    rest = events_from(second, job_id, 0, stop_after=None)
    assert rest[-1]["type"] == "done"
    with httpx.Client(base_url=second, headers=AUTH, timeout=30) as http:
        final = http.get(f"/v1/jobs/{job_id}").json()
    assert final["status"] == "succeeded" and final["completion_tokens"] == 1800
    assert final["text"].startswith("".join(before))
