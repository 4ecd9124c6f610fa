"""The client's exceptions. Transport errors are translated at one boundary (``_core``)::

    UMLError
    └── APIError
        ├── APIStatusError                 the server answered 4xx/5xx (OpenAI-shaped body)
        │   ├── BadRequestError            400
        │   ├── AuthenticationError        401
        │   ├── PermissionDeniedError      403
        │   ├── NotFoundError              404
        │   ├── ConflictError              409 (an Idempotency-Key reused with another body)
        │   ├── UnprocessableEntityError   422
        │   ├── RateLimitError             429
        │   └── InternalServerError        5xx
        │       └── ServiceUnavailableError  503
        ├── APIConnectionError             no answer: refused, reset, DNS, TLS
        │   ├── APITimeoutError            the request timed out
        │   └── WebSocketClosedError       the server closed /ws (``code``, ``reason``)
        └── JobError                       a job or stream ended with an ``error`` event

Every :class:`APIError` has ``message``, ``type``, ``param`` and ``code`` (OpenAI's error
fields; ``None`` when the server sent none). None of them ever holds the API key.
"""

from __future__ import annotations

from typing import Any


class UMLError(Exception):
    """The root of every exception this package raises."""


class APIError(UMLError):
    def __init__(
        self,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.type = type
        self.param = param
        self.code = code


class APIStatusError(APIError):
    """The server answered with an error status; ``body`` is its decoded JSON (or text)."""

    status_code: int = 0

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        body: Any = None,
        headers: dict[str, str] | None = None,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, type=type, param=param, code=code)
        self.status_code = status_code
        self.body = body
        self.headers = headers or {}

    @property
    def request_id(self) -> str | None:
        return self.headers.get("x-request-id")

    def __str__(self) -> str:
        return f"{self.status_code}: {self.message}"


class BadRequestError(APIStatusError):
    status_code = 400


class AuthenticationError(APIStatusError):
    status_code = 401


class PermissionDeniedError(APIStatusError):
    status_code = 403


class NotFoundError(APIStatusError):
    status_code = 404


class ConflictError(APIStatusError):
    status_code = 409


class UnprocessableEntityError(APIStatusError):
    status_code = 422


class RateLimitError(APIStatusError):
    status_code = 429


class InternalServerError(APIStatusError):
    status_code = 500


class ServiceUnavailableError(InternalServerError):
    status_code = 503


class APIConnectionError(APIError):
    def __init__(self, message: str = "Connection error") -> None:
        super().__init__(message, type="connection_error")


class APITimeoutError(APIConnectionError):
    def __init__(self, message: str = "Request timed out") -> None:
        super().__init__(message)
        self.type = "timeout"


class WebSocketClosedError(APIConnectionError):
    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"WebSocket closed ({code}): {reason}" if reason else f"closed ({code})")
        self.close_code = code
        self.reason = reason


class JobError(APIError):
    """A job ended with an ``error`` event (or an OpenAI stream carried ``{"error": …}``)."""

    def __init__(
        self,
        message: str,
        *,
        job_id: str | None = None,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, type=type, param=param, code=code)
        self.job_id = job_id


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


def status_error_class(status: int) -> type[APIStatusError]:
    """The exception class for an HTTP error status."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return InternalServerError if status >= 500 else APIStatusError
