"""The OpenAI generation path: the jobs behind ``/v1/completions``, ``/v1/chat/completions``
and a ``/ws`` ``generate``: submit one, follow or collect its event log, cancel it when its
client goes away. (``/v1/jobs`` is :mod:`api.services.jobs`.)

Submission contract (the workers rely on it): in one atomic script, the job hash
``uml:job:{id}`` is written with status ``queued`` and the retention TTL, and the Celery task
``uml.generate`` (``task_id = job id``) is pushed onto ``model.<name>`` (see
:mod:`api.enqueue` and :mod:`api.services.job_store`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
from msgspec import Struct

from api.errors import APIError, unavailable
from api.relay import Relay, RelayUnavailable, StreamCut
from api.security.revocation import Watch
from api.services.job_store import JobStore, KeyShareFull, QueueFull
from api.services.models import LiveModels
from protocol.events import DoneEvent, ErrorEvent, Event, TokenEvent, is_final
from protocol.jobs import MIN_PROMPT_TOKENS, JobSpec, exceeds_context, queued_record
from protocol.meter import token_meter
from protocol.openai import ErrorInfo, Usage
from protocol.states import Priority


class Result(Struct, kw_only=True):
    """A finished job as a sync OpenAI call sees it."""

    text: str
    finish_reason: str
    usage: Usage


def status_for_error(info: ErrorInfo) -> int:
    """The HTTP status of a job that ended with ``info``."""
    if info.type == "invalid_request_error":
        return 400
    if info.type == "service_unavailable":
        return 503
    return 500


async def check_context(models: LiveModels, spec: JobSpec, param: str = "max_tokens") -> None:
    """400 ``context_length_exceeded`` before queueing a job no worker of its model can hold.

    The rule is :func:`protocol.jobs.exceeds_context`, the worker's own, against the context
    the model's workers announce; the API has no tokenizer, so it counts the prompt as
    :data:`MIN_PROMPT_TOKENS` and the worker still checks the exact count.
    """
    context = await models.context(spec.model)
    max_tokens = spec.sampling.max_tokens
    if exceeds_context(MIN_PROMPT_TOKENS, max_tokens, context):
        raise APIError(
            400,
            f"max_tokens ({max_tokens}) plus the prompt (at least {MIN_PROMPT_TOKENS} token) "
            f"exceeds the model's context of {context} tokens",
            param=param,
            code="context_length_exceeded",
        )


async def submit(
    store: JobStore, spec: JobSpec, owner: str, priority: Priority = Priority.INTERACTIVE
) -> str:
    """Record and queue a sync call's job (see :meth:`JobStore.submit`); return its id.

    A full model queue answers 503, a key over its share of it 429 (see :func:`queue_full`).
    """
    record = queued_record(spec, owner, priority, meter=token_meter(owner))
    try:
        return (await store.submit(record)).job_id
    except QueueFull as exc:
        raise queue_full(exc, store) from None


def queue_full(exc: QueueFull, store: JobStore) -> APIError:
    """503 for a model's full queue (the service's limit); 429 for a key over its share of
    it (that key's own limit: other keys are still admitted). Both carry ``Retry-After``."""
    retry = store.bounds.retry_after_s
    which = exc.priority.value
    if isinstance(exc, KeyShareFull):
        return APIError(
            429,
            f"This API key already has {exc.queued} {which} jobs queued for this model, its "
            f"share of the model's queue (limit {exc.limit}); retry when some have started",
            type="requests",
            code="queue_share_exceeded",
            headers={"Retry-After": str(retry)},
        )
    return unavailable(
        f"The model's {which} queue is full ({exc.queued} jobs, limit {exc.limit}); retry later",
        retry,
    )


async def cancel_shielded(store: JobStore, job_id: str) -> None:
    """Cancel an abandoned job (:meth:`JobStore.cancel`, any owner's), surviving the
    cancellation of its caller (client disconnect)."""
    with anyio.CancelScope(shield=True), anyio.move_on_after(5):
        try:
            await store.cancel(job_id, None)
        except Exception:  # best effort: the worker's deadline still bounds the job
            pass


async def collect(relay: Relay, job_id: str) -> Result:
    """Follow the job to its end and return its whole text, or raise its error."""
    parts: list[str] = []
    try:
        sub = await relay.subscribe(job_id)
    except RelayUnavailable as exc:
        raise unavailable(str(exc)) from exc
    try:
        async for event in sub.events():
            if isinstance(event, TokenEvent):
                parts.append(event.text)
            elif isinstance(event, DoneEvent):
                return Result(
                    text="".join(parts), finish_reason=event.finish_reason, usage=event.usage
                )
            elif isinstance(event, ErrorEvent):
                info = event.error
                raise APIError(
                    status_for_error(info), info.message, info.type, info.param, info.code
                )
    except RelayUnavailable as exc:
        raise unavailable(str(exc)) from exc
    finally:
        sub.close()
    raise unavailable("The job's event log ended without a result")


async def collect_or_cancel(
    relay: Relay,
    store: JobStore,
    job_id: str,
    disconnected: Callable[[], Awaitable[None]],
) -> Result | None:
    """:func:`collect`, unless ``disconnected`` returns first: then cancel the job, ``None``."""
    outcome: Result | BaseException | None = None
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            await disconnected()
            tg.cancel_scope.cancel()

        tg.start_soon(watch)
        try:
            outcome = await collect(relay, job_id)
        except Exception as exc:
            outcome = exc
        tg.cancel_scope.cancel()
    if isinstance(outcome, BaseException):
        raise outcome
    if outcome is None and not relay.draining:
        await cancel_shielded(store, job_id)
    return outcome


async def follow(
    relay: Relay,
    store: JobStore,
    job_id: str,
    idle_s: float,
    watch: Watch | None = None,
) -> AsyncIterator[Event | None]:
    """The job's events (``None`` on idle ticks); cancels the job if abandoned before its end.

    The subscription is made on first iteration, so a response that never starts leaves
    nothing registered in the relay (the log is replayable; nothing is missed). A ``watch``
    that fires (the key was revoked or expired) ends the stream with an error event, and the
    job, abandoned, is cancelled; the watch is closed with the stream.
    """
    finished = False
    try:
        sub = await relay.subscribe(job_id)
        if watch is not None:
            watch.bind(sub)
        try:
            async for event in sub.events(idle_s):
                if event is not None and is_final(event):
                    finished = True
                yield event
        finally:
            sub.close()
    except StreamCut as exc:
        finished = isinstance(exc, RelayUnavailable)  # Redis is gone: nothing to cancel
        yield ErrorEvent(seq=0, error=exc.info())
    finally:
        if watch is not None:
            watch.close()
        if not finished and not relay.draining:
            await cancel_shielded(store, job_id)
