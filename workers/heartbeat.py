"""The worker's heartbeat: announce the worker, renew its jobs' leases, hand off to the reaper.

Every ``heartbeat_s`` (and after each load or unload) the heartbeat writes the worker's
:class:`protocol.workers.WorkerInfo` to ``uml:worker:{id}`` with a TTL of
``heartbeat_ttl_s`` and lists the worker in ``uml:workers`` (the API routes on these),
extends the leases of the jobs the worker runs, then runs one reaper pass
(:class:`workers.reaper.Reaper`: one worker's pass at a time), which puts the jobs of
workers whose leases lapsed back in their queues. A beat that fails on Redis is logged and
the next one tries again; a stopped worker withdraws its announcement.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import msgspec
import redis

from protocol.keys import WORKERS_SET, worker_key
from protocol.settings import WorkerSettings
from protocol.workers import WorkerInfo
from workers.reaper import Reaper

__all__ = ["Heartbeat"]

log = logging.getLogger(__name__)


class Heartbeat:
    """The ``uml-heartbeat`` thread of one worker and the leases it renews."""

    def __init__(
        self,
        client: redis.Redis,
        worker_id: str,
        settings: WorkerSettings,
        reaper: Reaper,
        info: Callable[[], WorkerInfo],
    ) -> None:
        self._redis = client
        self.worker_id = worker_id
        self._ttl_ms = int(settings.heartbeat_ttl_s * 1000)
        self._every_s = settings.heartbeat_s
        self._reaper = reaper
        self._info = info
        self._lock = threading.Lock()
        self._running: set[str] = set()
        """Ids of the jobs this worker has claimed and not finished: their leases renew."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="uml-heartbeat", daemon=True)

    @contextmanager
    def leased(self, job_id: str) -> Iterator[None]:
        """While the block runs, ``job_id``'s lease is renewed with every beat."""
        with self._lock:
            self._running.add(job_id)
        try:
            yield
        finally:
            with self._lock:
                self._running.discard(job_id)

    def running(self) -> int:
        """How many claimed jobs this worker runs now."""
        with self._lock:
            return len(self._running)

    def announce(self) -> None:
        """Write the worker's info (expiring) and list the worker; raises on Redis errors."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(worker_key(self.worker_id), msgspec.json.encode(self._info()), px=self._ttl_ms)
        pipe.sadd(WORKERS_SET, self.worker_id)
        pipe.execute()

    def beat(self) -> None:
        """Announce, renew the leases, run a reaper pass (once the thread runs; errors logged)."""
        if not self._thread.is_alive():
            return  # not started: models loaded at startup show once the worker runs
        try:
            self.announce()
            with self._lock:
                running = list(self._running)
            self._reaper.renew(running)
            self._reaper.reap(self.worker_id)
        except redis.RedisError as exc:
            log.warning("heartbeat failed: %s", exc)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """End the thread (after the beat it may be in)."""
        self._stop.set()

    def withdraw(self) -> None:
        """Remove the worker's announcement (else it expires by itself)."""
        try:
            self._redis.delete(worker_key(self.worker_id))
            self._redis.srem(WORKERS_SET, self.worker_id)
        except redis.RedisError:
            log.warning("could not remove this worker's heartbeat; it expires by itself")

    def _loop(self) -> None:
        while not self._stop.wait(self._every_s):
            self.beat()
