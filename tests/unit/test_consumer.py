"""The worker's Celery consumer survives the AttributeError Celery 5.7 raises while closing a
connection that a Redis restart broke (workers/consumer.py)."""

from __future__ import annotations

import logging

import pytest
from celery.utils.imports import symbol_by_name
from celery.worker.consumer import Consumer as CeleryConsumer

from workers.app import create_celery
from workers.consumer import Consumer


def test_the_app_uses_our_consumer() -> None:
    app = create_celery("redis://127.0.0.1:1/0")
    assert symbol_by_name(app.conf.worker_consumer) is Consumer


def test_a_failed_close_is_logged_not_fatal(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_close(self: CeleryConsumer, exc: BaseException) -> None:
        raise AttributeError("'NoneType' object has no attribute 'hostname'")

    monkeypatch.setattr(CeleryConsumer, "on_connection_error_after_connected", broken_close)
    consumer = Consumer.__new__(Consumer)
    with caplog.at_level(logging.WARNING, logger="workers.consumer"):
        consumer.on_connection_error_after_connected(ConnectionError("lost"))
    assert "reconnecting anyway" in caplog.text


def test_other_errors_still_propagate(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(self: CeleryConsumer, exc: BaseException) -> None:
        raise RuntimeError("something else")

    monkeypatch.setattr(CeleryConsumer, "on_connection_error_after_connected", failing)
    with pytest.raises(RuntimeError):
        Consumer.__new__(Consumer).on_connection_error_after_connected(ConnectionError("lost"))
