"""Scope guards: plain functions ``(connection, handler) -> None`` that raise a 403.

They run after :class:`api.security.middleware.ApiKeyMiddleware`, which has already
refused any request without a valid key (401).
"""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from api.security.keys import forbidden
from protocol.auth import ApiKey


def requires_admin(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Only a key with scope ``admin`` passes."""
    key = connection.scope.get("user")
    if not isinstance(key, ApiKey) or key.scope != "admin":
        raise forbidden("This API key does not have the admin scope")
