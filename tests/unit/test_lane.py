"""The interactive lane (workers.lane): batch jobs may hold only part of a model's slots."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from protocol.settings import WorkerSettings
from workers.fairness import KeyShares, Verdict
from workers.lane import LANE_WAIT_S, Lane, LanePolicy


@dataclass
class Model:
    """A resident model as the lane sees it."""

    state: str = "ready"
    inflight: int = 0
    batch_inflight: int = 0


def policy(slots: int, interactive_slots: int) -> LanePolicy:
    return LanePolicy.of(slots, WorkerSettings(interactive_slots=interactive_slots))


def lane(slots: int, interactive_slots: int, **models: Model) -> Lane[Model]:
    return Lane(policy(slots, interactive_slots), threading.Lock(), models or {"m": Model()})


def test_batch_jobs_leave_the_interactive_slots_free() -> None:
    model = Model()
    ln = lane(slots=4, interactive_slots=1, m=model)
    assert ln.policy.batch_slots == 3
    for _ in range(3):
        assert ln.take("m", interactive=False) is model
    started = time.monotonic()
    assert ln.take("m", interactive=False) is None  # gives its message back
    assert time.monotonic() - started >= LANE_WAIT_S * 0.9
    assert ln.take("m", interactive=True) is model
    assert (model.inflight, model.batch_inflight) == (4, 3)


def test_defaults_keep_a_quarter_and_zero_turns_the_lane_off() -> None:
    assert policy(slots=16, interactive_slots=-1).batch_slots == 12
    assert policy(slots=2, interactive_slots=-1).batch_slots == 1
    assert policy(slots=16, interactive_slots=0).batch_slots == 16


def test_an_unknown_model_is_not_taken() -> None:
    assert lane(slots=4, interactive_slots=1).take("other", interactive=True) is None


def test_a_loading_model_is_not_taken() -> None:
    assert lane(slots=4, interactive_slots=1, m=Model("loading")).take("m", True) is None


def test_a_released_slot_counts_back_and_can_be_taken_again() -> None:
    model = Model()
    ln = lane(slots=2, interactive_slots=1, m=model)
    assert ln.take("m", interactive=False, owner="a") is model
    assert ln.take("m", interactive=False, owner="a") is None  # the lane
    ln.release("m", model, interactive=False, owner="a")
    assert (model.inflight, model.batch_inflight, dict(ln.shares.held("m"))) == (0, 0, {})
    assert ln.take("m", interactive=False, owner="a") is model


def test_the_verdict_is_pure() -> None:
    rules = policy(slots=4, interactive_slots=1)
    full_batch = Model(inflight=3, batch_inflight=3)
    assert rules.verdict(KeyShares(), "m", full_batch, False, "a", frozenset()) == Verdict(False)
    assert rules.verdict(KeyShares(), "m", full_batch, True, "a", frozenset()) == Verdict(True)
    assert rules.verdict(KeyShares(), "m", Model(inflight=4), True, "a", frozenset()).take is False
