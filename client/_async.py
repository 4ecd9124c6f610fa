"""``UniversalClient``: the async face. It runs the I/O loop around :mod:`client._core`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from client import _calls as calls
from client._core import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT_S,
    Call,
    Core,
    JobCursor,
    SSEDecoder,
    openai_chunk,
)
from client._errors import APIConnectionError, APITimeoutError, JobError
from client._streams import AsyncStream
from client._types import (
    BATCH_TERMINAL,
    TERMINAL,
    Batch,
    BatchList,
    ChatCompletionChunk,
    ChatCompletionResponse,
    CompletionChunk,
    CompletionResponse,
    Event,
    FileDeleted,
    FileList,
    FileObject,
    Health,
    Job,
    JobList,
    ModelList,
    ModelOp,
    ModelOpList,
    ModelsOverview,
)

if TYPE_CHECKING:
    from client._ws import AsyncWebSocket

T = TypeVar("T")


class UniversalClient:
    """Async client of every route: ``async with UniversalClient() as client: ...``.

    ``api_key`` defaults to ``UML_API_KEY`` and ``base_url`` to ``UML_BASE_URL`` (else
    ``http://localhost:8000``). Errors are :mod:`client._errors`; 429, 503 and failed
    connections are retried ``max_retries`` times (see :mod:`client._core`).
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_retries: int = DEFAULT_MAX_RETRIES,
        headers: dict[str, str] | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._core = Core(
            base_url=base_url,
            api_key=api_key,
            timeout=timeout,
            max_retries=max_retries,
            headers=headers,
        )
        self._http = http_client or httpx.AsyncClient()

    @property
    def base_url(self) -> str:
        return self._core.base_url

    def __repr__(self) -> str:
        return f"UniversalClient({self._core.base_url!r})"

    async def __aenter__(self) -> UniversalClient:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ---- the I/O loop --------------------------------------------------------------------

    async def _send(self, call: Call) -> httpx.Response:
        """Send ``call``, retrying as the core decides; an error status raises."""
        attempt = 0
        while True:
            request = self._core.build(call)
            try:
                response = await self._http.send(request, stream=True)
                if response.status_code >= 400 or not call.stream:
                    await response.aread()
            except httpx.TransportError as exc:
                delay = self._core.retry_delay(call, attempt, error=exc)
                if delay is None:
                    raise self._core.translate(exc) from exc
            else:
                if response.status_code < 400:
                    return response
                delay = self._core.retry_delay(
                    call, attempt, status=response.status_code, headers=response.headers
                )
                if delay is None:
                    raise self._core.status_error(
                        response.status_code, response.content, response.headers
                    )
            await asyncio.sleep(delay)
            attempt += 1

    async def _json(self, call: Call, type: type[T]) -> T:
        return self._core.decode((await self._send(call)).content, type)

    async def _lines(self, response: httpx.Response) -> AsyncGenerator[str, None]:
        try:
            async for line in response.aiter_lines():
                yield line
        except httpx.TransportError as exc:
            raise self._core.translate(exc) from exc
        finally:
            await response.aclose()

    async def _chunks(self, response: httpx.Response, type: type[T]) -> AsyncGenerator[T, None]:
        decoder = SSEDecoder()
        lines = self._lines(response)
        try:
            async for line in lines:
                sse = decoder.feed(line)
                if sse is None:
                    continue
                chunk = openai_chunk(sse, type)
                if chunk is None:
                    return
                yield chunk
        finally:
            await lines.aclose()

    # ---- service -------------------------------------------------------------------------

    async def health_check(self) -> Health:
        return await self._json(calls.health(), Health)

    async def list_models(self) -> ModelList:
        return await self._json(calls.models(), ModelList)

    async def load_model(
        self,
        model: str,
        *,
        worker: str | None = None,
        device: str | None = None,
        path: str | None = None,
        engine: str | None = None,
        wait: bool = False,
    ) -> ModelOpList:
        """``POST /load_model`` (admin): the operation, ``pending`` (poll :meth:`model_op`),
        or, with ``wait``, as it stood when it ended or the server's wait ran out."""
        call = calls.load_model(model, worker, device, path, engine, wait)
        return await self._json(call, ModelOpList)

    async def unload_model(
        self, model: str, *, worker: str | None = None, wait: bool = False
    ) -> ModelOpList:
        """``POST /unload_model`` (admin): running jobs finish first; one op per worker."""
        return await self._json(calls.unload_model(model, worker, wait), ModelOpList)

    async def model_op(self, op_id: str) -> ModelOp:
        """``GET /models/ops/{id}``: a load or unload operation's state."""
        return await self._json(calls.model_op(op_id), ModelOp)

    async def models_overview(self) -> ModelsOverview:
        """``GET /models``: each model's workers and state, each worker's memory and slots."""
        return await self._json(calls.models_overview(), ModelsOverview)

    # ---- OpenAI-shaped generation --------------------------------------------------------

    async def complete(self, model: str, prompt: str, **params: Any) -> CompletionResponse:
        body = calls.completion_body(model, prompt, params)
        return await self._json(calls.completion(body), CompletionResponse)

    async def chat(
        self, model: str, messages: calls.Messages, **params: Any
    ) -> ChatCompletionResponse:
        body = calls.chat_body(model, messages, params)
        return await self._json(calls.chat(body), ChatCompletionResponse)

    async def stream_complete(
        self, model: str, prompt: str, **params: Any
    ) -> AsyncStream[CompletionChunk]:
        body = calls.completion_body(model, prompt, params, stream=True)
        return await self._open_chunks(calls.completion(body), CompletionChunk)

    async def stream_chat(
        self, model: str, messages: calls.Messages, **params: Any
    ) -> AsyncStream[ChatCompletionChunk]:
        body = calls.chat_body(model, messages, params, stream=True)
        return await self._open_chunks(calls.chat(body), ChatCompletionChunk)

    async def _open_chunks(self, call: Call, type: type[T]) -> AsyncStream[T]:
        return AsyncStream(self._chunks(await self._send(call), type))

    # ---- jobs ----------------------------------------------------------------------------

    async def submit_job(
        self,
        model: str,
        *,
        messages: calls.Messages | None = None,
        prompt: str | None = None,
        priority: str | None = None,
        deadline: float | str | None = None,
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        **params: Any,
    ) -> Job:
        """Queue a chat (``messages``) or completion (``prompt``) job; 202 and the job.

        One ``Idempotency-Key`` (``idempotency_key``, else a fresh one) is sent on every
        retry, so a retried submission never makes a second job.
        """
        body = calls.submission(
            model,
            messages=messages,
            prompt=prompt,
            priority=priority,
            deadline=deadline,
            metadata=metadata,
            params=params,
        )
        return await self._json(calls.submit_job(body, idempotency_key), Job)

    async def get_job(self, job_id: str) -> Job:
        return await self._json(calls.get_job(job_id), Job)

    async def list_jobs(
        self, *, status: str | None = None, limit: int | None = None, after: str | None = None
    ) -> JobList:
        return await self._json(calls.list_jobs(status, limit, after), JobList)

    async def cancel_job(self, job_id: str) -> Job:
        return await self._json(calls.cancel_job(job_id), Job)

    async def stream_job(
        self, job_id: str, *, after: int = 0, max_reconnects: int = 10
    ) -> AsyncStream[Event]:
        """The job's events after ``after`` until its final one; an ``error`` event raises
        :class:`JobError`. A dropped connection is resumed from the last seq seen (no gap,
        no duplicate) up to ``max_reconnects`` times in a row."""
        cursor = JobCursor(job_id, after, max_reconnects)
        first = await self._send(cursor.call())
        return AsyncStream(self._follow(cursor, first))

    async def _follow(
        self, cursor: JobCursor, response: httpx.Response | None
    ) -> AsyncGenerator[Event, None]:
        while not cursor.finished:
            try:
                if response is None:
                    response = await self._send(cursor.call())
                decoder = SSEDecoder()
                lines = self._lines(response)
                try:
                    async for line in lines:
                        cursor.check_deadline()
                        sse = decoder.feed(line)
                        event = None if sse is None else cursor.accept(sse)
                        if event is not None:
                            yield event
                            if cursor.finished:
                                return
                finally:
                    await lines.aclose()
            except APIConnectionError:
                cursor.check_deadline()  # else resumed below from cursor.last_seq
            response = None
            delay = cursor.reconnect_delay(self._core.rng)
            if delay is None:
                raise APIConnectionError(
                    f"the event stream of job {cursor.job_id} kept failing; "
                    f"last seq {cursor.last_seq}"
                )
            await asyncio.sleep(delay)

    async def wait_job(self, job_id: str, *, timeout: float | None = None) -> Job:
        """Follow the job to its end (by its event stream) and return it, terminal;
        :class:`APITimeoutError` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        cursor = JobCursor(job_id, deadline=deadline)
        events = self._follow(cursor, await self._send(cursor.call()))
        try:
            async for _ in events:
                pass
        except JobError:
            pass
        finally:
            await events.aclose()
        job = await self.get_job(job_id)
        while job.status not in TERMINAL:  # the log ended; the hash follows within moments
            cursor.check_deadline()
            await asyncio.sleep(0.05)
            job = await self.get_job(job_id)
        return job

    # ---- files and batches ---------------------------------------------------------------

    async def upload_file(
        self, file: str | Path | bytes, *, purpose: str = "batch", filename: str | None = None
    ) -> FileObject:
        return await self._json(calls.upload_file(file, purpose, filename), FileObject)

    async def get_file(self, file_id: str) -> FileObject:
        return await self._json(calls.get_file(file_id), FileObject)

    async def file_content(self, file_id: str) -> bytes:
        return (await self._send(calls.file_content(file_id))).content

    async def list_files(self, *, purpose: str | None = None) -> FileList:
        return await self._json(calls.list_files(purpose), FileList)

    async def delete_file(self, file_id: str) -> FileDeleted:
        return await self._json(calls.delete_file(file_id), FileDeleted)

    async def create_batch(
        self,
        input_file_id: str,
        *,
        endpoint: str = "/v1/chat/completions",
        completion_window: str = "24h",
        metadata: Mapping[str, str] | None = None,
    ) -> Batch:
        call = calls.create_batch(input_file_id, endpoint, completion_window, metadata)
        return await self._json(call, Batch)

    async def get_batch(self, batch_id: str) -> Batch:
        return await self._json(calls.get_batch(batch_id), Batch)

    async def list_batches(
        self, *, limit: int | None = None, after: str | None = None
    ) -> BatchList:
        return await self._json(calls.list_batches(limit, after), BatchList)

    async def cancel_batch(self, batch_id: str) -> Batch:
        return await self._json(calls.cancel_batch(batch_id), Batch)

    async def wait_batch(
        self, batch_id: str, *, poll_s: float = 0.5, timeout: float | None = None
    ) -> Batch:
        """Poll the batch until it is ``completed``, ``failed``, ``expired`` or ``cancelled``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            batch = await self.get_batch(batch_id)
            if batch.status in BATCH_TERMINAL:
                return batch
            if deadline is not None and time.monotonic() > deadline:
                raise APITimeoutError(f"batch {batch_id} did not finish within {timeout} s")
            await asyncio.sleep(poll_s)

    # ---- WebSocket -----------------------------------------------------------------------

    def websocket(
        self, *, open_timeout: float = 10.0
    ) -> AbstractAsyncContextManager[AsyncWebSocket]:
        """``async with client.websocket() as ws``: jobs over ``/ws`` (:mod:`client._ws`)."""
        from client._ws import AsyncWebSocket

        return AsyncWebSocket.connect(self._core, open_timeout=open_timeout)
