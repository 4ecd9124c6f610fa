"""Choosing the worker a load goes to, and reading an operation through heartbeats."""

from __future__ import annotations

import pytest

from api.errors import APIError
from api.services.model_ops import choose_worker, derive
from protocol.models import ModelOp
from protocol.workers import ModelState, WorkerInfo


def worker(
    wid: str,
    free: int,
    *held: tuple[str, str],
    registered: tuple[str, ...] = ("a", "b"),
    device: str = "cpu",
) -> WorkerInfo:
    return WorkerInfo(
        id=wid,
        host="h",
        pid=1,
        slots=4,
        free_slots=4,
        device=device,
        memory_free=free,
        memory_total=100,
        registered=list(registered),
        models=[ModelState(name=n, engine="torch", device=device, state=s) for n, s in held],  # type: ignore[arg-type]
    )


def test_most_free_memory_wins_among_workers_without_the_model() -> None:
    workers = [worker("w1", 90, ("a", "ready")), worker("w2", 40), worker("w3", 60)]
    assert choose_worker(workers, "a", known=False).id == "w3"
    assert choose_worker(workers, "b", known=False).id == "w1"


def test_device_filters_candidates() -> None:
    workers = [worker("w1", 90), worker("w2", 10, device="cuda:0")]
    assert choose_worker(workers, "a", known=False, device="cuda:0").id == "w2"


def test_only_workers_whose_registry_names_it_unless_the_api_knows_the_path() -> None:
    workers = [worker("w1", 90, registered=()), worker("w2", 10)]
    assert choose_worker(workers, "a", known=False).id == "w2"
    assert choose_worker(workers, "a", known=True).id == "w1"


def test_unregistered_everywhere_is_404_and_no_room_is_503() -> None:
    with pytest.raises(APIError) as info:
        choose_worker([worker("w1", 90)], "zzz", known=False)
    assert info.value.status == 404 and info.value.info.code == "model_not_found"
    with pytest.raises(APIError) as info:
        choose_worker([worker("w1", 90, ("a", "ready"))], "a", known=False)
    assert info.value.status == 503 and info.value.headers["Retry-After"]


def test_a_named_worker_must_be_live() -> None:
    with pytest.raises(APIError) as info:
        choose_worker([worker("w1", 90)], "a", known=False, worker="w9")
    assert (info.value.status, info.value.info.param) == (404, "worker")
    assert choose_worker([worker("w1", 90)], "a", known=False, worker="w1").id == "w1"


def op(kind: str, state: str) -> ModelOp:
    return ModelOp(id="op-1", kind=kind, model="a", worker="w1", state=state)  # type: ignore[arg-type]


def test_derive_follows_the_heartbeat() -> None:
    loading, ready = [worker("w1", 1, ("a", "loading"))], [worker("w1", 1, ("a", "ready"))]
    assert derive(op("load", "loading"), loading).state == "loading"
    assert derive(op("load", "pending"), ready).state == "ready"
    assert derive(op("unload", "unloading"), [worker("w1", 1)]).state == "unloaded"
    assert derive(op("unload", "pending"), ready).state == "pending"


def test_derive_fails_open_operations_of_a_gone_worker_and_keeps_finished_ones() -> None:
    gone = derive(op("load", "loading"), [])
    assert gone.state == "failed" and "gone" in (gone.error or "")
    assert derive(op("load", "ready"), []).state == "ready"


def test_a_device_no_live_worker_has_is_404_and_empty_is_no_preference() -> None:
    workers = [worker("w1", 90), worker("w2", 10, device="cuda:0")]
    with pytest.raises(APIError) as info:
        choose_worker(workers, "a", known=True, device="cuda:7")
    assert (info.value.status, info.value.info.code) == (404, "device_not_found")
    assert choose_worker(workers, "a", known=True, device="").id == "w1"
