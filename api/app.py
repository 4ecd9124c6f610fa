"""The Litestar application factory.

``create_app(settings)`` wires controllers, OpenAI-shaped error handlers, the body-size
limit and the OpenAPI docs (JSON at ``/schema/openapi.json``, Swagger UI at ``/docs``);
Redis and the stream relay are opened in the lifespan hook and kept in
``app.state.resources``. Nothing lives in module globals.

Every route needs an API key (:mod:`api.security.middleware`) except the ones marked
``opt=PUBLIC`` (``/health``, ``/ready``, ``/docs``) and the OpenAPI routes under ``/schema``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar, Router, get
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.response import Redirect

from api.controllers.admin import AdminAuditController, AdminKeysController
from api.controllers.batches import BatchesController
from api.controllers.files import UPLOAD_OVERHEAD_BYTES, FilesController
from api.controllers.health import HealthController
from api.controllers.jobs import JobsController
from api.controllers.models import ModelsController
from api.controllers.openai import OpenAIController
from api.controllers.ws import ws_endpoint
from api.errors import exception_handlers
from api.logs import RequestContextMiddleware
from api.metrics import Metrics, MetricsController, MetricsMiddleware
from api.openapi import docs_router
from api.options import OptionsMiddleware
from api.security.audit import AuditMiddleware, AuditWriter, add_request_id, after_exception
from api.security.cors import cors_config
from api.security.keys import load_bootstrap
from api.security.middleware import PUBLIC, RateLimitMiddleware, auth_middleware
from api.security.slow_clients import BodyDeadlineMiddleware
from api.state import open_resources
from protocol.settings import Settings, get_settings


@get("/docs", include_in_schema=False, opt=PUBLIC)
async def docs() -> Redirect:
    return Redirect("/schema/docs")


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the API; resources open when the app starts and close when it stops."""
    cfg = settings or get_settings()
    load_bootstrap(cfg.security)  # an unusable admin key stops the start here, not in lifespan
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with (
            open_resources(cfg) as resources,
            AuditWriter.open(resources.redis, cfg.security) as audit_writer,
        ):
            app.state.resources = resources
            app.state.audit = audit_writer
            app.state.metrics = metrics
            yield

    return Litestar(
        route_handlers=[
            OpenAIController,
            JobsController,
            BatchesController,
            # uploads may exceed the body limit of other routes, up to the file cap
            Router(
                "/",
                route_handlers=[FilesController],
                request_max_body_size=cfg.batch.max_file_bytes + UPLOAD_OVERHEAD_BYTES,
            ),
            AdminKeysController,
            AdminAuditController,
            ModelsController,
            HealthController,
            ws_endpoint,
            MetricsController,
            docs,
        ],
        middleware=[
            BodyDeadlineMiddleware(cfg.server.body_timeout_s, cfg.server.body_min_rate),
            DefineMiddleware(MetricsMiddleware, metrics=metrics),
            RequestContextMiddleware,
            AuditMiddleware,
            OptionsMiddleware(),
            auth_middleware(),
            RateLimitMiddleware(),
        ],
        lifespan=[lifespan],
        exception_handlers=exception_handlers,
        before_send=[add_request_id],
        after_exception=[after_exception],
        logging_config=None,  # the process's logging is api.logs's, not Litestar's default
        request_max_body_size=cfg.server.max_body_bytes,
        cors_config=cors_config(cfg.security),
        openapi_config=OpenAPIConfig(
            title="Universal Model Launcher",
            version="0.1.0",
            description="OpenAI-compatible LLM job service.",
            path="/schema",
            components=Components(
                security_schemes={
                    "bearer": SecurityScheme(type="http", scheme="bearer"),
                    "apiKey": SecurityScheme(
                        type="apiKey", name="X-API-Key", security_scheme_in="header"
                    ),
                }
            ),
            security=[{"bearer": []}, {"apiKey": []}],
            render_plugins=[SwaggerRenderPlugin(path="/docs")],
            openapi_router=docs_router(cfg.server),
        ),
    )
