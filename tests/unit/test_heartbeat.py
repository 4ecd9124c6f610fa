"""The worker's heartbeat (workers.heartbeat) on a real Redis: no Runtime, no model."""

from __future__ import annotations

import msgspec
import redis

from protocol.keys import LEASES, WORKERS_SET, worker_key
from protocol.settings import WorkerSettings
from protocol.workers import WorkerInfo
from workers.heartbeat import Heartbeat
from workers.reaper import Reaper

INFO = WorkerInfo(id="w-1", host="h", pid=1, slots=2, active=0, models=[], started_at=0.0)


def heartbeat(sync_redis: redis.Redis) -> Heartbeat:
    settings = WorkerSettings(heartbeat_s=60, heartbeat_ttl_s=5, lease_s=30)
    reaper = Reaper(sync_redis, settings.lease_s, settings.max_attempts, retention_s=600)
    return Heartbeat(sync_redis, "w-1", settings, reaper, lambda: INFO)


def test_announce_then_withdraw(sync_redis: redis.Redis) -> None:
    beat = heartbeat(sync_redis)
    beat.announce()
    assert msgspec.json.decode(sync_redis.get(worker_key("w-1")) or b"", type=WorkerInfo) == INFO
    assert 0 < sync_redis.pttl(worker_key("w-1")) <= 5000
    assert sync_redis.smembers(WORKERS_SET) == {b"w-1"}
    beat.withdraw()
    assert sync_redis.exists(worker_key("w-1")) == 0 and sync_redis.scard(WORKERS_SET) == 0


def test_a_beat_renews_the_running_jobs_leases_then_reaps(sync_redis: redis.Redis) -> None:
    beat = heartbeat(sync_redis)
    sync_redis.zadd(LEASES, {"mine": 1, "done": 1})
    beat.beat()  # not started: nothing
    assert sync_redis.zscore(LEASES, "mine") == 1
    beat.start()
    try:
        with beat.leased("mine"):
            assert beat.running() == 1
            beat.beat()
        assert beat.running() == 0
    finally:
        beat.stop()
    seconds, _ = sync_redis.time()
    assert (sync_redis.zscore(LEASES, "mine") or 0) > seconds * 1000  # renewed: 30 s ahead
    assert sync_redis.zscore(LEASES, "done") is None  # lapsed, its job gone: the reaper's pass
    assert sync_redis.exists(worker_key("w-1")) == 1
