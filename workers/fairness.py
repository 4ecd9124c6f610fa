"""Sharing a model's slots between API keys on one worker.

Celery hands a free task thread whichever message is next in the model's list, so without
a rule one key's backlog fills every slot and a request of another key waits for a long
stream to end, behind all of that key's queued work (the issue measured 34 s for a 4-token
request behind 30 long streams of 3 keys). While more than one key has work for a model
(jobs running on this worker, or queued), two rules fix that without preempting anything:

- **A reserve for new keys.** The last ``key_reserve_slots`` free slots of the model go
  only to a key that has no job running on it here, so the first request of another key
  starts at once while the others' work fills the rest.
- **A fair share on turnover.** A key that holds ``(slots - reserve) // keys`` slots or more
  (``keys``: those running jobs of the model here or with jobs queued for it) takes a freed
  slot only if no key holding less has a job queued; if one has, the task runs that key's
  oldest queued job instead and gives its own message back to the head of the queue.

A key alone on a model uses every slot (no reserve is kept for keys that never come); the
first other key to queue a job takes the next slot that frees, and from then on the reserve
is kept. Queued jobs are found through the live queued sets of :mod:`protocol.queued` (one
script, ``find_waiting-1.lua``, run by :class:`Finder`); a job taken that way is claimed like
any other, so the copy of its message still in the list is skipped when a worker pops it.
The rules apply per priority: an interactive task looks among interactive jobs, a batch task
among batch ones (and batch jobs stay inside their lane). :mod:`workers.lane` applies these
rules when a task takes a slot.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

import redis

from protocol import scripts
from protocol.keys import job_key, reply_text
from protocol.queued import key_live_parts, keys_index_key
from protocol.states import Priority

SCAN_KEYS = 32
"""Keys with queued jobs a look examines, those waiting longest first."""


def reserve_slots(slots: int, setting: int) -> int:
    """The slots kept for new keys: ``setting``, or ``slots // 8`` for -1 (none below 8)."""
    if setting < 0:
        return slots // 8
    return min(setting, max(0, slots - 1))


class Meta(NamedTuple):
    model: str
    owner: str
    waiting: frozenset[str]
    """Keys with jobs queued for the model (at most :data:`SCAN_KEYS`, waiting longest)."""


@dataclass(frozen=True)
class Verdict:
    take: bool
    """Whether the key may take a free slot now."""
    prefer_below: int | None = None
    """If set, first look for a queued job of a key holding fewer slots than this and run
    it instead (a key not running here holds none)."""


def decide(slots: int, reserve: int, free: int, held: int, keys: int) -> Verdict:
    """What a task of a key holding ``held`` of the model's slots may do, with ``free`` slots
    free and ``keys`` keys (this one included) with work for the model: running here or
    queued."""
    if free <= 0:
        return Verdict(False)
    if held == 0 or keys <= 1:
        return Verdict(True)
    if free > reserve:
        share = max(1, (slots - reserve) // max(1, keys))
        return Verdict(True, None if held < share else share)
    return Verdict(False, 1)


class KeyShares:
    """The slots each key holds, per model (task threads update it under the runtime lock)."""

    def __init__(self) -> None:
        self._held: dict[str, Counter[str]] = {}

    def held(self, model: str) -> Counter[str]:
        return self._held.setdefault(model, Counter())

    def verdict(
        self,
        model: str,
        owner: str,
        slots: int,
        reserve: int,
        free: int,
        waiting: frozenset[str] = frozenset(),
    ) -> Verdict:
        """:func:`decide` for ``owner``; ``waiting``: the keys with jobs queued for the model."""
        held = self.held(model)
        keys = len(held.keys() | waiting | {owner})
        return decide(slots, reserve, free, held[owner], keys)

    def hold(self, model: str, owner: str) -> None:
        self.held(model)[owner] += 1

    def release(self, model: str, owner: str) -> None:
        held = self.held(model)
        held[owner] -= 1
        if held[owner] <= 0:
            del held[owner]


class Finder:
    """Finds a queued job of a key short of its share (one script, O(keys examined))."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._script = client.register_script(scripts.load("find_waiting"))

    def meta(self, job_id: str, model: str | None, interactive: bool) -> Meta:
        """The job's model (``model`` if its queue named it), its key, and the keys with
        jobs queued for the model at its priority: one round trip when the model is known."""
        if model is None:
            model = reply_text(self._redis.hget(job_key(job_id), "model"))
        priority = Priority.INTERACTIVE if interactive else Priority.BATCH
        pipe = self._redis.pipeline(transaction=False)
        pipe.hget(job_key(job_id), "owner")
        pipe.zrange(keys_index_key(priority, model), 0, SCAN_KEYS - 1)
        owner, waiting = pipe.execute()
        return Meta(model, reply_text(owner), frozenset(reply_text(k) for k in waiting))

    def find(
        self, model: str, interactive: bool, held: dict[str, int], below: int
    ) -> tuple[str, str] | None:
        """``(job id, key)`` of the oldest queued job of a key holding fewer than ``below``."""
        priority = Priority.INTERACTIVE if interactive else Priority.BATCH
        prefix, suffix = key_live_parts(priority, model)
        pairs = [item for key, n in held.items() for item in (key, n)]
        args = [prefix, suffix, below, SCAN_KEYS, *pairs]
        found = self._script(keys=[keys_index_key(priority, model)], args=args)
        if not found:
            return None
        return reply_text(found[0]), reply_text(found[1])
