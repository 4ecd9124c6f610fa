"""The worker's kombu transport: a channel whose connection was closed fails as a
connection error, which Celery recovers from, not AttributeError (workers/transport.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from celery.utils.imports import symbol_by_name
from redis.exceptions import ConnectionError as RedisConnectionError

from workers.app import create_celery
from workers.transport import Channel, Transport


def test_the_worker_app_uses_our_transport() -> None:
    app = create_celery("redis://127.0.0.1:1/0")
    assert symbol_by_name(app.conf.broker_transport) is Transport
    with app.connection_for_read() as connection:
        assert isinstance(connection.transport, Transport)
        assert (connection.hostname, connection.port) == ("127.0.0.1", 1)
        assert RedisConnectionError in connection.connection_errors


def test_a_detached_channel_raises_a_connection_error() -> None:
    channel = Channel.__new__(Channel)
    channel.connection = SimpleNamespace(client=None)
    with pytest.raises(RedisConnectionError, match="was closed"):
        channel._connparams()
