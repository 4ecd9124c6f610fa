"""The jobs API: submit, read, list, follow and cancel background jobs (docs/jobs.md).

Every route that takes a job id answers 404 for a job of another key, as for a missing one.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath, Parameter
from litestar.response import Stream

from api import validation
from api.controllers.openai import owner_of
from api.errors import invalid_request
from api.openapi import ERRORS, MIN_0, EventsOperation, JobSubmissionOperation
from api.security.limits import METERED
from api.services import generation, jobs
from api.state import Resources
from protocol.jobs import Job, JobList
from protocol.states import JobStatus

MAX_IDEMPOTENCY_KEY_CHARS = 255


def _idempotency_key(request: Request[Any, Any, Any]) -> str | None:
    value = request.headers.get("idempotency-key")
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > MAX_IDEMPOTENCY_KEY_CHARS or not value.isprintable():
        raise invalid_request(
            f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_CHARS} printable characters",
            param="Idempotency-Key",
        )
    return value


def _resume_after(request: Request[Any, Any, Any], after: int | None) -> int:
    """``Last-Event-ID`` (a reconnecting EventSource sends it) wins over ``?after=``."""
    header = request.headers.get("last-event-id")
    if header is None:
        return after or 0
    try:
        seq = int(header.strip())
    except ValueError:
        raise invalid_request("Last-Event-ID must be an event seq", param="Last-Event-ID") from None
    if seq < 0:
        raise invalid_request("Last-Event-ID must be an event seq", param="Last-Event-ID")
    return seq


class JobsController(Controller):
    path = "/v1/jobs"
    tags = ["jobs"]

    @post(
        "",
        summary="Submit a job",
        description="Queue a chat or completion body as a background job; 202 and the job.",
        status_code=202,
        responses=ERRORS,
        opt=METERED,
        operation_class=JobSubmissionOperation,
    )
    async def submit(self, request: Request[Any, Any, Any], state: State) -> Response[Job]:
        res = Resources.of(state)
        raw = await request.body()
        new = validation.job_submission(raw, res.settings.server)
        idem = _idempotency_key(request)
        await res.models.require(new.spec.model)
        await generation.check_context(res.models, new.spec, param="body.max_tokens")
        job, replayed = await jobs.submit(res.store, owner_of(request), new, idem, raw)
        headers = {"Location": f"/v1/jobs/{job.id}"}
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        return Response(job, status_code=202, headers=headers)

    @get("", summary="List your jobs, newest first", responses=ERRORS)
    async def list_jobs(
        self,
        request: Request[Any, Any, Any],
        state: State,
        status: Annotated[
            JobStatus | None, Parameter(description="Only jobs in this state.")
        ] = None,
        limit: Annotated[int, Parameter(ge=1, le=100, description="Most jobs.")] = 20,
        after: Annotated[
            str | None, Parameter(max_length=64, description="The last_id of the previous page.")
        ] = None,
    ) -> JobList:
        res = Resources.of(state)
        return await jobs.page(res.store, owner_of(request), status, limit, after)

    @get("/{job_id:str}", summary="Read a job", responses=ERRORS)
    async def get_job(
        self, request: Request[Any, Any, Any], state: State, job_id: FromPath[str]
    ) -> Job:
        return await jobs.get(Resources.of(state).store, owner_of(request), job_id)

    @get(
        "/{job_id:str}/events",
        summary="Follow a job's event log (SSE)",
        description="`id: {seq}` + `data: {event}` per event; resumes after `Last-Event-ID` "
        "or `?after=`.",
        responses=ERRORS,
        media_type="text/event-stream",
        operation_class=EventsOperation,
    )
    async def events(
        self,
        request: Request[Any, Any, Any],
        state: State,
        job_id: FromPath[str],
        after: Annotated[
            int | None,
            Parameter(
                ge=0,
                schema_extra=MIN_0,
                description="Resume after this seq (Last-Event-ID wins).",
            ),
        ] = None,
    ) -> Stream:
        res = Resources.of(state)
        body = await jobs.event_stream(
            res.store,
            res.relay,
            owner_of(request),
            job_id,
            _resume_after(request, after),
            res.settings.server.sse_ping_s,
            res.limiter,
            res.limiter.policy(request.user),
            res.watcher.watch(request.auth),
        )
        return Stream(
            body,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @post("/{job_id:str}/cancel", summary="Cancel a job", status_code=200, responses=ERRORS)
    async def cancel(
        self, request: Request[Any, Any, Any], state: State, job_id: FromPath[str]
    ) -> Job:
        res = Resources.of(state)
        return await jobs.cancel(res.store, res.relay, owner_of(request), job_id)
