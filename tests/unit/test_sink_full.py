"""A worker's flush into a Redis past its ``maxmemory`` (``noeviction``: writes are refused
with ``OOM``) waits until there is room, and then writes everything: no token is lost."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest
import redis

from protocol.events import TokenEvent
from protocol.keys import events_key, job_key
from tests.integration.stack import wait_for
from workers.sink import JobWrite, RedisSink


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.config_set("maxmemory", 0)
    c.close()


@pytest.mark.parametrize("fields", [{}, {"text": "ab"}], ids=["tokens only", "tokens and fields"])
def test_a_flush_into_a_full_redis_waits_for_room_and_loses_nothing(
    client: redis.Redis, caplog: pytest.LogCaptureFixture, fields: dict[str, str]
) -> None:
    client.hset(job_key("j"), mapping={"status": "running", "attempt": 1})
    sink = RedisSink(client, retention_s=60)
    write = JobWrite(
        "j", [TokenEvent(seq=1, text="a"), TokenEvent(seq=2, text="b")], fields, False, 1
    )
    client.config_set("maxmemory", 1)  # every write is refused from now on
    outcome: list[object] = []

    def flush() -> None:
        try:
            outcome.append(sink.flush([write], []))
        except Exception as exc:  # today's behaviour: the flush gives up
            outcome.append(exc)

    thread = threading.Thread(target=flush, daemon=True)
    with caplog.at_level(logging.WARNING, logger="workers.sink"):
        thread.start()
        wait_for(lambda: "retrying" in caplog.text or bool(outcome), 10, "a retry")
        assert outcome == [] and client.xlen(events_key("j")) == 0
        client.config_set("maxmemory", 0)
        thread.join(10)
    assert outcome == [set()]
    assert client.xlen(events_key("j")) == 2
    assert "event log write failed" not in caplog.text
