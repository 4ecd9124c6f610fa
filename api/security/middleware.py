"""The authentication middleware: every route needs an API key unless it opts out.

Litestar runs route middleware after routing but before the handler reads the body, so a
request without a valid key is refused before its body is parsed (a guard would run just
as early, but the middleware also feeds ``request.user`` to later layers). Routes opt out
explicitly with ``opt={"exclude_from_auth": True}`` (``/health``, ``/docs``); the OpenAPI
routes under ``/schema`` are excluded by path. ``OPTIONS`` is left alone for CORS preflight.

:class:`RateLimitMiddleware` runs right after it and admits the request against the key's
limits (:mod:`api.security.limits`).

The key comes from ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; when both are
sent they must agree.
"""

from __future__ import annotations

from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.middleware import (
    AbstractAuthenticationMiddleware,
    ASGIMiddleware,
    AuthenticationResult,
)
from litestar.middleware.base import DefineMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from api.security.keys import unauthorized
from api.security.limits import METERED, rate_limited
from api.state import Resources

EXCLUDE_OPT = "exclude_from_auth"
"""Set this ``opt`` on a route handler to serve it without a key."""

PUBLIC = {EXCLUDE_OPT: True}
EXCLUDED_PATHS = ["^/schema"]


def presented_key(connection: ASGIConnection) -> str:  # type: ignore[type-arg]
    """The key a request carries; 401 when there is none or two that differ."""
    headers = connection.headers
    bearer: str | None = None
    if (authorization := headers.get("authorization")) is not None:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise unauthorized("The Authorization header must be `Bearer <API key>`")
        bearer = value.strip()
    header_key = headers.get("x-api-key")
    header_key = None if header_key is None else header_key.strip()
    if bearer and header_key and bearer != header_key:
        raise unauthorized("Authorization and X-API-Key name different keys")
    key = bearer or header_key
    if not key:
        raise unauthorized(
            "You didn't provide an API key: send `Authorization: Bearer <key>` or `X-API-Key`"
        )
    return key


class ApiKeyMiddleware(AbstractAuthenticationMiddleware):
    """Leaves the verified :class:`protocol.auth.ApiKey` in ``user`` and its
    :class:`api.security.keys.Credential` in ``auth`` (streams re-check it while open)."""

    async def authenticate_request(
        self,
        connection: ASGIConnection,  # type: ignore[type-arg]
    ) -> AuthenticationResult:
        key = presented_key(connection)
        credential = await Resources.of(connection.app.state).authenticator.verify(key)
        return AuthenticationResult(user=credential.key, auth=credential)


def auth_middleware() -> DefineMiddleware:
    return DefineMiddleware(
        ApiKeyMiddleware, exclude=EXCLUDED_PATHS, exclude_from_auth_key=EXCLUDE_OPT
    )


class RateLimitMiddleware(ASGIMiddleware):
    """Admits each authenticated request and puts ``RateLimit-*`` on its response.

    Runs after :class:`ApiKeyMiddleware` (it needs ``user``) and
    skips the routes that need no key. Headers are added to ``http.response.start``, so
    error responses and streams carry them too.
    """

    scopes = (ScopeType.HTTP,)
    exclude_opt_key = EXCLUDE_OPT

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        limiter = Resources.of(scope["litestar_app"].state).limiter
        policy = limiter.policy(scope.get("user"))
        if policy is None:
            await next_app(scope, receive, send)
            return
        metered = all(scope["route_handler"].opt.get(k) for k in METERED)
        decision = await limiter.admit(policy, metered)
        if not decision.allowed:
            raise rate_limited(decision)
        extra = [(k.lower().encode(), v.encode()) for k, v in decision.headers().items()]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await next_app(scope, receive, send_with_headers)
