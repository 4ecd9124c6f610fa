"""kombu's Redis transport, with a closed connection failing as a connection error.

When a worker's broker connection breaks, Celery 5.7 collects it, which detaches kombu's
transport from its connection (``transport.client = None``), and later closes it and
acks the messages of tasks that finish meanwhile on the old channel. Each of those makes
the channel build a Redis client from ``transport.client``, and kombu 5.7 raises
``AttributeError`` (``'NoneType' object has no attribute 'hostname'``). That is neither
a connection nor a channel error, so Celery calls it unrecoverable and the worker process
stops: seen in ``tests/chaos`` when Redis restarts under load. Here the detached channel
raises Redis's ``ConnectionError`` instead, which every one of those paths already
expects: the close carries on, the stale ack is logged and dropped, the consumer
reconnects. The messages the old channel could not give back are recovered by the
reaper's sweep (:mod:`workers.reaper`); the task claims make a duplicate harmless.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError

__all__ = ["Transport"]


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection.client is None:
            raise RedisConnectionError("the broker connection of this channel was closed")
        connparams: Callable[..., Any] = super()._connparams  # kombu leaves it unannotated
        return connparams(asynchronous=asynchronous)


class Transport(kombu_redis.Transport):
    Channel = Channel
