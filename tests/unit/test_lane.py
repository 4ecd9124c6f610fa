"""The interactive lane: batch jobs may hold only part of a model's slots."""

from __future__ import annotations

import time
from types import SimpleNamespace

from protocol.settings import RedisSettings, ServerSettings, Settings, WorkerSettings
from workers.runtime import LANE_WAIT_S, Runtime


def runtime(slots: int, interactive_slots: int) -> Runtime:
    settings = Settings(
        redis=RedisSettings(url="redis://127.0.0.1:1/0"),  # never contacted here
        server=ServerSettings(),
        worker=WorkerSettings(interactive_slots=interactive_slots),
    )
    rt = Runtime(settings, slots)
    rt._models["m"] = SimpleNamespace(state="ready", inflight=0, batch_inflight=0)  # type: ignore[assignment]
    return rt


def test_batch_jobs_leave_the_interactive_slots_free() -> None:
    rt = runtime(slots=4, interactive_slots=1)
    assert rt.batch_slots == 3
    for _ in range(3):
        assert rt._take_slot("m", interactive=False) is not None
    started = time.monotonic()
    assert rt._take_slot("m", interactive=False) is None  # gives its message back
    assert time.monotonic() - started >= LANE_WAIT_S * 0.9
    assert rt._take_slot("m", interactive=True) is not None
    resident = rt._models["m"]
    assert (resident.inflight, resident.batch_inflight) == (4, 3)


def test_defaults_keep_a_quarter_and_zero_turns_the_lane_off() -> None:
    assert runtime(slots=16, interactive_slots=-1).batch_slots == 12
    assert runtime(slots=2, interactive_slots=-1).batch_slots == 1
    assert runtime(slots=16, interactive_slots=0).batch_slots == 16


def test_an_unknown_model_is_not_taken() -> None:
    assert runtime(slots=4, interactive_slots=1)._take_slot("other", interactive=True) is None
