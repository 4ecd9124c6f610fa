"""Taking a slot of a resident model: the interactive lane, with the key shares applied.

A task thread holds a slot of its job's model from before the claim until the job ends.
Whether it may take one now is a pure decision (:meth:`LanePolicy.verdict`) of two rules:

- **The interactive lane.** Batch-priority jobs hold at most ``slots - interactive_slots``
  of a model's slots, so the task threads kept free take interactive messages (kombu pops
  the interactive list first) the moment they arrive.
- **The key shares** (:mod:`workers.fairness`). The last ``key_reserve_slots`` are kept for
  keys with nothing running on the model here while other keys have work for it; a key
  holding its share runs a waiting key's job instead (:meth:`Lane.take_for_another`).

A task that may not take a slot waits briefly for one (:data:`LANE_WAIT_S`), then gives its
message back to the head of its queue, freeing the thread: Celery cannot choose by priority
or key which message a free thread fetches, so the worker lets go of the wrong ones.
:class:`Lane` keeps the counts under the runtime's lock (the one that guards the models the
worker holds) and wakes the waiting tasks when a slot frees.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from protocol.settings import WorkerSettings
from workers.fairness import KeyShares, Verdict, reserve_slots

__all__ = ["LANE_WAIT_S", "FindJob", "Lane", "LanePolicy", "Slotted"]

LANE_WAIT_S = 0.02
"""How long a batch task over its model's batch share waits for a slot before it gives its
message back. It bounds how often a saturated worker cycles batch messages (each spare
task thread at most 50 times a second) and how long an interactive message can wait for
a thread (bench/priority.py: 0.1 s gave 3.1x idle TTFT under a backlog, 0.02 s 2.6x)."""


class Slotted(Protocol):
    """What the lane reads and counts of a resident model (a ``workers.resident.Resident``)."""

    @property
    def state(self) -> str: ...

    inflight: int
    batch_inflight: int


M = TypeVar("M", bound=Slotted)

FindJob = Callable[[dict[str, int], int], tuple[str, str] | None]
"""``(slots held per key, below)`` → ``(job id, key)`` of the oldest queued job of a key
holding fewer than ``below`` (:meth:`workers.fairness.Finder.find`), or ``None``."""


@dataclass(frozen=True)
class LanePolicy:
    """The rules' numbers for a worker of ``slots`` task threads."""

    slots: int
    batch_slots: int
    """Slots of one model batch-priority jobs may hold at once (the rest: the lane)."""
    key_reserve: int
    """Slots of one model kept for keys with no job running on it here."""

    @classmethod
    def of(cls, slots: int, worker: WorkerSettings) -> LanePolicy:
        """``interactive_slots`` -1 keeps a quarter (at least one); 0 turns the lane off."""
        reserve = worker.interactive_slots
        if reserve < 0:
            reserve = max(1, slots // 4)
        key_reserve = reserve_slots(slots, worker.key_reserve_slots)
        return cls(slots, max(1, slots - reserve), key_reserve)

    def verdict(
        self,
        shares: KeyShares,
        name: str,
        model: Slotted,
        interactive: bool,
        owner: str,
        waiting: frozenset[str],
    ) -> Verdict:
        """What a task of ``owner`` may do on model ``name``, counted as ``model`` and
        ``shares`` are now (``waiting``: the keys with jobs queued for it)."""
        if not interactive and model.batch_inflight >= self.batch_slots:
            return Verdict(False)  # the interactive lane
        free = self.slots - model.inflight
        return shares.verdict(name, owner, self.slots, self.key_reserve, free, waiting)


class Lane(Generic[M]):
    """The slots taken of each model in ``models``, counted under ``lock``."""

    def __init__(self, policy: LanePolicy, lock: threading.Lock, models: Mapping[str, M]) -> None:
        self.policy = policy
        self.shares = KeyShares()
        """The slots each key holds, per model."""
        self._lock = lock
        self._freed = threading.Condition(lock)
        self._models = models

    def take(
        self,
        name: str,
        interactive: bool,
        owner: str = "",
        waiting: frozenset[str] = frozenset(),
    ) -> M | None:
        """A slot of model ``name`` for a task of ``owner``, waiting up to
        :data:`LANE_WAIT_S` for one; ``None`` if it may not take one (or the model is not
        held here, or still loading)."""
        deadline = time.monotonic() + LANE_WAIT_S
        with self._freed:
            while True:
                model = self._models.get(name)
                if model is None or model.state == "loading":
                    return None
                if self._verdict(name, model, interactive, owner, waiting).take:
                    self._hold(name, model, interactive, owner)
                    return model
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._freed.wait(left)

    def take_for_another(
        self, name: str, interactive: bool, owner: str, waiting: frozenset[str], find: FindJob
    ) -> tuple[M, str, str] | None:
        """When ``owner`` holds its share and a key holding less has a job queued (``find``
        looks, outside the lock): a slot taken for that job, its id and its key."""
        with self._lock:
            model = self._models.get(name)
            if model is None or model.state != "ready":
                return None
            below = self._verdict(name, model, interactive, owner, waiting).prefer_below
            held = dict(self.shares.held(name))
        if below is None:
            return None
        found = find(held, below)
        if found is None:
            return None
        with self._lock:
            if self._models.get(name) is not model:
                return None
            if not self._verdict(name, model, interactive, found[1], waiting).take:
                return None  # the slots changed meanwhile
            self._hold(name, model, interactive, found[1])
        return model, found[0], found[1]

    def release(self, name: str, model: M, interactive: bool, owner: str) -> None:
        """Give back a slot taken for ``owner``, waking the tasks that wait for one."""
        with self._freed:
            model.inflight -= 1
            if not interactive:
                model.batch_inflight -= 1
            self.shares.release(name, owner)
            self._freed.notify_all()

    def _verdict(
        self, name: str, model: M, interactive: bool, owner: str, waiting: frozenset[str]
    ) -> Verdict:
        return self.policy.verdict(self.shares, name, model, interactive, owner, waiting)

    def _hold(self, name: str, model: M, interactive: bool, owner: str) -> None:
        model.inflight += 1
        if not interactive:
            model.batch_inflight += 1
        self.shares.hold(name, owner)
