"""``SyncUniversalClient``: the blocking twin of :class:`client._async.UniversalClient`.

Same methods, same arguments, same answers; only the I/O loop differs.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Mapping
from contextlib import AbstractContextManager
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
from client._streams import Stream
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
    from client._ws import SyncWebSocket

T = TypeVar("T")


class SyncUniversalClient:
    """Blocking client of every route: ``with SyncUniversalClient() as client: ...``.

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
        http_client: httpx.Client | None = None,
    ) -> None:
        self._core = Core(
            base_url=base_url,
            api_key=api_key,
            timeout=timeout,
            max_retries=max_retries,
            headers=headers,
        )
        self._http = http_client or httpx.Client()

    @property
    def base_url(self) -> str:
        return self._core.base_url

    def __repr__(self) -> str:
        return f"SyncUniversalClient({self._core.base_url!r})"

    def __enter__(self) -> SyncUniversalClient:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # ---- the I/O loop --------------------------------------------------------------------

    def _send(self, call: Call) -> httpx.Response:
        """Send ``call``, retrying as the core decides; an error status raises."""
        attempt = 0
        while True:
            request = self._core.build(call)
            try:
                response = self._http.send(request, stream=True)
                if response.status_code >= 400 or not call.stream:
                    response.read()
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
            time.sleep(delay)
            attempt += 1

    def _json(self, call: Call, type: type[T]) -> T:
        return self._core.decode((self._send(call)).content, type)

    def _lines(self, response: httpx.Response) -> Generator[str, None, None]:
        try:
            yield from response.iter_lines()
        except httpx.TransportError as exc:
            raise self._core.translate(exc) from exc
        finally:
            response.close()

    def _chunks(self, response: httpx.Response, type: type[T]) -> Generator[T, None, None]:
        decoder = SSEDecoder()
        lines = self._lines(response)
        try:
            for line in lines:
                sse = decoder.feed(line)
                if sse is None:
                    continue
                chunk = openai_chunk(sse, type)
                if chunk is None:
                    return
                yield chunk
        finally:
            lines.close()

    # ---- service -------------------------------------------------------------------------

    def health_check(self) -> Health:
        return self._json(calls.health(), Health)

    def list_models(self) -> ModelList:
        return self._json(calls.models(), ModelList)

    def load_model(
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
        return self._json(call, ModelOpList)

    def unload_model(
        self, model: str, *, worker: str | None = None, wait: bool = False
    ) -> ModelOpList:
        """``POST /unload_model`` (admin): running jobs finish first; one op per worker."""
        return self._json(calls.unload_model(model, worker, wait), ModelOpList)

    def model_op(self, op_id: str) -> ModelOp:
        """``GET /models/ops/{id}``: a load or unload operation's state."""
        return self._json(calls.model_op(op_id), ModelOp)

    def models_overview(self) -> ModelsOverview:
        """``GET /models``: each model's workers and state, each worker's memory and slots."""
        return self._json(calls.models_overview(), ModelsOverview)

    # ---- OpenAI-shaped generation --------------------------------------------------------

    def complete(self, model: str, prompt: str, **params: Any) -> CompletionResponse:
        body = calls.completion_body(model, prompt, params)
        return self._json(calls.completion(body), CompletionResponse)

    def chat(self, model: str, messages: calls.Messages, **params: Any) -> ChatCompletionResponse:
        body = calls.chat_body(model, messages, params)
        return self._json(calls.chat(body), ChatCompletionResponse)

    def stream_complete(self, model: str, prompt: str, **params: Any) -> Stream[CompletionChunk]:
        body = calls.completion_body(model, prompt, params, stream=True)
        return self._open_chunks(calls.completion(body), CompletionChunk)

    def stream_chat(
        self, model: str, messages: calls.Messages, **params: Any
    ) -> Stream[ChatCompletionChunk]:
        body = calls.chat_body(model, messages, params, stream=True)
        return self._open_chunks(calls.chat(body), ChatCompletionChunk)

    def _open_chunks(self, call: Call, type: type[T]) -> Stream[T]:
        return Stream(self._chunks(self._send(call), type))

    # ---- jobs ----------------------------------------------------------------------------

    def submit_job(
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
        return self._json(calls.submit_job(body, idempotency_key), Job)

    def get_job(self, job_id: str) -> Job:
        return self._json(calls.get_job(job_id), Job)

    def list_jobs(
        self, *, status: str | None = None, limit: int | None = None, after: str | None = None
    ) -> JobList:
        return self._json(calls.list_jobs(status, limit, after), JobList)

    def cancel_job(self, job_id: str) -> Job:
        return self._json(calls.cancel_job(job_id), Job)

    def stream_job(self, job_id: str, *, after: int = 0, max_reconnects: int = 10) -> Stream[Event]:
        """The job's events after ``after`` until its final one; an ``error`` event raises
        :class:`JobError`. A dropped connection is resumed from the last seq seen (no gap,
        no duplicate) up to ``max_reconnects`` times in a row."""
        cursor = JobCursor(job_id, after, max_reconnects)
        first = self._send(cursor.call())
        return Stream(self._follow(cursor, first))

    def _follow(
        self, cursor: JobCursor, response: httpx.Response | None
    ) -> Generator[Event, None, None]:
        while not cursor.finished:
            try:
                if response is None:
                    response = self._send(cursor.call())
                decoder = SSEDecoder()
                lines = self._lines(response)
                try:
                    for line in lines:
                        cursor.check_deadline()
                        sse = decoder.feed(line)
                        event = None if sse is None else cursor.accept(sse)
                        if event is not None:
                            yield event
                            if cursor.finished:
                                return
                finally:
                    lines.close()
            except APIConnectionError:
                cursor.check_deadline()  # else resumed below from cursor.last_seq
            response = None
            delay = cursor.reconnect_delay(self._core.rng)
            if delay is None:
                raise APIConnectionError(
                    f"the event stream of job {cursor.job_id} kept failing; "
                    f"last seq {cursor.last_seq}"
                )
            time.sleep(delay)

    def wait_job(self, job_id: str, *, timeout: float | None = None) -> Job:
        """Follow the job to its end (by its event stream) and return it, terminal;
        :class:`APITimeoutError` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        cursor = JobCursor(job_id, deadline=deadline)
        events = self._follow(cursor, self._send(cursor.call()))
        try:
            for _ in events:
                pass
        except JobError:
            pass
        finally:
            events.close()
        job = self.get_job(job_id)
        while job.status not in TERMINAL:  # the log ended; the hash follows within moments
            cursor.check_deadline()
            time.sleep(0.05)
            job = self.get_job(job_id)
        return job

    # ---- files and batches ---------------------------------------------------------------

    def upload_file(
        self, file: str | Path | bytes, *, purpose: str = "batch", filename: str | None = None
    ) -> FileObject:
        return self._json(calls.upload_file(file, purpose, filename), FileObject)

    def get_file(self, file_id: str) -> FileObject:
        return self._json(calls.get_file(file_id), FileObject)

    def file_content(self, file_id: str) -> bytes:
        return (self._send(calls.file_content(file_id))).content

    def list_files(self, *, purpose: str | None = None) -> FileList:
        return self._json(calls.list_files(purpose), FileList)

    def delete_file(self, file_id: str) -> FileDeleted:
        return self._json(calls.delete_file(file_id), FileDeleted)

    def create_batch(
        self,
        input_file_id: str,
        *,
        endpoint: str = "/v1/chat/completions",
        completion_window: str = "24h",
        metadata: Mapping[str, str] | None = None,
    ) -> Batch:
        call = calls.create_batch(input_file_id, endpoint, completion_window, metadata)
        return self._json(call, Batch)

    def get_batch(self, batch_id: str) -> Batch:
        return self._json(calls.get_batch(batch_id), Batch)

    def list_batches(self, *, limit: int | None = None, after: str | None = None) -> BatchList:
        return self._json(calls.list_batches(limit, after), BatchList)

    def cancel_batch(self, batch_id: str) -> Batch:
        return self._json(calls.cancel_batch(batch_id), Batch)

    def wait_batch(
        self, batch_id: str, *, poll_s: float = 0.5, timeout: float | None = None
    ) -> Batch:
        """Poll the batch until it is ``completed``, ``failed``, ``expired`` or ``cancelled``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            batch = self.get_batch(batch_id)
            if batch.status in BATCH_TERMINAL:
                return batch
            if deadline is not None and time.monotonic() > deadline:
                raise APITimeoutError(f"batch {batch_id} did not finish within {timeout} s")
            time.sleep(poll_s)

    # ---- WebSocket -----------------------------------------------------------------------

    def websocket(self, *, open_timeout: float = 10.0) -> AbstractContextManager[SyncWebSocket]:
        """``with client.websocket() as ws``: jobs over ``/ws`` (:mod:`client._ws`)."""
        from client._ws import SyncWebSocket

        return SyncWebSocket.connect(self._core, open_timeout=open_timeout)
