"""The public client module: ``from client.universal_client import UniversalClient``.

=========================== ==========================================================
``UniversalClient``         async: every route, streams, jobs, files, batches, ``/ws``
``SyncUniversalClient``     the same methods, blocking
``OpenAICompatibleClient``  async, the openai SDK's shape (``chat.completions.create``)
``SyncOpenAICompatibleClient`` the same, blocking
=========================== ==========================================================

The errors they raise are drawn as a tree in :mod:`client._errors`; docs/client.md has
the whole guide.
"""

from __future__ import annotations

from client._async import UniversalClient
from client._errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    JobError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
    UMLError,
    UnprocessableEntityError,
    WebSocketClosedError,
)
from client._openai import OpenAICompatibleClient, SyncOpenAICompatibleClient
from client._streams import AsyncStream, Stream
from client._sync import SyncUniversalClient
from client._types import Health
from client._ws import AsyncWebSocket, SyncWebSocket

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncStream",
    "AsyncWebSocket",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "Health",
    "InternalServerError",
    "JobError",
    "NotFoundError",
    "OpenAICompatibleClient",
    "PermissionDeniedError",
    "RateLimitError",
    "ServiceUnavailableError",
    "Stream",
    "SyncOpenAICompatibleClient",
    "SyncUniversalClient",
    "SyncWebSocket",
    "UMLError",
    "UnprocessableEntityError",
    "UniversalClient",
    "WebSocketClosedError",
]
