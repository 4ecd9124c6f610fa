"""Every error answers with OpenAI's body, ``{"error": {"message", "type", "param", "code"}}``.

Our own failures raise :class:`APIError`; Litestar's (404 route, 405, 413 body too large,
its validation) and any unexpected exception are translated by :data:`exception_handlers`,
so no error path returns a stack trace or Litestar's default shape::

    Exception ──► 500 server_error (logged, message hidden)
    ├── APIError ──► its own status, type, param, code
    ├── HTTPException ──► its status; type from the status family
    ├── redis ConnectionError / TimeoutError ──► 503 service_unavailable + Retry-After
    └── redis OutOfMemoryError (Redis full: ``maxmemory`` with ``noeviction``)
          ──► 503 service_unavailable + Retry-After

A Redis write refused for memory leaves nothing half-written: the API writes several keys
only in a MULTI or a script, which Redis refuses whole (a script at its first write).
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.types import ExceptionHandlersMap
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError
from redis.exceptions import TimeoutError as RedisTimeoutError

from protocol.openai import ErrorInfo, ErrorResponse, encode

log = logging.getLogger(__name__)

INVALID_REQUEST = "invalid_request_error"

REDIS_FULL_RETRY_AFTER_S = 5
"""Retry-After of a 503 for a full Redis: room comes back as records expire or are deleted."""

_TYPE_BY_STATUS = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


class APIError(Exception):
    """An error answered to the client as-is, in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = INVALID_REQUEST,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.info = ErrorInfo(message=message, type=type, param=param, code=code)
        self.headers = headers or {}


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    """A 400 naming the request field at fault."""
    return APIError(400, message, param=param, code=code)


def not_supported(param: str, what: str | None = None) -> APIError:
    return invalid_request(
        f"{what or param} is not supported", param=param, code="unsupported_parameter"
    )


def model_not_found(model: str) -> APIError:
    return APIError(
        404,
        f"The model `{model}` does not exist or no worker is serving it",
        param="model",
        code="model_not_found",
    )


def unavailable(message: str, retry_after_s: int = 1) -> APIError:
    return APIError(
        503, message, type="service_unavailable", headers={"Retry-After": str(retry_after_s)}
    )


def error_response(
    status: int, info: ErrorInfo, headers: dict[str, str] | None = None
) -> Response[bytes]:
    return Response(
        content=encode(ErrorResponse(error=info)),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def type_for_status(status: int) -> str:
    if status >= 500:
        return "server_error"
    return _TYPE_BY_STATUS.get(status, INVALID_REQUEST)


def status_of(exc: BaseException) -> int:
    """The status :data:`exception_handlers` answers ``exc`` with (the audit log records it)."""
    if isinstance(exc, APIError):
        return exc.status
    if isinstance(exc, HTTPException):
        return exc.status_code
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | OutOfMemoryError):
        return 503
    return 500


def _api_error(_: Request[Any, Any, Any], exc: APIError) -> Response[bytes]:
    return error_response(exc.status, exc.info, exc.headers)


def _http_exception(_: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    status = exc.status_code
    code = "request_too_large" if status == 413 else None
    info = ErrorInfo(message=str(exc.detail), type=type_for_status(status), code=code)
    return error_response(status, info, exc.headers)


def _redis_down(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.warning("redis unavailable: %s", exc)
    err = unavailable("The job store is unavailable; retry shortly")
    return error_response(err.status, err.info, err.headers)


def _redis_full(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.error("redis is full (maxmemory): %s", exc)
    err = unavailable("The job store is full; retry later", REDIS_FULL_RETRY_AFTER_S)
    return error_response(err.status, err.info, err.headers)


def _internal(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, ErrorInfo(message="Internal server error", type="server_error"))


exception_handlers: ExceptionHandlersMap = {
    APIError: _api_error,
    HTTPException: _http_exception,
    RedisConnectionError: _redis_down,
    RedisTimeoutError: _redis_down,
    OutOfMemoryError: _redis_full,
    Exception: _internal,
}
