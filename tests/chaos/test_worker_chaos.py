"""kill -9 the worker that runs a job: the job resumes on another worker from its event log,
and a job whose workers keep dying fails after the attempt cap."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.auth import AUTH
from tests.chaos.conftest import MODEL
from tests.chaos.test_api_chaos import events_from
from tests.integration.stack import Proc, Stack, wait_for

pytestmark = pytest.mark.timeout(240)

LONG = {"model": MODEL, "prompt": "abc", "max_tokens": 1800, "temperature": 0}
"""Greedy on the seed-0 tiny model, this prompt runs all 1,800 tokens (no EOS): seconds of
work, so a kill or a SIGTERM lands mid-stream."""


SAMPLED = {**LONG, "temperature": 1.0, "seed": 3}
"""Seeded sampling that runs 1,339 tokens before EOS on the seed-0 tiny model."""


def running_on(stack: Stack, workers: list[Proc], events: list[dict[str, Any]]) -> Proc:
    """The worker process named by the last ``running`` status event."""
    worker_id = [e for e in events if e["type"] == "status"][-1]["worker"]
    [proc] = [p for p in workers if stack.worker_id(p) == worker_id]
    return proc


def test_a_killed_workers_job_resumes_on_another_without_gap_or_duplicate(
    chaos_stack: Stack, tiny_model: Path
) -> None:
    """The resumed attempt forces the logged token ids and replays the seeded sampler's
    draws, so the text is exactly what an uninterrupted run of the same request writes."""
    workers = [chaos_stack.start_worker(MODEL, tiny_model, slots=4) for _ in range(2)]
    _, base = chaos_stack.start_api()
    with httpx.Client(base_url=base, headers=AUTH, timeout=30) as http:
        whole = http.post("/v1/completions", json=SAMPLED).json()["choices"][0]
        job = http.post("/v1/jobs", json={"type": "completion", "body": SAMPLED}).json()
        got = events_from(base, job["id"], 0, stop_after=30)
        victim = running_on(chaos_stack, workers, got)
        victim.stop(signal.SIGKILL)
        got += events_from(base, job["id"], got[-1]["seq"], stop_after=None)
        final = http.get(f"/v1/jobs/{job['id']}").json()

    assert [e["seq"] for e in got] == list(range(1, len(got) + 1))
    statuses = [e for e in got if e["type"] == "status"]
    assert [s["attempt"] for s in statuses] == [1, 2]
    survivor = next(p for p in workers if p is not victim)
    assert statuses[1]["worker"] == chaos_stack.worker_id(survivor)
    assert got[-1]["type"] == "done", got[-1]
    assert final["status"] == "succeeded" and final["attempt"] == 2
    assert final["text"] == "".join(e["text"] for e in got if e["type"] == "token")
    assert (final["text"], final["finish_reason"]) == (whole["text"], whole["finish_reason"])
    assert final["usage"]["completion_tokens"] == sum(
        e["tokens"] for e in got if e["type"] == "token"
    )


def test_a_job_whose_workers_keep_dying_fails_after_the_attempt_cap(
    chaos_stack: Stack, tiny_model: Path
) -> None:
    chaos_stack.extra_env["UML_WORKER_MAX_ATTEMPTS"] = "2"
    _, base = chaos_stack.start_api()
    with httpx.Client(base_url=base, headers=AUTH, timeout=30) as http:
        worker = chaos_stack.start_worker(MODEL, tiny_model, slots=4)
        job = http.post("/v1/jobs", json={"type": "completion", "body": LONG}).json()
        for attempt in (1, 2):

            def on_attempt(attempt: int = attempt) -> bool:
                record = http.get(f"/v1/jobs/{job['id']}").json()
                return bool(record["status"] == "running" and record["attempt"] == attempt)

            wait_for(on_attempt, 60, f"attempt {attempt} to run")
            worker.stop(signal.SIGKILL)
            wait_for(
                lambda w=worker: chaos_stack.worker_id(w) is None, 30, "its heartbeat to lapse"
            )
            worker = chaos_stack.start_worker(MODEL, tiny_model, slots=4)

        def failed() -> bool:
            return bool(http.get(f"/v1/jobs/{job['id']}").json()["status"] == "failed")

        wait_for(failed, 30, "the job to fail")
        record = http.get(f"/v1/jobs/{job['id']}").json()
    assert record["error"]["code"] == "worker_lost" and record["attempt"] == 2
    events = events_from(base, job["id"], 0, stop_after=None)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "error" and events[-1]["error"]["code"] == "worker_lost"


def test_sigterm_hands_running_jobs_back_after_the_grace_period(
    chaos_stack: Stack, tiny_model: Path
) -> None:
    chaos_stack.extra_env["UML_WORKER_SHUTDOWN_GRACE_S"] = "1"
    workers = [chaos_stack.start_worker(MODEL, tiny_model, slots=4) for _ in range(2)]
    _, base = chaos_stack.start_api()
    with httpx.Client(base_url=base, headers=AUTH, timeout=30) as http:
        job = http.post("/v1/jobs", json={"type": "completion", "body": LONG}).json()
        got = events_from(base, job["id"], 0, stop_after=30)
        leaving = running_on(chaos_stack, workers, got)
        leaving.stop(signal.SIGTERM, timeout=30)
        assert leaving.process.returncode == 0, leaving.log()[-3000:]
        got += events_from(base, job["id"], got[-1]["seq"], stop_after=None)
        final = http.get(f"/v1/jobs/{job['id']}").json()
    assert [e["seq"] for e in got] == list(range(1, len(got) + 1))
    assert [e["attempt"] for e in got if e["type"] == "status"] == [1, 2]
    assert final["status"] == "succeeded"
    assert final["text"] == "".join(e["text"] for e in got if e["type"] == "token")


def test_sigterm_lets_a_job_that_fits_in_the_grace_period_finish(
    chaos_stack: Stack, tiny_model: Path
) -> None:
    chaos_stack.extra_env["UML_WORKER_SHUTDOWN_GRACE_S"] = "60"
    worker = chaos_stack.start_worker(MODEL, tiny_model, slots=4)
    _, base = chaos_stack.start_api()
    body = {"model": MODEL, "prompt": "Short", "max_tokens": 400, "temperature": 0}
    with httpx.Client(base_url=base, headers=AUTH, timeout=30) as http:
        job = http.post("/v1/jobs", json={"type": "completion", "body": body}).json()
        events_from(base, job["id"], 0, stop_after=5)
        worker.stop(signal.SIGTERM, timeout=60)
        final = http.get(f"/v1/jobs/{job['id']}").json()
    assert worker.process.returncode == 0
    assert final["status"] == "succeeded" and final["attempt"] == 1
