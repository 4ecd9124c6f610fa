"""Model management on a real stack: two workers, two tiny models with different seeds.

The module starts its own Redis, two API replicas and two workers (``alpha`` loaded at
start from the registry by name, the other worker empty), with short heartbeats so that a
killed worker leaves ``/models`` within seconds.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from protocol.jobs import SamplingParams
from tests.auth import AUTH
from tests.integration.stack import Proc, Stack, wait_for
from uml.redis_server import start_redis
from workers.engines.base import EngineJob
from workers.engines.torch_engine import TorchEngine

SEEDS = {"alpha": 11, "beta": 22}
PROMPT = "The models differ"
NEW = 12
TTL_S = 3.0


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from workers.tiny import make_tiny

    root = tmp_path_factory.mktemp("registry")
    return {name: make_tiny(root / name, seed=seed) for name, seed in SEEDS.items()}


@pytest.fixture(scope="module")
def registry(model_dirs: dict[str, Path]) -> Path:
    path = model_dirs["alpha"].parent / "models.toml"
    lines = [f'[models.{name}]\npath = "{name}"\nmax_seq_len = 1024\n' for name in model_dirs]
    path.write_text("\n".join(lines))
    return path


@pytest.fixture(scope="module")
def expected(model_dirs: dict[str, Path]) -> dict[str, str]:
    """Each model's greedy text for PROMPT, computed in this process."""
    texts = {}
    for name, path in model_dirs.items():
        engine = TorchEngine(device="cpu", max_batch=1, max_seq_len=1024)
        engine.load(path)
        engine.enqueue(
            EngineJob("x", engine.encode(PROMPT), SamplingParams(max_tokens=NEW, temperature=0.0))
        )
        ids: list[int] = []
        while engine.active:
            for out in engine.step():
                ids += out.token_ids
        texts[name] = engine.decode(ids)
        engine.unload()
    assert texts["alpha"] != texts["beta"], "different seeds should give different text"
    return texts


class Models:
    """The module's stack: its API, its two workers and their ids."""

    def __init__(self, stack: Stack, bases: list[str], first: Proc, second: Proc) -> None:
        self.stack = stack
        self.base = bases[0]
        self.bases = bases
        """Two API replicas on the same Redis."""
        self.procs = {"first": first, "second": second}
        self.ids = {name: stack.worker_id(proc) for name, proc in self.procs.items()}


@pytest.fixture(scope="module")
def models(registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Models]:
    server = start_redis(tmp_path_factory.mktemp("models-redis"), appendonly=False)
    env = {
        "UML_MODELS": str(registry),
        "UML_WORKER_HEARTBEAT_S": "0.5",
        "UML_WORKER_HEARTBEAT_TTL_S": str(TTL_S),
        "UML_MODELS_CACHE_S": "0.2",
        "UML_LOAD_WAIT_S": "90",
    }
    stack = Stack(
        redis_url=server.url, log_dir=tmp_path_factory.mktemp("models-logs"), extra_env=env
    )
    try:
        first = _start_named(stack, "alpha")
        second = stack.start_idle_worker(slots=16)
        bases = [stack.start_api()[1], stack.start_api()[1]]
        yield Models(stack, bases, first, second)
    finally:
        stack.stop()
        server.stop()


def _start_named(stack: Stack, model: str) -> Proc:
    """A worker that loads ``model`` at start by its registry name (it beats once loaded)."""
    return stack.start_idle_worker(slots=16, extra=("--model", model))


@pytest.fixture
def http(models: Models) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=models.base, timeout=120, headers=AUTH) as client:
        yield client


def _overview(http: httpx.Client) -> dict[str, Any]:
    response = http.get("/models")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _model(http: httpx.Client, name: str) -> dict[str, Any]:
    return next(m for m in _overview(http)["models"] if m["name"] == name)


def _complete(http: httpx.Client, model: str) -> str:
    body = {"model": model, "prompt": PROMPT, "max_tokens": NEW, "temperature": 0}
    response = http.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    text: str = response.json()["choices"][0]["text"]
    return text


def _user_headers(http: httpx.Client) -> dict[str, str]:
    made = http.post("/admin/keys", json={"name": "models-user"})
    assert made.status_code == 201, made.text
    return {"Authorization": f"Bearer {made.json()['key']}"}


def _load(http: httpx.Client, body: dict[str, Any], wait: bool = True) -> dict[str, Any]:
    response = http.post("/load_model", params={"wait": str(wait).lower()}, json=body)
    assert response.status_code in (200, 202), response.text
    op: dict[str, Any] = response.json()["data"][0]
    assert op["state"] != "failed", op["error"]
    return op


def _op(http: httpx.Client, op_id: str) -> dict[str, Any]:
    response = http.get(f"/models/ops/{op_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_heartbeats_describe_workers_and_models(http: httpx.Client, models: Models) -> None:
    view = _overview(http)
    workers = {w["id"]: w for w in view["workers"]}
    assert set(models.ids.values()) <= set(workers)
    first = workers[models.ids["first"]]
    assert first["models"] == ["alpha"]
    assert first["device"] == "cpu"
    assert 0 < first["memory_free"] <= first["memory_total"]
    assert first["free_slots"] == first["slots"] - first["active"]
    alpha = _model(http, "alpha")
    assert alpha["registered"] and alpha["ready"]
    assert alpha["workers"][0]["worker"] == models.ids["first"]
    assert alpha["workers"][0]["state"] == "ready"
    assert alpha["workers"][0]["memory_bytes"] > 0
    assert {m["name"] for m in view["models"]} >= {"alpha", "beta"}


def test_load_and_unload_need_the_admin_scope(http: httpx.Client) -> None:
    user = _user_headers(http)
    for path in ("/load_model", "/unload_model"):
        response = http.post(path, json={"model": "beta"}, headers=user)
        assert response.status_code == 403, response.text
    assert http.get("/models", headers=user).status_code == 200
    assert http.get("/v1/models", headers=user).status_code == 200


def test_load_routes_each_model_to_its_worker(
    http: httpx.Client, models: Models, expected: dict[str, str]
) -> None:
    op = _load(http, {"model": "beta", "worker": models.ids["second"]})
    assert op["state"] == "ready", op
    assert op["worker"] == models.ids["second"]
    ids = {m["id"] for m in http.get("/v1/models").json()["data"]}
    assert {"alpha", "beta"} <= ids
    for name in ("alpha", "beta", "beta", "alpha"):
        assert _complete(http, name) == expected[name], name
    beta = _model(http, "beta")
    assert [p["worker"] for p in beta["workers"]] == [models.ids["second"]]


def test_unload_lets_eight_streaming_jobs_finish(http: httpx.Client, models: Models) -> None:
    _load(http, {"model": "beta", "worker": models.ids["second"]})
    started = threading.Barrier(9, timeout=60)
    results: list[tuple[str | None, float]] = []
    lock = threading.Lock()

    def stream(i: int) -> None:
        body = {"model": "beta", "prompt": f"stream {i}", "max_tokens": 400, "stream": True}
        reason = None
        with httpx.Client(base_url=models.base, headers=AUTH, timeout=120) as client:
            with client.stream("POST", "/v1/completions", json=body) as response:
                assert response.status_code == 200
                first = True
                for line in response.iter_lines():
                    if line.startswith("data: {") and first:
                        first = False
                        started.wait()
                    if '"finish_reason":"' in line.replace(" ", ""):
                        reason = line.split('"finish_reason":')[1].split('"')[1]
        with lock:
            results.append((reason, time.time()))

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    started.wait()
    response = http.post("/unload_model", json={"model": "beta"})
    assert response.status_code == 202, response.text
    op = response.json()["data"][0]
    wait_for(lambda: _op(http, op["id"])["state"] in ("unloading", "unloaded"), 30, "unloading")
    for t in threads:
        t.join(120)
    assert len(results) == 8
    assert all(reason in ("stop", "length") for reason, _ in results), results
    wait_for(lambda: _op(http, op["id"])["state"] == "unloaded", 60, "beta unloaded")
    final = _op(http, op["id"])
    assert final["updated_at"] >= max(at for _, at in results) - 1.0
    assert _model(http, "beta")["workers"] == []
    assert "beta" not in {m["id"] for m in http.get("/v1/models").json()["data"]}


def test_a_request_loads_a_registered_model_on_demand(
    http: httpx.Client, models: Models, expected: dict[str, str]
) -> None:
    if _model(http, "beta")["workers"]:
        http.post("/unload_model", params={"wait": "true"}, json={"model": "beta"})
    assert _model(http, "beta")["workers"] == []
    assert _complete(http, "beta") == expected["beta"]
    placed = _model(http, "beta")["workers"]
    assert len(placed) == 1 and placed[0]["state"] == "ready"


def test_an_unregistered_model_is_404(http: httpx.Client) -> None:
    response = http.post("/v1/completions", json={"model": "nowhere", "prompt": "x"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    response = http.post("/load_model", json={"model": "nowhere"})
    assert response.status_code == 404
    assert response.json()["error"]["param"] == "model"


def test_a_killed_worker_leaves_models_within_its_ttl(http: httpx.Client, models: Models) -> None:
    proc = models.stack.start_idle_worker(slots=4)
    worker_id = models.stack.worker_id(proc)
    assert worker_id in {w["id"] for w in _overview(http)["workers"]}
    killed_at = time.monotonic()
    proc.stop(signal.SIGKILL)
    wait_for(
        lambda: worker_id not in {w["id"] for w in _overview(http)["workers"]},
        TTL_S + 3,
        "the killed worker to leave /models",
    )
    assert time.monotonic() - killed_at <= TTL_S + 3


def _placements(http: httpx.Client, name: str) -> list[str]:
    return [p["worker"] for p in _model(http, name)["workers"]]


def _unload_everywhere(http: httpx.Client, name: str) -> None:
    if _placements(http, name):
        response = http.post("/unload_model", params={"wait": "true"}, json={"model": name})
        assert response.status_code == 200, response.text
    assert _placements(http, name) == []


def _parallel(models: Models, name: str, count: int) -> list[str]:
    """``count`` greedy completions of ``name`` at once, spread over both replicas."""
    texts: list[str] = []
    lock = threading.Lock()

    def one(base: str) -> None:
        with httpx.Client(base_url=base, headers=AUTH, timeout=120) as client:
            text = _complete(client, name)
        with lock:
            texts.append(text)

    bases = models.bases
    threads = [threading.Thread(target=one, args=(bases[i % 2],)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    return texts


def test_concurrent_requests_on_two_replicas_load_a_model_once(
    http: httpx.Client, models: Models, expected: dict[str, str]
) -> None:
    _unload_everywhere(http, "beta")
    texts = _parallel(models, "beta", 6)
    assert texts == [expected["beta"]] * 6
    assert len(_placements(http, "beta")) == 1


def test_unloading_one_of_two_holders_loses_no_job(
    http: httpx.Client, models: Models, expected: dict[str, str]
) -> None:
    holders = set(_placements(http, "alpha"))
    for worker_id in models.ids.values():
        if worker_id not in holders:
            _load(http, {"model": "alpha", "worker": worker_id})
    assert set(_placements(http, "alpha")) == set(models.ids.values())
    results: list[list[str]] = []
    runner = threading.Thread(target=lambda: results.append(_parallel(models, "alpha", 16)))
    runner.start()
    response = http.post(
        "/unload_model",
        params={"wait": "true"},
        json={"model": "alpha", "worker": models.ids["first"]},
    )
    assert response.status_code == 200, response.text
    assert response.json()["data"][0]["state"] == "unloaded"
    runner.join(150)
    assert results == [[expected["alpha"]] * 16]
    assert _placements(http, "alpha") == [models.ids["second"]]


def test_a_failed_load_is_reported_and_the_worker_keeps_serving(
    http: httpx.Client, models: Models, expected: dict[str, str]
) -> None:
    body = {"model": "broken", "path": "/nonexistent/model", "worker": models.ids["second"]}
    response = http.post("/load_model", params={"wait": "true"}, json=body)
    assert response.status_code == 200, response.text
    op = response.json()["data"][0]
    assert op["state"] == "failed" and op["error"], op
    assert _op(http, op["id"])["state"] == "failed"
    broken = [m for m in _overview(http)["models"] if m["name"] == "broken"]
    assert not broken or broken[0]["workers"] == []
    assert _complete(http, "alpha") == expected["alpha"]
