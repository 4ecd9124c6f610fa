"""Serve the API with uvicorn (``uml serve``)."""

from __future__ import annotations

import logging
import math
import sys
from types import FrameType

import uvicorn
from litestar import Litestar

from api.app import create_app
from api.logs import configure_logging
from api.security.redact import RedactQueryKeys
from api.security.slow_clients import header_deadline_protocol
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


WS_FRAME_OVERHEAD = 4096
"""Room around a ``generate`` frame's body (the JSON envelope) above the HTTP body cap."""


class GracefulServer(uvicorn.Server):
    """uvicorn's server, telling the app it is draining as soon as SIGTERM/SIGINT arrives.

    uvicorn then stops accepting, lets open requests and streams run up to
    ``UML_SHUTDOWN_GRACE_S`` and cancels the rest; a stream cut while draining does not
    cancel its job (see :attr:`api.relay.Relay.draining`), so its client resumes it
    elsewhere with ``Last-Event-ID`` (or ``/v1/jobs/{x-uml-job-id}/events``).
    """

    def __init__(self, config: uvicorn.Config, app: Litestar) -> None:
        super().__init__(config)
        self.litestar = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        resources = getattr(self.litestar.state, "resources", None)
        if resources is not None:
            resources.relay.draining = True
        super().handle_exit(sig, frame)


def run(settings: Settings | None = None) -> None:
    """Run the API in this process until interrupted."""
    cfg = settings or get_settings()
    configure_logging(cfg.log.format, cfg.log.level)
    _audit_to_stdout()
    app = create_app(cfg)
    config = uvicorn.Config(
        RedactQueryKeys(app),  # before routing: no query string logs a key
        host=cfg.server.host,
        port=cfg.server.port,
        log_level="info",
        log_config=None,  # uvicorn logs through the root handler (api.logs)
        access_log=cfg.server.access_log,
        # a frame over the body cap closes the socket with 1009 from its header, unread
        ws_max_size=cfg.server.max_body_bytes + WS_FRAME_OVERHEAD,
        timeout_graceful_shutdown=math.ceil(cfg.server.shutdown_grace_s),
        http=header_deadline_protocol(cfg.server.header_timeout_s),
    )
    GracefulServer(config, app).run()
