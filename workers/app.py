"""The Celery app: Redis broker, per-model queues, the ``uml.generate`` task.

Workers run the ``threads`` pool (one model copy per process, CUDA-safe) and consume
``model.<name>`` for each model they hold. Crash recovery is ours (job leases in Redis), so
the visibility timeout sits far above the longest job and kombu never redelivers by itself.
``celery -A workers.app ...`` (Flower, inspect) uses the module-level :data:`app`.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery

from protocol.keys import CELERY_PRIORITY_BATCH, TASK_GENERATE, broker_transport_options
from protocol.settings import get_settings

log = logging.getLogger(__name__)


def create_celery(broker_url: str) -> Celery:
    celery = Celery("uml", broker=broker_url, set_as_current=False)
    celery.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=False,
        worker_prefetch_multiplier=1,
        # Task events cost a PUBLISH before each task starts; Flower turns them on at
        # runtime (enable_events) when it attaches.
        worker_send_task_events=False,
        task_create_missing_queues=True,
        # polling_interval is kombu's BRPOP timeout: a queue added after a load is polled
        # from the next BRPOP on, so a short one makes a loaded model serve sooner.
        broker_transport_options={**broker_transport_options(), "polling_interval": 0.25},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        broker_transport="workers.transport:Transport",
    )
    celery.task(name=TASK_GENERATE, ignore_result=True, bind=True)(generate)
    return celery


def generate(task: Any, job_id: str) -> str:
    """Run one job on the model its queue (``model.<name>``) names; returns its final status."""
    from workers.runtime import Runtime

    info = task.request.delivery_info or {}
    routing_key = str(info.get("routing_key") or "")
    model = routing_key.removeprefix("model.") if routing_key.startswith("model.") else None
    interactive = int(info.get("priority") or 0) < CELERY_PRIORITY_BATCH
    return Runtime.current().run_job(job_id, model, interactive=interactive)


app = create_celery(get_settings().redis.url)
