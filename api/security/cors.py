"""CORS from settings: an explicit origin list, nothing by default.

Litestar's CORS middleware wraps the whole router, so a preflight (``OPTIONS`` with an
``Origin``) is answered before routing and before the API-key check: it needs no key.
A wildcard origin together with credentials is refused at start-up.
"""

from __future__ import annotations

from litestar.config.cors import CORSConfig

from protocol.settings import SecuritySettings

ALLOW_HEADERS = ["Authorization", "X-API-Key", "Content-Type", "Last-Event-ID"]
EXPOSE_HEADERS = [
    "x-request-id",
    "x-uml-job-id",
    "Retry-After",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
]


def cors_config(settings: SecuritySettings) -> CORSConfig | None:
    """The app's CORS config, or ``None`` (no CORS headers) when no origin is configured."""
    origins = settings.cors_origin_list
    if not origins:
        return None
    if "*" in origins and settings.cors_allow_credentials:
        raise ValueError(
            "UML_CORS_ORIGINS='*' cannot be combined with UML_CORS_ALLOW_CREDENTIALS=true: "
            "list the allowed origins explicitly."
        )
    return CORSConfig(
        allow_origins=origins,
        allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
        allow_headers=ALLOW_HEADERS,
        allow_credentials=settings.cors_allow_credentials,
        expose_headers=EXPOSE_HEADERS,
    )
