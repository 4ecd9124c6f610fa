"""The API's hand-built Celery message matches the one Celery itself sends."""

from __future__ import annotations

import base64
import json

import pytest
import redis
from celery import Celery

from api.enqueue import queue_list, task_message
from protocol.keys import (
    CELERY_PRIORITY_BATCH,
    CELERY_PRIORITY_INTERACTIVE,
    TASK_GENERATE,
    broker_transport_options,
)

VOLATILE_HEADERS = {"origin", "ignore_result"}
VOLATILE_PROPERTIES = {"reply_to", "delivery_tag"}


def celery_message(url: str, queue: str, priority: int) -> tuple[str, dict[str, object]]:
    app = Celery("probe", broker=url, set_as_current=False)
    app.conf.broker_transport_options = broker_transport_options()
    app.send_task(TASK_GENERATE, args=["job-1"], task_id="job-1", queue=queue, priority=priority)
    app.close()
    client = redis.Redis.from_url(url)
    lists = [k.decode() for k in client.keys(f"{queue}*") if client.type(k) == b"list"]
    assert len(lists) == 1
    raw = client.rpop(lists[0])
    client.close()
    assert isinstance(raw, bytes)
    return lists[0], json.loads(raw)


@pytest.mark.parametrize("priority", [CELERY_PRIORITY_INTERACTIVE, CELERY_PRIORITY_BATCH])
def test_message_and_list_match_celery(redis_url: str, priority: int) -> None:
    queue = "model.probe"
    want_list, want = celery_message(redis_url, queue, priority)
    got = json.loads(task_message(TASK_GENERATE, "job-1", ["job-1"], queue, priority))
    assert queue_list(queue, priority) == want_list
    assert json.loads(base64.b64decode(got["body"])) == json.loads(base64.b64decode(want["body"]))
    assert {k: v for k, v in got["headers"].items() if k not in VOLATILE_HEADERS} == {
        k: v for k, v in want["headers"].items() if k not in VOLATILE_HEADERS
    }
    assert {k: v for k, v in got["properties"].items() if k not in VOLATILE_PROPERTIES} == {
        k: v for k, v in want["properties"].items() if k not in VOLATILE_PROPERTIES
    }
    assert set(got) == set(want)


def test_priority_steps_map_to_lists() -> None:
    assert queue_list("model.m", 0) == "model.m"
    assert queue_list("model.m", 4) == "model.m:3"
    assert queue_list("model.m", 6) == "model.m:6"
    assert queue_list("model.m", 9) == "model.m:9"
