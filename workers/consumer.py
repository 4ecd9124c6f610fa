"""Our Celery consumer: Celery's, surviving one way a broker disconnect kills it.

Celery 5.7's consumer, on a lost broker connection, first collects the connection (which
tries to give the unacked messages back, fails while Redis is down, and detaches the
transport), then closes it, which tries the give-back again on the detached transport:
kombu's Redis channel reads ``transport.client.hostname`` from ``None`` and raises
``AttributeError``. That is not a connection error, so Celery calls it unrecoverable and
the worker process stops (seen in ``tests/chaos`` when Redis restarts under load). Here
the consumer logs it and goes on to reconnect as it would have. The messages it could
not give back stay in kombu's unacked set; the reaper's sweep pushes their jobs back
(:mod:`workers.reaper`), so nothing waits for kombu's days-long visibility timeout.
"""

from __future__ import annotations

import logging

from celery.worker.consumer import Consumer as CeleryConsumer

__all__ = ["Consumer"]

log = logging.getLogger(__name__)


class Consumer(CeleryConsumer):  # type: ignore[misc]
    def on_connection_error_after_connected(self, exc: BaseException) -> None:
        try:
            super().on_connection_error_after_connected(exc)
        except AttributeError as error:
            log.warning(
                "broker connection lost; closing it failed (%r), reconnecting anyway: the "
                "messages it could not give back are recovered by the reaper's sweep",
                error,
            )
