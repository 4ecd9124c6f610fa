"""Batches (``/v1/batches``): create, read, list and cancel; and the pure parsing of a batch
input file into prepared requests and error lines.

A batch is the hash ``uml:batch:{id}`` (:func:`to_batch` reads it); the
:class:`api.services.batches.runner.BatchRunner` drives it through OpenAI's states::

    validating ─┬─> in_progress ──> finalizing ──> completed
                └─> failed           │ cancel        (no request could be read)
    validating | in_progress ──cancel──> cancelling ──> cancelled
    in_progress ──(completion window over)──> expired

A cancel or an expiry keeps every result already produced: the output file holds them, and
each request that did not finish gets an error line (``batch_cancelled`` / ``batch_expired``).
"""

from __future__ import annotations

import io
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import redis.asyncio as aioredis

from api import validation
from api.errors import APIError, invalid_request
from api.services.files import FileStore
from api.services.paging import newest_first
from protocol.batches import (
    BATCH_ENDPOINTS,
    BATCH_TERMINAL,
    COMPLETION_WINDOW_S,
    Batch,
    BatchCreate,
    BatchError,
    BatchErrors,
    BatchStatus,
    BatchUsage,
    InputLine,
    LineError,
    OutputLine,
    RequestCounts,
)
from protocol.jobs import JobSpec
from protocol.keys import BATCHES_ACTIVE, batch_key, batches_index_key, reply_text
from protocol.settings import ServerSettings

_create_decoder = msgspec.json.Decoder(BatchCreate)
_line_decoder = msgspec.json.Decoder(InputLine)

_TIMES = (
    "created_at",
    "in_progress_at",
    "expires_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)


class Prepared(msgspec.Struct, kw_only=True):
    """One valid input line, ready to run: kept in the batch's ``todo`` list."""

    line: int
    custom_id: str
    spec: JobSpec


@dataclass
class ParsedFile:
    todo: list[Prepared] = field(default_factory=list)
    errors: list[OutputLine] = field(default_factory=list)
    """Error-file lines of the input lines that cannot run."""
    total: int = 0
    """Requests in the file (non-blank lines)."""
    fatal: list[BatchError] = field(default_factory=list)
    """Faults of the file as a whole: the batch fails."""


def new_batch_id() -> str:
    """Sortable by creation time, unguessable."""
    return f"batch_{int(time.time() * 1000):012x}{secrets.token_hex(8)}"


def not_found(batch_id: str) -> APIError:
    return APIError(404, f"No batch with id `{batch_id}`", param="batch_id", code="batch_not_found")


def error_line(
    batch_id: str, line: int, custom_id: str | None, code: str, message: str
) -> OutputLine:
    return OutputLine(
        id=f"batch_req_{batch_id}_{line}",
        custom_id=custom_id,
        error=LineError(code=code, message=message),
    )


def check_line(raw: bytes) -> InputLine:
    """What every input line must be, at upload and when its batch runs: a JSON object with
    a non-empty ``custom_id``, ``method`` POST, a batch endpoint as ``url`` and an object as
    ``body``. Raises :class:`APIError` naming the field; the body's own fields are checked
    against the batch's endpoint when it runs (:func:`parse_input`)."""
    line = validation.decode(_line_decoder, raw)
    if not line.custom_id:
        raise invalid_request("custom_id must not be empty", param="custom_id")
    if line.method.upper() != "POST":
        raise invalid_request("method must be POST", param="method")
    if line.url not in BATCH_ENDPOINTS:
        raise invalid_request(f"url must be one of {', '.join(BATCH_ENDPOINTS)}", param="url")
    if bytes(line.body)[:1] != b"{":
        raise invalid_request("body must be a JSON object", param="body")
    return line


def _at_line(number: int, exc: APIError) -> str:
    where = f" (param `{exc.info.param}`)" if exc.info.param else ""
    return f"Line {number}: {exc.info.message}{where}"


def check_input_file(content: bytes, max_lines: int) -> None:
    """What an upload must satisfy: 1..max_lines requests, each line UTF-8 and a request line
    (:func:`check_line`), so junk is refused at upload with its line number. A body that
    does not suit its endpoint fails only its line, when the batch runs (its error file names
    it). Reads line by line (CPU-bound: run it off the event loop), never copying the whole."""
    requests = sum(1 for raw in io.BytesIO(content) if raw.strip())
    if requests == 0:
        raise invalid_request("The file holds no requests (one JSON object per line)", param="file")
    if requests > max_lines:
        raise invalid_request(
            f"The file holds {requests} requests; at most {max_lines} are allowed", param="file"
        )
    for number, raw in enumerate(io.BytesIO(content), start=1):
        if raw.strip():
            _check_upload_line(number, raw)


def _check_upload_line(number: int, raw: bytes) -> None:
    try:
        raw.decode()
        check_line(raw)
    except UnicodeDecodeError as exc:
        message = f"Line {number} is not UTF-8: {exc.reason}"
        raise invalid_request(message, param="file", code="invalid_file") from None
    except APIError as exc:
        raise invalid_request(_at_line(number, exc), param="file", code="invalid_file") from None


def _custom_id_of(raw: bytes) -> str | None:
    try:
        value = msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    cid = value.get("custom_id") if isinstance(value, dict) else None
    return cid if isinstance(cid, str) else None


def _parse_line(raw: bytes, endpoint: str, cfg: ServerSettings) -> tuple[str, JobSpec]:
    """One input line → (custom_id, spec); raises :class:`APIError` naming the fault."""
    line = check_line(raw)
    if line.url != endpoint:
        raise invalid_request(
            f"url `{line.url}` is not the batch's endpoint `{endpoint}`", param="url"
        )
    body = bytes(line.body)
    try:
        if endpoint == "/v1/chat/completions":
            spec = validation.chat(body, cfg)[1]
        else:
            spec = validation.completion(body, cfg)[1]
    except APIError as exc:
        if exc.info.param:
            exc.info.param = f"body.{exc.info.param}"
        raise
    return line.custom_id, spec


def parse_input(
    batch_id: str, content: bytes, endpoint: str, cfg: ServerSettings, max_lines: int
) -> ParsedFile:
    """Split a batch input file into runnable requests and error lines (pure; CPU-bound)."""
    out = ParsedFile()
    try:
        text = content.decode()
    except UnicodeDecodeError as exc:
        out.fatal.append(BatchError(code="invalid_file", message=f"Not UTF-8: {exc.reason}"))
        return out
    seen: set[str] = set()
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        out.total += 1
        if out.total > max_lines:
            out.fatal.append(
                BatchError(
                    code="too_many_requests",
                    message=f"The file holds more than {max_lines} requests",
                    line=number,
                )
            )
            return out
        raw = line.encode()
        try:
            custom_id, spec = _parse_line(raw, endpoint, cfg)
        except APIError as exc:
            code = exc.info.code or "invalid_request"
            message = _at_line(number, exc)
            out.errors.append(error_line(batch_id, number, _custom_id_of(raw), code, message))
            continue
        if custom_id in seen:
            message = f"Line {number}: custom_id `{custom_id}` is used by an earlier line"
            out.errors.append(
                error_line(batch_id, number, custom_id, "duplicate_custom_id", message)
            )
            continue
        seen.add(custom_id)
        out.todo.append(Prepared(line=number, custom_id=custom_id, spec=spec))
    if out.total == 0:
        out.fatal.append(BatchError(code="empty_file", message="The file holds no requests"))
    return out


def _creation(body: bytes) -> BatchCreate:
    req = validation.decode(_create_decoder, body)
    if req.endpoint not in BATCH_ENDPOINTS:
        raise invalid_request(
            f"endpoint must be one of {', '.join(BATCH_ENDPOINTS)}",
            param="endpoint",
            code="unsupported_parameter",
        )
    if req.completion_window not in COMPLETION_WINDOW_S:
        raise invalid_request(
            f"completion_window must be one of {', '.join(COMPLETION_WINDOW_S)}",
            param="completion_window",
        )
    validation.check_metadata(req.metadata or {})
    return req


def to_batch(raw: dict[Any, Any]) -> Batch:
    """A batch hash (as HGETALL returns it) → the wire object."""
    f = {reply_text(k): reply_text(v) for k, v in raw.items()}

    def num(name: str) -> int:
        return int(f.get(name) or 0)

    def opt(name: str) -> int | None:
        value = f.get(name)
        return int(value) if value else None

    errors = f.get("errors")
    metadata = f.get("metadata")
    output_tokens = num("output_tokens")
    input_tokens = num("input_tokens")
    times: dict[str, Any] = {name: opt(name) for name in _TIMES}
    times["created_at"] = num("created_at")
    return Batch(
        id=f["id"],
        endpoint=f["endpoint"],
        errors=msgspec.json.decode(errors, type=BatchErrors) if errors else None,
        input_file_id=f["input_file_id"],
        completion_window=f["completion_window"],
        status=f["status"],
        output_file_id=f.get("output_file_id") or None,
        error_file_id=f.get("error_file_id") or None,
        request_counts=RequestCounts(
            total=num("total"), completed=num("completed"), failed=num("failed")
        ),
        usage=BatchUsage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            total_tokens=input_tokens + output_tokens,
        ),
        metadata=msgspec.json.decode(metadata) if metadata else None,
        model=f.get("model") or None,
        **times,
    )


_CANCEL = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status or redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return false end
if status == 'validating' or status == 'in_progress' then
  redis.call('HSET', KEYS[1], 'status', 'cancelling', 'cancelling_at', ARGV[2],
             'stop_reason', 'cancelled')
  return 'cancelling'
end
return status
"""


class BatchStore:
    """The API's Redis operations on batch records."""

    def __init__(self, redis: aioredis.Redis, files: FileStore, ttl_s: int) -> None:
        self.redis = redis
        self.files = files
        self.ttl_s = ttl_s
        self._cancel = redis.register_script(_CANCEL)

    async def create(self, owner: str, body: bytes) -> Batch:
        req = _creation(body)
        source = await self.files.get(owner, req.input_file_id)
        if source.purpose != "batch":
            raise invalid_request(
                f"File `{source.id}` has purpose `{source.purpose}`, not `batch`",
                param="input_file_id",
            )
        batch_id = new_batch_id()
        now = int(time.time())
        fields: dict[Any, str | int] = {
            "id": batch_id,
            "owner": owner,
            "endpoint": req.endpoint,
            "input_file_id": req.input_file_id,
            "completion_window": req.completion_window,
            "status": BatchStatus.VALIDATING,
            "created_at": now,
            "expires_at": now + COMPLETION_WINDOW_S[req.completion_window],
        }
        if req.metadata:
            fields["metadata"] = msgspec.json.encode(req.metadata).decode()
        key = batch_key(batch_id)
        index = batches_index_key(owner)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields)
            pipe.expire(key, self.ttl_s)
            pipe.zadd(index, {batch_id: 0})
            pipe.expire(index, self.ttl_s)
            pipe.sadd(BATCHES_ACTIVE, batch_id)
            await pipe.execute()
        return to_batch(fields)

    async def get(self, owner: str, batch_id: str) -> Batch:
        raw = await self.redis.hgetall(batch_key(batch_id))
        if not raw or reply_text(raw.get(b"owner", b"")) != owner:
            raise not_found(batch_id)
        return to_batch(raw)

    async def cancel(self, owner: str, batch_id: str) -> Batch:
        outcome = await self._cancel(keys=[batch_key(batch_id)], args=[owner, int(time.time())])
        if not outcome:
            raise not_found(batch_id)
        status = reply_text(outcome)
        if status in BATCH_TERMINAL or status == BatchStatus.FINALIZING:
            if status != BatchStatus.CANCELLED:
                raise APIError(
                    409,
                    f"A batch that is {status} cannot be cancelled",
                    param="batch_id",
                    code="batch_not_cancellable",
                )
        return await self.get(owner, batch_id)

    async def page(self, owner: str, after: str | None, limit: int) -> tuple[list[Batch], bool]:
        return await newest_first(self.redis, batches_index_key(owner), after, limit, self._load)

    async def _load(self, ids: Sequence[str]) -> list[Batch | None]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for batch_id in ids:
                pipe.hgetall(batch_key(batch_id))
            rows = await pipe.execute()
        return [to_batch(raw) if raw else None for raw in rows]
