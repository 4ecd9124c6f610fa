"""Crash recovery: leases on running jobs, and the reaper that re-queues a dead worker's jobs.

A worker that claims a job puts it in ``uml:leases`` (a sorted set scored by lease expiry,
in Redis time) and renews the leases of every job it runs with each heartbeat
(:func:`renew`); a job's final write removes it (:mod:`workers.sink`). Every worker runs a
reaper pass after its heartbeat; a Redis lock makes it one pass at a time across workers.
For each job whose lease lapsed, one script (``protocol/scripts/reap_job-5.lua``) decides
atomically:

- the lease was renewed meanwhile, or the job already ended → nothing;
- its cancel flag is set → ``cancelled``, with its final event;
- it has had ``max_attempts`` attempts (not counting hand-backs at shutdown) → ``failed``
  with code ``worker_lost``;
- else → back to ``queued`` with the Celery message it was claimed with, pushed at the
  **head** of its queue (it was running: it goes first), same task id, same delivery tag
  (the new worker's ack clears the dead worker's unacked entry).

The pass also sweeps ``uml:queued`` for jobs queued long without their message being seen:
one that is neither in its list nor delivered to a worker is pushed back (kombu pops with
``BRPOP``, so a reply lost when Redis restarts loses the message; the job would wait
forever), and so is one delivered that long ago but never claimed (its worker died with it
prefetched, or dropped it on a broker disconnect without giving it back: kombu would only
redeliver it after the visibility timeout, days later).

The next claim increments ``attempt`` and resumes from the event log (see
:func:`workers.prepare.resume_state`); writes of an older attempt are fenced off
by the sink, so a worker that was only stalled cannot interleave with the new attempt.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import msgspec
import redis

from protocol import scripts
from protocol.events import ErrorEvent, cancelled_unstarted, template
from protocol.keys import (
    KOMBU_UNACKED,
    KOMBU_UNACKED_INDEX,
    LEASES,
    QUEUED,
    REAPER_LOCK,
    events_key,
    job_key,
    queue_name,
    reply_text,
)
from protocol.openai import ErrorInfo
from workers.requeue import list_of

log = logging.getLogger(__name__)

ORPHAN_BATCH = 20
"""Queued jobs a reaper pass looks at (the longest unseen first)."""


def worker_lost(attempts: int) -> ErrorInfo:
    return ErrorInfo(
        message=f"The job's worker stopped while running it, {attempts} time(s); it was not "
        "retried again (UML_WORKER_MAX_ATTEMPTS)",
        type="server_error",
        code="worker_lost",
    )


class Reaper:
    def __init__(
        self, client: redis.Redis, lease_s: float, max_attempts: int, retention_s: int
    ) -> None:
        self.redis = client
        self.lease_ms = int(lease_s * 1000)
        self.max_attempts = max_attempts
        self.retention_s = retention_s
        self._renew = client.register_script(scripts.load("renew_leases"))
        self._reap_one = client.register_script(scripts.load("reap_job"))
        self._hand_back = client.register_script(scripts.load("hand_back_job"))
        self._restore = client.register_script(scripts.load("restore_job"))
        self._forget = client.register_script(scripts.load("forget_job"))
        self._unlock = client.register_script(scripts.load("unlock"))
        self.orphan_ms = 2 * self.lease_ms
        """A queued job's message unseen this long is looked for (and restored if gone)."""
        error = worker_lost(max_attempts)
        self._failed = template(ErrorEvent(seq=0, error=error))
        self._error = msgspec.json.encode(error)
        self._cancelled = template(cancelled_unstarted())

    def renew(self, job_ids: list[str]) -> None:
        """Extend the leases of the jobs this worker runs (a job that ended has none)."""
        if job_ids:
            self._renew(keys=[LEASES], args=[self.lease_ms, *job_ids])

    def reap(self, holder: str, batch: int = 100) -> dict[str, str]:
        """One pass, if no other worker's is running: ``{job id: outcome}``."""
        if not self.redis.set(REAPER_LOCK, holder, nx=True, px=self.lease_ms):
            return {}
        try:
            t_s, t_us = self.redis.time()
            now_ms = t_s * 1000 + t_us // 1000
            due = _members(self.redis.zrangebyscore(LEASES, "-inf", now_ms, start=0, num=batch))
            outcomes = {reply_text(raw): self._reap(reply_text(raw)) for raw in due}
            stale = _members(
                self.redis.zrangebyscore(
                    QUEUED, "-inf", now_ms - self.orphan_ms, start=0, num=ORPHAN_BATCH
                )
            )
            for raw in stale:
                outcome = self._sweep(reply_text(raw))
                if outcome in ("restored", "stranded"):
                    outcomes[reply_text(raw)] = outcome
            return outcomes
        finally:
            self._unlock(keys=[REAPER_LOCK], args=[holder])

    def hand_back(self, job_id: str, attempt: int) -> str:
        """Put a job this worker stopped (shutting down) back at the head of its queue; a
        hand-back does not count towards the attempt cap."""
        model, task = self.redis.hmget(job_key(job_id), ["model", "task"])
        target = _target(reply_text(model or b""), task)
        outcome = reply_text(
            self._hand_back(
                keys=[job_key(job_id), LEASES, target, QUEUED],
                args=[job_id, attempt, self.retention_s],
            )
        )
        log.info("job %s handed back at shutdown: %s", job_id, outcome, extra={"job_id": job_id})
        return outcome

    def _sweep(self, job_id: str) -> str:
        """Look for a long-queued job's message; push it back if it is nowhere."""
        model, msg = self.redis.hmget(job_key(job_id), ["model", "msg"])
        if msg is None:  # it ran or ended: it leaves the index and the live queued count
            self._forget(keys=[job_key(job_id), QUEUED], args=[job_id])
            return "ended"
        tag = ""
        try:
            tag = str(msgspec.json.decode(msg).get("properties", {}).get("delivery_tag") or "")
        except (msgspec.DecodeError, AttributeError):
            pass
        target = _target(reply_text(model or b""), msg)
        keys = [job_key(job_id), QUEUED, target, KOMBU_UNACKED, KOMBU_UNACKED_INDEX]
        stranded_s = self.orphan_ms / 1000
        args = [job_id, msg, tag, stranded_s, self.retention_s]
        outcome = reply_text(self._restore(keys=keys, args=args))
        if outcome in ("restored", "stranded"):
            why = "was lost" if outcome == "restored" else "was delivered but never claimed"
            log.warning(
                "job %s: its queued message %s; pushed it back",
                job_id,
                why,
                extra={"job_id": job_id},
            )
        return outcome

    def _reap(self, job_id: str) -> str:
        model, task = self.redis.hmget(job_key(job_id), ["model", "task"])
        target = _target(reply_text(model or b""), task)
        outcome = self._reap_one(
            keys=[job_key(job_id), events_key(job_id), LEASES, target, QUEUED],
            args=[
                job_id,
                self.max_attempts,
                self.retention_s,
                self._failed,
                self._error,
                self._cancelled,
            ],
        )
        outcome = reply_text(outcome)
        if outcome != "renewed":
            log.warning(
                "job %s: lease lapsed (its worker is gone): %s",
                job_id,
                outcome,
                extra={"job_id": job_id},
            )
        return outcome


def _members(reply: Any) -> list[bytes]:
    """A sorted-set range without scores: members, as bytes (the worker's clients decode
    nothing), where redis-py's annotation allows scored pairs too."""
    return cast(list[bytes], reply)


def _target(model: str, task: Any) -> str:
    """The list the claimed Celery message goes back to (its priority's)."""
    priority = 0
    if task:
        try:
            envelope = msgspec.json.decode(task)
            priority = int(envelope.get("properties", {}).get("priority") or 0)
        except (msgspec.DecodeError, ValueError, AttributeError):
            priority = 0
    return list_of(queue_name(model), priority)
