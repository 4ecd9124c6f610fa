"""The worker's heartbeat (workers.heartbeat) on a real Redis: no Runtime, no model."""

from __future__ import annotations

from collections.abc import Iterator

import msgspec
import pytest
import redis

from protocol.keys import LEASES, WORKERS_SET, worker_key
from protocol.settings import WorkerSettings
from protocol.workers import WorkerInfo
from workers.heartbeat import Heartbeat
from workers.reaper import Reaper

INFO = WorkerInfo(id="w-1", host="h", pid=1, slots=2, active=0, models=[], started_at=0.0)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def heartbeat(client: redis.Redis) -> Heartbeat:
    settings = WorkerSettings(heartbeat_s=60, heartbeat_ttl_s=5, lease_s=30)
    reaper = Reaper(client, settings.lease_s, settings.max_attempts, retention_s=600)
    return Heartbeat(client, "w-1", settings, reaper, lambda: INFO)


def test_announce_then_withdraw(client: redis.Redis) -> None:
    beat = heartbeat(client)
    beat.announce()
    assert msgspec.json.decode(client.get(worker_key("w-1")) or b"", type=WorkerInfo) == INFO
    assert 0 < client.pttl(worker_key("w-1")) <= 5000
    assert client.smembers(WORKERS_SET) == {b"w-1"}
    beat.withdraw()
    assert client.exists(worker_key("w-1")) == 0 and client.scard(WORKERS_SET) == 0


def test_a_beat_renews_the_running_jobs_leases_then_reaps(client: redis.Redis) -> None:
    beat = heartbeat(client)
    client.zadd(LEASES, {"mine": 1, "done": 1})
    beat.beat()  # not started: nothing
    assert client.zscore(LEASES, "mine") == 1
    beat.start()
    try:
        with beat.leased("mine"):
            assert beat.running() == 1
            beat.beat()
        assert beat.running() == 0
    finally:
        beat.stop()
    seconds, _ = client.time()
    assert (client.zscore(LEASES, "mine") or 0) > seconds * 1000  # renewed: 30 s ahead
    assert client.zscore(LEASES, "done") is None  # lapsed, its job gone: the reaper's pass
    assert client.exists(worker_key("w-1")) == 1
