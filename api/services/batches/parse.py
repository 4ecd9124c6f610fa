"""A batch input file, checked at upload (:func:`check_input_file`) and parsed when its batch
runs (:func:`parse_input`) into prepared requests and error lines. Pure and CPU-bound: the
callers run it off the event loop."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import msgspec

from api import validation
from api.errors import APIError, invalid_request
from protocol.batches import BATCH_ENDPOINTS, BatchError, InputLine, LineError, OutputLine
from protocol.jobs import JobSpec
from protocol.settings import ServerSettings

_line_decoder = msgspec.json.Decoder(InputLine)


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
