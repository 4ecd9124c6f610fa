"""A job stream whose server dies mid-stream resumes by itself with no gap, no duplicate.

An API process of its own, on a fixed port, is SIGKILLed after a few events and a fresh
one started on the same port; the client reconnects (retrying refused connections with
backoff) and resumes from the last seq it saw with ``Last-Event-ID``. The worker never
stopped, so the job ran on meanwhile: the log holds everything.
"""

from __future__ import annotations

import asyncio
import signal
import threading

import httpx
import pytest

from client.universal_client import SyncUniversalClient, UniversalClient
from protocol.events import DoneEvent, Event, TokenEvent
from tests.auth import ADMIN_KEY
from tests.integration.conftest import MODEL
from tests.integration.stack import Proc, Stack, wait_for
from uml.redis_server import free_port

pytestmark = pytest.mark.timeout(150)


def start_api(stack: Stack, port: int) -> Proc:
    proc = stack._spawn("api", ["serve", "--host", "127.0.0.1", "--port", str(port)])

    def ready() -> bool:
        assert proc.alive(), proc.log()
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(ready, 60, "the restarted API")
    return proc


def restart(stack: Stack, proc: Proc, port: int, started: list[Proc]) -> threading.Thread:
    """Kill the API now; start its successor on the same port in the background."""
    proc.stop(signal.SIGKILL)
    thread = threading.Thread(target=lambda: started.append(start_api(stack, port)))
    thread.start()
    return thread


def resumed_on(successors: list[Proc], job_id: str) -> bool:
    """Whether the restarted API served the job's event stream (the client came back)."""
    return bool(successors) and f"/v1/jobs/{job_id}/events" in successors[0].log()


def check(events: list[Event], text: str | None) -> None:
    assert [e.seq for e in events] == list(range(1, len(events) + 1))  # no gap, no duplicate
    assert isinstance(events[-1], DoneEvent)
    assert "".join(e.text for e in events if isinstance(e, TokenEvent)) == text


def test_sync_stream_job_survives_an_api_restart(stack: Stack, api_url: str) -> None:
    port = free_port()
    proc = start_api(stack, port)
    successors: list[Proc] = []
    thread = None
    with SyncUniversalClient(f"http://127.0.0.1:{port}", ADMIN_KEY) as client:
        job = client.submit_job(MODEL, prompt="resume me", max_tokens=600, seed=8)
        events: list[Event] = []
        with client.stream_job(job.id) as stream:
            for event in stream:
                events.append(event)
                if len(events) == 4:
                    thread = restart(stack, proc, port, successors)
        assert thread is not None
        thread.join()
        check(events, client.get_job(job.id).text)
    assert resumed_on(successors, job.id)


async def test_async_stream_job_survives_an_api_restart(stack: Stack, api_url: str) -> None:
    port = free_port()
    proc = start_api(stack, port)
    successors: list[Proc] = []
    thread = None
    async with UniversalClient(f"http://127.0.0.1:{port}", ADMIN_KEY) as client:
        job = await client.submit_job(MODEL, prompt="resume me too", max_tokens=600, seed=9)
        events: list[Event] = []
        async with await client.stream_job(job.id) as stream:
            async for event in stream:
                events.append(event)
                if len(events) == 4:
                    thread = await asyncio.to_thread(restart, stack, proc, port, successors)
        assert thread is not None
        await asyncio.to_thread(thread.join)
        check(events, (await client.get_job(job.id)).text)
    assert resumed_on(successors, job.id)
