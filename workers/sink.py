"""Write every active job's new events and hash fields in one Redis round trip.

One pipeline per scheduler iteration: ``XADD`` of each new event under its explicit id
``{seq}-1`` (Redis rejects a duplicate, so a retried flush is idempotent), ``HSET`` of the
job fields that changed, ``EXPIRE`` once a job ends, and ``HGET cancel`` of every running
job so cancel flags come back in the same round trip.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from protocol.events import Event, encode_event
from protocol.jobs import to_hash
from protocol.keys import EVENT_FIELD, entry_id, events_key, job_key

log = logging.getLogger(__name__)


@dataclass(slots=True)
class JobWrite:
    job_id: str
    events: list[Event]
    fields: dict[str, Any]
    final: bool = False


class RedisSink:
    def __init__(self, client: redis.Redis, retention_s: int) -> None:
        self._redis = client
        self._retention_s = retention_s

    def flush(self, writes: Sequence[JobWrite], watch: Iterable[str]) -> set[str]:
        """Write ``writes``; return the ids among ``watch`` whose cancel flag is set.

        Retries on connection errors with capped backoff until Redis answers: the
        scheduler stalls rather than losing a token.
        """
        watch = list(watch)
        delay = 0.05
        while True:
            try:
                return self._flush_once(writes, watch)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("redis unavailable (%s); retrying in %.2fs", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _flush_once(self, writes: Sequence[JobWrite], watch: list[str]) -> set[str]:
        pipe = self._redis.pipeline(transaction=False)
        for write in writes:
            self._queue_write(pipe, write)
        for job_id in watch:
            pipe.hget(job_key(job_id), "cancel")
        results = pipe.execute(raise_on_error=False)
        for result in results[: len(results) - len(watch)]:
            if isinstance(result, redis.ConnectionError | redis.TimeoutError):
                raise result
            if isinstance(result, Exception) and "equal or smaller" not in str(result):
                log.error("redis write failed: %s", result)
        flags = results[len(results) - len(watch) :] if watch else []
        return {job_id for job_id, flag in zip(watch, flags, strict=True) if flag == b"1"}

    def _queue_write(self, pipe: Any, write: JobWrite) -> None:
        stream = events_key(write.job_id)
        for event in write.events:
            pipe.xadd(stream, {EVENT_FIELD: encode_event(event)}, id=entry_id(event.seq))
        if write.fields:
            pipe.hset(job_key(write.job_id), mapping=to_hash(write.fields))  # type: ignore[arg-type]
        if write.final:
            pipe.expire(job_key(write.job_id), self._retention_s)
            pipe.expire(stream, self._retention_s)
