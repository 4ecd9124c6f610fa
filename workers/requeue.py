"""Give a job back to its queue, unclaimed, when it reached a worker that no longer holds
its model (an unload finished while kombu had the message in flight).

The job's hash still holds the message the API queued (``msg``, kept while the job is
``queued``); it goes back at the **head** of its priority list (kombu pops from the right)
with a fresh delivery tag, and ``msg`` follows it, so queue positions keep working
(``protocol/scripts/requeue_job-2.lua``).
"""

from __future__ import annotations

import bisect
import logging
import uuid

import msgspec
import redis

from protocol import scripts
from protocol.keys import CELERY_PRIORITY_STEPS, broker_transport_options, job_key, queue_name

log = logging.getLogger(__name__)

_SEP = str(broker_transport_options()["sep"])
LANE_FULL = "no slot it may take here now (interactive lane or key share)"


class Requeuer:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._script = client.register_script(scripts.load("requeue_job"))

    def give_back(self, job_id: str, model: str, why: str = "model not held here") -> str:
        """``requeued``, or ``skip`` for a job that is no longer queued (nothing to do)."""
        raw = self.redis.hget(job_key(job_id), "msg")
        if raw is None:
            log.info(
                "job %s for %s not held here and no longer queued",
                job_id,
                model,
                extra={"job_id": job_id},
            )
            return "skip"
        envelope = msgspec.json.decode(raw)
        props = envelope.get("properties", {})
        props["delivery_tag"] = str(uuid.uuid4())
        target = list_of(queue_name(model), int(props.get("priority") or 0))
        moved = self._script(
            keys=[job_key(job_id), target], args=[raw, msgspec.json.encode(envelope)]
        )
        level = logging.DEBUG if why == LANE_FULL else logging.INFO
        log.log(level, "job %s (%s): %s; requeued=%s", job_id, model, why, bool(moved))
        return "requeued"


def list_of(queue: str, priority: int) -> str:
    """The Redis list kombu keeps ``queue``'s messages of ``priority`` in."""
    step = CELERY_PRIORITY_STEPS[bisect.bisect(CELERY_PRIORITY_STEPS, priority) - 1]
    return f"{queue}{_SEP}{step}" if step else queue
