"""Claiming a job: the one script that moves it from ``queued`` to ``running``
(``protocol/scripts/claim_job-4.lua``), and its answer.

A task thread claims its job once it holds a slot of the model (:mod:`workers.lane`) and
before it prepares the prompt (:mod:`workers.prepare`). The claim is a compare-and-set on
the job's status, so a job runs in one place at a time; a job cancelled or past its
deadline while queued ends here instead. :func:`retrying` waits a Redis outage out around
the claim and the other calls a task makes before its job is claimed or given back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

import redis
from redis.typing import EncodableT

from protocol import scripts
from protocol.events import expired_unstarted, template
from protocol.keys import LEASES, QUEUED, events_key, job_key, reply_text

__all__ = ["CLAIM_RETRY_S", "Claim", "Claimer", "retrying"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class Claim(NamedTuple):
    """A claim's answer: ``claimed`` (or why not), the attempt, the log's last seq, the
    job's spec and the token window its tokens are charged to."""

    outcome: str
    attempt: int
    last_seq: int
    spec: bytes | None
    meter: str | None

    @classmethod
    def from_reply(cls, reply: list[Any]) -> Claim:
        """The script's reply (Lua ``false`` arrives as ``None``) as a :class:`Claim`."""
        meter = reply_text(reply[4]) if len(reply) > 4 and reply[4] else None
        return cls(reply_text(reply[0]), int(reply[1]), int(reply[2]), reply[3] or None, meter)


class Claimer:
    """Claims jobs for one worker: its id, its jobs' lease and the retention are fixed."""

    def __init__(
        self, client: redis.Redis, worker_id: str, lease_s: float, retention_s: int
    ) -> None:
        self._script = client.register_script(scripts.load("claim_job"))
        self.worker_id = worker_id
        self.lease_ms = int(lease_s * 1000)
        self.retention_s = retention_s
        self._expired = template(expired_unstarted())

    def claim(self, job_id: str) -> Claim:
        """Claim ``job_id`` now (its lease starts), or say why it does not run."""
        args: list[EncodableT] = [
            self.worker_id,
            time.time(),
            self._expired,
            self.retention_s,
            self.lease_ms,
            job_id,
        ]
        keys = [job_key(job_id), events_key(job_id), LEASES, QUEUED]
        return Claim.from_reply(self._script(keys=keys, args=args))


CLAIM_RETRY_S = 600.0
"""How long a task waits out a Redis outage before its claim gives up."""


def retrying(call: Callable[[], T], give_up_s: float = CLAIM_RETRY_S) -> T:
    """``call()``, retried with capped backoff while Redis is unreachable.

    A task whose claim (or give-back) failed on a Redis outage would be acked by Celery with
    its job still ``queued`` and no message left anywhere: the job would never run. Waiting
    the outage out (the consumer reconnects meanwhile) keeps it.
    """
    deadline = time.monotonic() + give_up_s
    delay = 0.05
    while True:
        try:
            return call()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("redis unavailable (%s); retrying the claim in %.2fs", exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
