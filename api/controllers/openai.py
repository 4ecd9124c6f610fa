"""OpenAI-compatible endpoints: ``/v1/completions``, ``/v1/chat/completions``, ``/v1/models``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.response import Stream

from api import logs, render, validation
from api.metrics import Metrics, arrived_at
from api.openapi import ERRORS, ChatOperation, CompletionOperation
from api.security import audit
from api.security.limits import METERED
from api.services import generation
from api.state import Resources
from protocol.auth import ApiKey
from protocol.events import DoneEvent, Event
from protocol.jobs import JobSpec
from protocol.openai import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    ModelCard,
    ModelList,
)

JOB_HEADER = "x-uml-job-id"


def owner_of(request: Request[Any, Any, Any]) -> str:
    """The id of the key a request carries: the owner of the jobs it creates."""
    user = request.user
    return user.id if isinstance(user, ApiKey) else ""


async def _disconnected(request: Request[Any, Any, Any]) -> None:
    """Return once the client has gone (the body has already been read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _note_request(request: Request[Any, Any, Any], spec: JobSpec) -> None:
    """Audit: the model, and the prompt (kept only when the text setting is on)."""
    prompt = spec.prompt
    if prompt is None and spec.messages is not None:
        prompt = "\n".join(f"{m.role}: {m.content or ''}" for m in spec.messages)
    audit.note(request.scope, model=spec.model, prompt=prompt)


async def _noting_usage(
    request: Request[Any, Any, Any], events: AsyncIterator[Event | None]
) -> AsyncIterator[Event | None]:
    """Pass a stream's events through; audit its token counts when it ends."""
    async for event in events:
        if isinstance(event, DoneEvent):
            usage = event.usage
            audit.note(
                request.scope,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
            )
        yield event


async def _run(
    request: Request[Any, Any, Any],
    res: Resources,
    req: CompletionRequest | ChatCompletionRequest,
    spec: JobSpec,
) -> Response[Any] | Stream:
    """Admit, queue and answer one generation request, streamed or whole."""
    await res.models.require(spec.model)
    await generation.check_context(res.models, spec)
    policy = res.limiter.policy(request.user)
    stream_slot = await res.limiter.open_stream(policy) if req.stream else None
    try:
        job_id = await generation.submit(res.store, spec, owner_of(request))
    except BaseException:  # a full queue: give the stream slot back at once
        if policy is not None and stream_slot is not None:
            await res.limiter.close_stream(policy, stream_slot)
        raise
    logs.note_job(job_id)
    created = int(time.time())
    headers = {JOB_HEADER: job_id}
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        renderer = render.ChunkRenderer(spec.kind, job_id, spec.model, created, include_usage)
        watch = res.watcher.watch(request.auth)
        ping_s = res.settings.server.sse_ping_s
        events = res.limiter.leased(
            generation.follow(res.relay, res.store, job_id, ping_s, watch),
            policy,
            stream_slot,
        )
        timed = Metrics.of(request.app.state).tokens(spec.model, arrived_at(request.scope), events)
        return Stream(
            renderer.stream(_noting_usage(request, timed)),
            media_type="text/event-stream",
            headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    result = await generation.collect_or_cancel(
        res.relay, res.store, job_id, lambda: _disconnected(request)
    )
    if result is None:  # the client left; nobody reads this
        return Response(b"", status_code=499)
    usage = result.usage
    audit.note(
        request.scope,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        completion=result.text,
    )
    body: CompletionResponse | ChatCompletionResponse
    if spec.kind == "chat":
        body = render.chat_response(job_id, spec.model, created, result)
    else:
        body = render.completion_response(job_id, spec.model, created, result)
    return Response(body, headers=headers)


class OpenAIController(Controller):
    path = "/v1"
    tags = ["openai"]

    @post(
        "/completions",
        summary="Create a completion",
        description="OpenAI-compatible text completion; `stream: true` answers SSE chunks.",
        status_code=200,
        operation_class=CompletionOperation,
        responses=ERRORS,
        opt=METERED,
    )
    async def completions(
        self, request: Request[Any, Any, Any], state: State
    ) -> Response[Any] | Stream:
        res = Resources.of(state)
        req, spec = validation.completion(await request.body(), res.settings.server)
        _note_request(request, spec)
        return await _run(request, res, req, spec)

    @post(
        "/chat/completions",
        summary="Create a chat completion",
        description="OpenAI-compatible chat completion; `stream: true` answers SSE chunks.",
        status_code=200,
        operation_class=ChatOperation,
        responses=ERRORS,
        opt=METERED,
    )
    async def chat_completions(
        self, request: Request[Any, Any, Any], state: State
    ) -> Response[Any] | Stream:
        res = Resources.of(state)
        req, spec = validation.chat(await request.body(), res.settings.server)
        _note_request(request, spec)
        return await _run(request, res, req, spec)

    @get("/models", summary="List the models live workers serve", responses=ERRORS)
    async def models(self, state: State) -> ModelList:
        snap = await Resources.of(state).models.snapshot()
        return ModelList(data=[ModelCard(id=name) for name in sorted(snap.models)])
