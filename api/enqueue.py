"""Celery task messages pushed straight onto the broker's Redis list.

``Celery.send_task`` cost about 4 ms per job on the 2-core development machine (a hop to a
worker thread, a producer taken from the pool, a ``PING``, building the message; read off
``MONITOR`` timestamps), most of the time-to-first-token the stack may add. On kombu's
Redis transport a Celery message (protocol 2) is a small JSON envelope ``LPUSH``\\ed onto the
queue's list, one list per priority step, so the API builds it itself and pushes it in the
same script that writes the job record (:mod:`api.services.job_store`): a job is recorded
and queued together, or not at all. ``tests/unit/test_api_enqueue.py`` checks the envelope
against the one Celery builds; every integration test runs it through a real worker.
"""

from __future__ import annotations

import base64
import bisect
import os
import socket
import uuid
from typing import Any

import msgspec

from protocol.keys import CELERY_PRIORITY_STEPS, broker_transport_options

_SEP = str(broker_transport_options()["sep"])
_ORIGIN = f"gen{os.getpid()}@{socket.gethostname()}"
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
_encoder = msgspec.json.Encoder()


def queue_list(queue: str, priority: int) -> str:
    """The Redis list kombu keeps ``queue``'s messages of ``priority`` in."""
    step = CELERY_PRIORITY_STEPS[bisect.bisect(CELERY_PRIORITY_STEPS, priority) - 1]
    return f"{queue}{_SEP}{step}" if step else queue


def task_message(task: str, task_id: str, args: list[Any], queue: str, priority: int) -> bytes:
    """A Celery protocol-2 task message in kombu's Redis envelope."""
    body = _encoder.encode([args, {}, _EMBED])
    headers: dict[str, Any] = {
        "lang": "py",
        "task": task,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": repr(args),
        "kwargsrepr": "{}",
        "origin": _ORIGIN,
        "ignore_result": True,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    properties = {
        "correlation_id": task_id,
        "reply_to": str(uuid.uuid4()),
        "delivery_mode": 2,
        "delivery_info": {"exchange": "", "routing_key": queue},
        "priority": priority,
        "body_encoding": "base64",
        "delivery_tag": str(uuid.uuid4()),
    }
    envelope = {
        "body": base64.b64encode(body).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": properties,
    }
    return _encoder.encode(envelope)
