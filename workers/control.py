"""Load and unload on command: Celery remote-control commands and the loader thread.

The API broadcasts ``uml_load_model`` / ``uml_unload_model`` to one worker's node name. The
commands run in the worker's consumer loop, so they only queue the operation for this
module's loader thread and return at once; the loader runs operations one at a time (so a
load and an unload of one worker never interleave) and records each step in the
operation's record ``uml:modelop:{id}``, which the API polls.

Starting and stopping a queue's consumption is the consumer's own business: the loader
asks it through ``consumer.call_soon`` (thread-safe in kombu's hub) and waits for the
callback to have run.

    load:   loading ─ engine.load ─► ready ─ add_task_queue(model.<name>)
    unload: unloading ─ cancel_task_queue ─ wait for the model's jobs ─► unloaded (free)
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, cast

import msgspec
import redis
from celery.worker import state as worker_state
from celery.worker.control import control_command, ok

from protocol.keys import CONTROL_LOAD, CONTROL_UNLOAD, MODEL_OP_TTL_S, model_op_key, queue_name
from protocol.models import LoadCommand, ModelOp, OpState, UnloadCommand
from workers.runtime import ModelBusy, Runtime

log = logging.getLogger(__name__)

_CONSUMER_TIMEOUT_S = 30.0
_DRAIN_POLL_S = 0.05


class Loader:
    """The worker's loader thread: load and unload operations, one at a time."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.consumer: Any = None
        self._inbox: queue.SimpleQueue[LoadCommand | UnloadCommand | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="uml-loader", daemon=True)
        self._ops = msgspec.json.Decoder(ModelOp)

    _current: Loader | None = None

    @classmethod
    def install(cls, loader: Loader) -> None:
        cls._current = loader

    @classmethod
    def current(cls) -> Loader:
        if cls._current is None:
            raise RuntimeError("no loader in this process: start workers with `uml worker`")
        return cls._current

    def attach(self, consumer: Any) -> None:
        """Remember the Celery consumer (from ``worker_ready`` or a control command)."""
        if consumer is not None:
            self.consumer = consumer

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._inbox.put(None)

    def submit(self, command: LoadCommand | UnloadCommand) -> None:
        self._inbox.put(command)

    # ---- the loader thread -----------------------------------------------------------

    def _run(self) -> None:
        while (command := self._inbox.get()) is not None:
            try:
                if isinstance(command, LoadCommand):
                    self._load(command)
                else:
                    self._unload(command)
            except Exception as exc:  # report, never kill the thread
                log.exception("model operation %s failed", command.op_id)
                self._record(command.op_id, "failed", error=f"{type(exc).__name__}: {exc}")

    def _load(self, cmd: LoadCommand) -> None:
        try:
            spec = self.runtime.spec(cmd.model, cmd.entry, cmd.device)
        except KeyError:
            self._record(cmd.op_id, "failed", error=f"model `{cmd.model}` is not registered")
            return
        self._record(cmd.op_id, "loading")
        try:
            resident = self.runtime.load(spec)
        except ModelBusy as exc:
            self._record(cmd.op_id, "failed", error=str(exc))
            return
        try:
            self.consume(queue_name(cmd.model))
        except Exception:  # loaded but not consumed: take it back rather than show it ready
            self.runtime.begin_unload(cmd.model)
            self.runtime.finish_unload(resident)
            raise
        self._record(cmd.op_id, "ready")

    def _unload(self, cmd: UnloadCommand) -> None:
        try:
            resident = self.runtime.begin_unload(cmd.model)
        except KeyError:
            self._record(cmd.op_id, "failed", error=f"model `{cmd.model}` is not loaded here")
            return
        except ModelBusy as exc:
            self._record(cmd.op_id, "failed", error=str(exc))
            return
        self._record(cmd.op_id, "unloading")
        queue_ = queue_name(cmd.model)
        self.stop_consuming(queue_)
        if not self._wait_drained(resident, queue_):
            log.warning("unload of %s: jobs still running after the drain limit", cmd.model)
        self.runtime.finish_unload(resident)
        self._record(cmd.op_id, "unloaded")

    def _wait_drained(self, resident: Any, queue_: str) -> bool:
        """Wait until no task of ``queue_`` is reserved or running here (bounded)."""
        deadline = time.monotonic() + self.runtime.settings.models.unload_drain_s
        while time.monotonic() < deadline:
            if self.runtime.drained(resident) and not _reserved_from(queue_):
                return True
            time.sleep(_DRAIN_POLL_S)
        return False

    # ---- the consumer's queues -------------------------------------------------------

    def consume(self, queue_: str) -> None:
        self._on_consumer(lambda c: c.add_task_queue(queue_), f"consume {queue_}")

    def stop_consuming(self, queue_: str) -> None:
        self._on_consumer(lambda c: c.cancel_task_queue(queue_), f"stop consuming {queue_}")

    def _on_consumer(self, action: Callable[[Any], None], what: str) -> None:
        consumer = self.consumer
        if consumer is None:
            raise RuntimeError(f"cannot {what}: the Celery consumer is not running yet")
        done = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                action(consumer)
            except BaseException as exc:  # reported to the loader thread
                failure.append(exc)
            finally:
                done.set()

        consumer.call_soon(run)
        if not done.wait(_CONSUMER_TIMEOUT_S):
            raise RuntimeError(f"the Celery consumer did not {what} within {_CONSUMER_TIMEOUT_S}s")
        if failure:
            raise failure[0]

    # ---- operation records -----------------------------------------------------------

    def _record(self, op_id: str, state: OpState, error: str | None = None) -> None:
        key = model_op_key(op_id)
        try:
            raw = self.runtime.redis.get(key)
            if raw is None:
                return  # an operation nobody asked through the API (or long expired)
            op = self._ops.decode(raw)
            op.state, op.error, op.updated_at = state, error, time.time()
            self.runtime.redis.set(key, msgspec.json.encode(op), ex=MODEL_OP_TTL_S)
        except redis.RedisError as exc:
            log.warning("could not record operation %s as %s: %s", op_id, state, exc)


def _reserved_from(queue_: str) -> bool:
    """Whether a task fetched from ``queue_`` is still reserved or running in this worker."""
    for _ in range(5):
        try:
            requests = list(worker_state.reserved_requests)
            break
        except RuntimeError:  # the consumer changed the set while we copied it
            continue
    else:
        return True
    return any((r.delivery_info or {}).get("routing_key") == queue_ for r in requests)


# ---- remote-control commands (run in the consumer loop: queue and return) -------------

Command = Callable[..., dict[str, str]]
"""A remote-control command: ``(state, command, **_)`` → Celery's ``ok`` reply."""


def _command(name: str) -> Callable[[Command], Command]:
    """Register a command taking one dict, ``command`` (Celery's decorator is untyped)."""
    register = control_command(name=name, args=[("command", dict)], signature="<command>")
    return cast(Callable[[Command], Command], register)


def _ok(message: str) -> dict[str, str]:
    reply: dict[str, str] = ok(message)  # {"ok": message}
    return reply


@_command(CONTROL_LOAD)
def load_model(state: Any, command: dict[str, Any], **_: Any) -> dict[str, str]:
    """Load a model (handed to the loader thread)."""
    loader = Loader.current()
    loader.attach(getattr(state, "consumer", None))
    loader.submit(msgspec.convert(command, LoadCommand))
    return _ok("load queued")


@_command(CONTROL_UNLOAD)
def unload_model(state: Any, command: dict[str, Any], **_: Any) -> dict[str, str]:
    """Unload a model once its running jobs finish (handed to the loader thread)."""
    loader = Loader.current()
    loader.attach(getattr(state, "consumer", None))
    loader.submit(msgspec.convert(command, UnloadCommand))
    return _ok("unload queued")
