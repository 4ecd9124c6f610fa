"""Serve the API with uvicorn (``uml serve``)."""

from __future__ import annotations

import uvicorn

from api.app import create_app
from protocol.settings import Settings, get_settings


def run(settings: Settings | None = None) -> None:
    """Run the API in this process until interrupted."""
    cfg = settings or get_settings()
    uvicorn.run(
        create_app(cfg),
        host=cfg.server.host,
        port=cfg.server.port,
        log_level="info",
        access_log=cfg.server.access_log,
    )
