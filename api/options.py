"""``OPTIONS`` on any route: 204 with ``Allow`` naming every method the path serves.

Litestar answers ``OPTIONS`` itself, but a path served by two handlers (``GET`` and
``POST /v1/jobs``) kept the ``OPTIONS`` handler made for the first, so ``Allow`` left the
second out, and that handler ran behind the route's guards (an admin path answered 403).
This middleware answers first, from the path's route: no key is needed (the methods are
public, as the OpenAPI document is). A CORS preflight never gets here: the CORS
middleware answers it before routing.
"""

from __future__ import annotations

from litestar import Litestar
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.routes import HTTPRoute
from litestar.types import ASGIApp, Receive, Scope, Send


def allowed_methods(app: Litestar, path_template: str) -> str:
    """``Allow`` of the route whose template is ``path_template`` (``GET, OPTIONS, POST``)."""
    methods = {"OPTIONS"}
    for route in app.routes:
        if isinstance(route, HTTPRoute) and route.path_format == path_template:
            methods.update(route.methods)
    return ", ".join(sorted(methods))


class OptionsMiddleware(ASGIMiddleware):
    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        if scope["type"] != ScopeType.HTTP or scope["method"] != "OPTIONS":
            await next_app(scope, receive, send)
            return
        allow = allowed_methods(scope["litestar_app"], scope.get("path_template", ""))
        await send(
            {
                "type": "http.response.start",
                "status": 204,
                "headers": [(b"allow", allow.encode())],
            }
        )
        await send({"type": "http.response.body", "body": b"", "more_body": False})
