"""What the direct tests of the Redis scripts share: running a script by name, Redis's
clock, and the job keys and event templates the scripts take."""

from __future__ import annotations

from typing import Any

import redis

from protocol import scripts
from protocol.events import cancelled_unstarted, expired_unstarted, template
from protocol.keys import events_key, job_key
from protocol.queued import key_live_key, live_key

JOB, EVENTS = job_key("j"), events_key("j")
LIVE = live_key("batch", "m")
MINE = key_live_key("batch", "k", "m")
EXPIRED, CANCELLED = template(expired_unstarted()), template(cancelled_unstarted())


def run(client: redis.Redis, name: str, keys: list[str], args: list[Any]) -> Any:
    return client.register_script(scripts.load(name))(keys=keys, args=args)


def now_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds * 1000 + micros // 1000)
