"""Serve the API with uvicorn (``uml serve``)."""

from __future__ import annotations

import logging
import sys

import uvicorn

from api.app import create_app
from api.logs import configure_logging
from protocol.settings import Settings, get_settings


def _audit_to_stdout() -> None:
    """The audit log is JSON lines on stdout, one record per line and nothing else."""
    audit = logging.getLogger("uml.audit")
    if not audit.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        audit.addHandler(handler)
        audit.setLevel(logging.INFO)
        audit.propagate = False


def run(settings: Settings | None = None) -> None:
    """Run the API in this process until interrupted."""
    cfg = settings or get_settings()
    configure_logging(cfg.log.format, cfg.log.level)
    _audit_to_stdout()
    uvicorn.run(
        create_app(cfg),
        host=cfg.server.host,
        port=cfg.server.port,
        log_level="info",
        log_config=None,  # uvicorn logs through the root handler (api.logs)
        access_log=cfg.server.access_log,
    )
