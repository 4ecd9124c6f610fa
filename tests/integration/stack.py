"""Real processes for integration tests: ``uml worker`` and ``uml serve`` on a real Redis."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import msgspec
import redis

from protocol.keys import WORKERS_SET, worker_key
from protocol.workers import ModelState, WorkerInfo
from tests.auth import ADMIN_KEY
from uml.redis_server import free_port

STREAM_CAP = 4
"""Open streams per user key in test stacks (``UML_LIMIT_MAX_STREAMS``); admin: unlimited."""
KEY_SHAPED = re.compile(r"uml_(?:[0-9a-f]{16}|admin)_[A-Za-z0-9_-]{32,}")
"""Any stored key or generated bootstrap key, whatever key a test made."""


def keys_in_logs(log_dir: Path) -> list[str]:
    """Every key-shaped string in any process log under ``log_dir`` (``file: match``)."""
    found = []
    for path in sorted(log_dir.rglob("*.log")):
        text = path.read_text(errors="replace")
        found += [f"{path.name}: {m[:24]}…" for m in KEY_SHAPED.findall(text)]
    return found


def wait_for(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.02
) -> None:
    """Poll ``condition`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Proc:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        if self.alive():
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@dataclass
class Stack:
    """Starts and stops the service's processes against one Redis.

    API processes accept :data:`tests.auth.ADMIN_KEY` as their bootstrap admin key.
    """

    redis_url: str
    log_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)

    def _env(self) -> dict[str, str]:
        env = dict(os.environ, REDIS_URL=self.redis_url, PYTHONUNBUFFERED="1")
        env.pop("UML_ADMIN_KEY_FILE", None)
        limits = {"UML_LIMIT_MAX_STREAMS": str(STREAM_CAP)}
        return {**env, "UML_ADMIN_KEY": ADMIN_KEY, **limits, **self.extra_env}

    def _spawn(self, name: str, args: list[str]) -> Proc:
        log_path = self.log_dir / f"{name}-{len(self.procs)}.log"
        with log_path.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "uml.cli", *args],
                env=self._env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = Proc(process, log_path)
        self.procs.append(proc)
        return proc

    def start_worker(
        self, model: str, model_dir: Path, slots: int = 32, extra: tuple[str, ...] = ()
    ) -> Proc:
        before = self._live_workers(model)
        args = ["worker", "--model", f"{model}={model_dir}", "--slots", str(slots), *extra]
        proc = self._spawn("worker", args)

        def ready() -> bool:
            assert proc.alive(), f"worker exited:\n{proc.log()}"
            return len(self._live_workers(model)) > len(before)

        wait_for(ready, 180, f"worker for {model}")
        return proc

    def start_idle_worker(self, slots: int = 16, extra: tuple[str, ...] = ()) -> Proc:
        """A worker started without a model (it loads on command); returns once it beats."""
        proc = self._spawn("worker", ["worker", "--slots", str(slots), *extra])

        def ready() -> bool:
            assert proc.alive(), f"worker exited:\n{proc.log()}"
            return self.worker_id(proc) is not None

        wait_for(ready, 180, "an idle worker")
        return proc

    def worker_id(self, proc: Proc) -> str | None:
        """The id of the live worker that ``proc`` runs (its heartbeat names its pid)."""
        client = redis.Redis.from_url(self.redis_url)
        try:
            for raw_id in client.smembers(WORKERS_SET):
                raw = client.get(worker_key(raw_id.decode()))
                if raw and msgspec.json.decode(raw, type=WorkerInfo).pid == proc.process.pid:
                    return str(raw_id.decode())
            return None
        finally:
            client.close()

    def start_api(self) -> tuple[Proc, str]:
        port = free_port()
        proc = self._spawn("api", ["serve", "--host", "127.0.0.1", "--port", str(port)])
        base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            assert proc.alive(), f"api exited:\n{proc.log()}"
            try:
                return httpx.get(f"{base}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, 60, "the API")
        return proc, base

    def _live_workers(self, model: str) -> set[str]:
        client = redis.Redis.from_url(self.redis_url)
        try:
            live = set()
            for raw_id in client.smembers(WORKERS_SET):
                info = client.get(worker_key(raw_id.decode()))
                if info and f'"name":"{model}"'.encode() in info:
                    live.add(raw_id.decode())
            return live
        finally:
            client.close()

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


def announce_model(client: redis.Redis, worker_id: str, model: str, ttl_s: int = 120) -> None:
    """A heartbeat for ``model`` from a worker that consumes nothing: its jobs stay queued."""
    info = WorkerInfo(
        id=worker_id,
        host="test",
        pid=1,
        slots=1,
        models=[ModelState(name=model, engine="torch", device="cpu")],
    )
    client.sadd(WORKERS_SET, worker_id)
    client.set(worker_key(worker_id), msgspec.json.encode(info), ex=ttl_s)


def withdraw_model(client: redis.Redis, worker_id: str) -> None:
    client.delete(worker_key(worker_id))
    client.srem(WORKERS_SET, worker_id)
