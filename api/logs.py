"""Process logs: JSON lines in production, readable text on a terminal and under ``uml dev``.

Every line logged while an API request is handled carries that request's id (the one the
audit record and the ``x-request-id`` header carry); lines about a job carry its id::

    {"level": "WARNING", "time": "2026-11-28T11:30:00.123Z", "logger": "api.errors",
     "message": "redis unavailable: ...", "request_id": "9f2c...", "job_id": "..."}

The ids travel in context variables, set by :class:`RequestContextMiddleware` and by
:func:`job_context`, and are stamped on each record by a handler filter, so no call site
passes them. ``UML_LOG_FORMAT`` picks ``json`` or ``text``; ``auto`` (the default) is text
when stderr is a terminal, else JSON. The audit log (``uml.audit``) keeps its own handler:
one JSON record per line on stdout.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Literal, TextIO

from litestar.types import ASGIApp, Receive, Scope, Send

from api.security.audit import request_id

REQUEST_ID: ContextVar[str | None] = ContextVar("uml_request_id", default=None)
JOB_ID: ContextVar[str | None] = ContextVar("uml_job_id", default=None)
_CONTEXT = ("request_id", "job_id")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(context)s: %(message)s"


class ContextFilter(logging.Filter):
    """Stamps ``request_id`` and ``job_id`` (from the context, unless given) on each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = REQUEST_ID.get()
        if getattr(record, "job_id", None) is None:
            record.job_id = JOB_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: level, time (UTC, ms), logger, message, ids, exception."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        out: dict[str, object] = {  # not "time" first: that starts an audit record
            "level": record.levelname,
            "time": stamp.replace("+00:00", "Z"),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in _CONTEXT:
            if value := getattr(record, key, None):
                out[key] = value
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger [request=… job=…]: message``."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        ids = [f"{k.removesuffix('_id')}={v}" for k in _CONTEXT if (v := getattr(record, k, None))]
        record.context = f" [{' '.join(ids)}]" if ids else ""
        return super().format(record)


def resolve_format(fmt: str, stream: TextIO) -> Literal["json", "text"]:
    """``auto`` is text on a terminal and JSON otherwise; ``json`` and ``text`` are as named."""
    if fmt == "auto":
        return "text" if stream.isatty() else "json"
    if fmt not in ("json", "text"):
        raise ValueError(f"UML_LOG_FORMAT must be auto, json or text, not {fmt!r}")
    return "json" if fmt == "json" else "text"


def configure_logging(
    fmt: str = "auto", level: str = "INFO", stream: TextIO | None = None
) -> Literal["json", "text"]:
    """Send the root logger's records to ``stream`` (stderr) in ``fmt``; returns the format."""
    out = stream or sys.stderr
    resolved = resolve_format(fmt, out)
    handler = logging.StreamHandler(out)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if resolved == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    return resolved


@contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Lines logged inside carry ``job_id``."""
    token = JOB_ID.set(job_id)
    try:
        yield
    finally:
        JOB_ID.reset(token)


class RequestContextMiddleware:
    """Puts the request id in :data:`REQUEST_ID` for everything the request runs; a job id a
    handler sets (:func:`note_job`) lasts until the request ends."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token, job_token = REQUEST_ID.set(request_id(scope)), JOB_ID.set(None)
        try:
            await self.app(scope, receive, send)
        finally:
            JOB_ID.reset(job_token)
            REQUEST_ID.reset(token)


def note_job(job_id: str) -> None:
    """From here to the end of the request, log lines carry ``job_id``."""
    JOB_ID.set(job_id)
