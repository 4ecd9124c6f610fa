"""The ``/v1/jobs`` service: submit, read, list, cancel and replay background jobs.

The controllers (:mod:`api.controllers.jobs`) decode and check; these functions talk to
:class:`api.services.job_store.JobStore` and the relay, and turn records into
:class:`protocol.jobs.Job`. The sync OpenAI calls' jobs are :mod:`api.services.generation`.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
import msgspec

from api.errors import APIError
from api.relay import Relay, RelayUnavailable, StreamCut
from api.render import PING
from api.security.limits import Limiter, Policy
from api.security.revocation import Watch
from api.services.generation import queue_full
from api.services.job_store import IdempotencyConflict, JobStore, QueueFull, Snapshot, view_status
from protocol.events import Event, encode_event, is_final
from protocol.jobs import Job, JobList, JobRecord, JobSpec, JobTimings, queued_record
from protocol.meter import token_meter
from protocol.states import TERMINAL, JobStatus, Priority

CANCEL_WAIT_S = 10.0
"""How long a cancel waits for a running job's worker to end it before answering."""
LIST_SCAN = 1000
"""Most index entries one listing examines (matters only with a ``status`` filter)."""


@dataclass(frozen=True)
class NewJob:
    spec: JobSpec
    priority: Priority
    deadline: float | None
    metadata: dict[str, str]


def not_found(job_id: str) -> APIError:
    return APIError(404, f"No job with id `{job_id}`", param="job_id", code="job_not_found")


def body_hash(body: bytes) -> str:
    """SHA-256 of the body's JSON with sorted keys: key order and spacing do not matter."""
    try:
        canonical = msgspec.json.encode(msgspec.json.decode(body), order="sorted")
    except msgspec.DecodeError:
        canonical = body
    return hashlib.sha256(canonical).hexdigest()


def to_job(record: JobRecord, position: int | None = None) -> Job:
    status = view_status(record)
    return Job(
        id=record.id,
        type=record.kind,
        model=record.model,
        status=status,
        priority=record.priority,
        queue_position=position if status is JobStatus.QUEUED else None,
        completion_tokens=record.completion_tokens,
        text=record.text,
        finish_reason=record.finish_reason,
        usage=record.usage,
        error=record.error,
        deadline=record.deadline,
        metadata=record.metadata or {},
        attempt=record.attempt,
        timings=JobTimings(
            created_at=record.created_at,
            started_at=record.started_at,
            first_token_at=record.first_token_at,
            finished_at=record.finished_at,
        ),
    )


async def submit(
    store: JobStore, owner: str, job: NewJob, idem: str | None, raw_body: bytes
) -> tuple[Job, bool]:
    """Queue ``job``; return it and whether it was an idempotent replay."""
    record = queued_record(
        job.spec, owner, job.priority, job.deadline, job.metadata, token_meter(owner)
    )
    try:
        submitted = await store.submit(record, idem, body_hash(raw_body) if idem else "")
    except QueueFull as exc:
        raise queue_full(exc, store) from None
    except IdempotencyConflict:
        raise APIError(
            409,
            "This Idempotency-Key was already used with a different request body",
            param="Idempotency-Key",
            code="idempotency_key_reused",
        ) from None
    if submitted.replayed:  # the job may have moved on since: read it
        return await get(store, owner, submitted.job_id), True
    return to_job(record, submitted.position), False


async def snapshot(store: JobStore, owner: str, job_id: str) -> Snapshot:
    snap = await store.read(job_id, owner)
    if snap is None:
        raise not_found(job_id)
    return snap


async def get(store: JobStore, owner: str, job_id: str) -> Job:
    snap = await snapshot(store, owner, job_id)
    return to_job(snap.record, snap.queue_position)


async def page(
    store: JobStore, owner: str, status: JobStatus | None, limit: int, after: str | None
) -> JobList:
    records, cursor, more = await store.page(owner, after, limit, status, LIST_SCAN)
    data = [to_job(r) for r in records]
    first = data[0].id if data else None
    return JobList(data=data, first_id=first, last_id=cursor, has_more=more)


async def cancel(store: JobStore, relay: Relay, owner: str, job_id: str) -> Job:
    """Cancel the job; for a running one, wait (bounded) until its worker has ended it."""
    outcome = await store.cancel(job_id, owner)
    if outcome is None:
        raise not_found(job_id)
    status, last_seq = outcome
    if status is JobStatus.RUNNING:
        await _await_final(relay, job_id, last_seq)
    return await get(store, owner, job_id)


async def _await_final(relay: Relay, job_id: str, after_seq: int) -> None:
    try:
        sub = await relay.subscribe(job_id, after_seq)
    except RelayUnavailable:
        return
    with anyio.move_on_after(CANCEL_WAIT_S):
        try:
            async for _ in sub.events():
                pass
        except RelayUnavailable:
            pass
    sub.close()


async def event_stream(
    store: JobStore,
    relay: Relay,
    owner: str,
    job_id: str,
    after: int,
    ping_s: float,
    limiter: Limiter,
    policy: Policy | None,
    watch: Watch | None = None,
) -> AsyncIterator[bytes]:
    """The SSE bytes of the job's log after ``after``: ``id: {seq}`` + ``data: {json}`` per
    event, a comment ping each idle ``ping_s``; it ends with the log's final event, or with an
    ``error`` event when ``watch`` fires (the key was revoked or expired).

    Checks ownership, then takes one of the key's stream slots (429 past
    ``max_streams``), before the first byte. Leaving the stream never cancels the job.
    """
    snap = await snapshot(store, owner, job_id)
    if snap.record.status in TERMINAL and after >= snap.last_seq:
        return _empty()
    slot = await limiter.open_stream(policy)
    try:
        sub = await relay.subscribe(job_id, after)
    except RelayUnavailable as exc:
        if policy is not None and slot is not None:
            await limiter.close_stream(policy, slot)
        raise APIError(503, str(exc), type="service_unavailable") from exc
    if watch is not None:
        watch.bind(sub)
    return _render(limiter.leased(sub.events(ping_s), policy, slot), watch)


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover


async def _render(
    events: AsyncIterator[Event | None], watch: Watch | None = None
) -> AsyncIterator[bytes]:
    try:
        async for event in events:
            if event is None:
                yield PING
                continue
            yield b"id: %d\ndata: %s\n\n" % (event.seq, encode_event(event))
            if is_final(event):
                return
    except StreamCut as exc:
        body = msgspec.json.encode({"error": exc.info()})
        yield b"event: error\ndata: " + body + b"\n\n"
    finally:
        if watch is not None:
            watch.close()
