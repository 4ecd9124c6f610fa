"""The worker process's runtime: the models it holds, its lifecycle, and each task's job.

``uml worker`` builds a :class:`Runtime`, loads the model it was started with (if any),
installs it, then starts the Celery consumer; each ``uml.generate`` task thread calls
:meth:`Runtime.run_job` with the model its queue names. Loads and unloads on command run
in :mod:`workers.control`'s loader thread, never in the consumer loop. A job's way through
:meth:`Runtime.run_job` crosses the other modules of a task's path:

    slot (workers.lane) ─► claim (workers.claim) ─► prepare (workers.prepare)
        ─► the model's scheduler thread (workers.resident) ─► final status

while :mod:`workers.heartbeat` announces the worker and renews the leases of its jobs.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import sys
import threading
import time
import uuid
from typing import Any

import msgspec
import redis

from protocol.jobs import JobSpec
from protocol.models import ModelEntry
from protocol.settings import Settings
from protocol.states import JobStatus
from protocol.workers import WorkerInfo
from workers.claim import Claim, Claimer, retrying
from workers.fairness import Finder
from workers.heartbeat import Heartbeat
from workers.jobstate import ActiveJob
from workers.lane import FindJob, Lane, LanePolicy
from workers.prepare import ContextTooLong, prepare_job, resume_job, resume_state, unstarted_job
from workers.reaper import Reaper
from workers.requeue import LANE_FULL, Requeuer
from workers.resident import ModelSpec, Resident, device_memory
from workers.sink import JobWrite, RedisSink

log = logging.getLogger(__name__)


class ModelBusy(RuntimeError):
    """A load or unload that cannot start because the model is in the middle of another."""


class Runtime:
    _current: Runtime | None = None

    def __init__(
        self,
        settings: Settings,
        slots: int,
        registry: dict[str, ModelEntry] | None = None,
        device: str | None = None,
        engine: str | None = None,
    ) -> None:
        self.settings = settings
        self.slots = slots
        self.registry = dict(registry or {})
        self.device = device or settings.worker.device
        """The default device: reported in heartbeats, used for a model whose entry names none."""
        self._forced_device = device
        """``--device``: wins over a registry entry's device (one worker process per GPU)."""
        self.engine_name = engine
        self.worker_id = f"w-{uuid.uuid4().hex[:8]}"
        self.host = socket.gethostname()
        self.node = f"{self.worker_id}@{self.host}"
        self.started_at = time.time()
        self.redis = redis.Redis.from_url(
            settings.redis.url,
            socket_timeout=settings.redis.socket_timeout_s,
            socket_connect_timeout=settings.redis.socket_timeout_s,
            socket_keepalive=True,
            health_check_interval=30,
            retry_on_timeout=True,
            max_connections=slots + 8,
        )
        self.sink = RedisSink(self.redis, settings.redis.retention_s)
        self._models: dict[str, Resident] = {}
        self._lock = threading.Lock()
        self._requeuer = Requeuer(self.redis)
        worker, retention_s = settings.worker, settings.redis.retention_s
        self.claimer = Claimer(self.redis, self.worker_id, worker.lease_s, retention_s)
        self.reaper = Reaper(self.redis, worker.lease_s, worker.max_attempts, retention_s)
        policy = LanePolicy.of(slots, worker)
        self.lane: Lane[Resident] = Lane(policy, self._lock, self._models)
        self._finder = Finder(self.redis)
        self.heartbeat = Heartbeat(self.redis, self.worker_id, worker, self.reaper, self.info)
        self._cpu_ready = False
        self._stop = threading.Event()
        self._shutdown = threading.Event()

    # ---- lifecycle -----------------------------------------------------------------

    @classmethod
    def install(cls, runtime: Runtime) -> None:
        cls._current = runtime

    @classmethod
    def current(cls) -> Runtime:
        if cls._current is None:
            raise RuntimeError("no model runtime in this process: start workers with `uml worker`")
        return cls._current

    def spec(
        self, name: str, entry: ModelEntry | None = None, device: str | None = None
    ) -> ModelSpec:
        """How this worker would load ``name``: ``entry``, else its registry's; KeyError if
        neither names it."""
        found = entry or self.registry.get(name)
        if found is None:
            raise KeyError(name)
        return ModelSpec.resolve(
            name,
            found,
            self.settings,
            self.slots,
            device=device or self._forced_device,
            engine=self.engine_name,
        )

    def load(self, spec: ModelSpec) -> Resident:
        """Load ``spec`` (blocking: the loader thread or startup); its queue is not consumed
        yet. A model already held is answered if ready, else :class:`ModelBusy`."""
        with self._lock:
            held = self._models.get(spec.name)
        if held is None:
            self._prepare_device(spec.device)
            built = Resident.build(spec, self.sink)  # may import an engine: not locked
            with self._lock:
                held = self._models.setdefault(spec.name, built)
            if held is built:
                return self._load_new(built)
            built.free()
        if held.state == "ready":
            return held
        raise ModelBusy(f"model {spec.name} is {held.state} on this worker")

    def _load_new(self, resident: Resident) -> Resident:
        spec = resident.spec
        self.heartbeat.beat()  # shows it loading
        started = time.monotonic()
        try:
            resident.load()
        except BaseException:
            with self._lock:
                self._models.pop(spec.name, None)
            resident.free()
            gc.collect()
            self.heartbeat.beat()
            raise
        log.info(
            "loaded %s from %s on %s with %s (%s) in %.1fs",
            spec.name,
            spec.path,
            spec.device,
            spec.engine,
            resident.engine.batching,
            time.monotonic() - started,
        )
        self.heartbeat.beat()
        return resident

    def begin_unload(self, name: str) -> Resident:
        """Mark ``name`` unloading (KeyError if not held; ModelBusy if not ready)."""
        with self._lock:
            resident = self._models[name]
            if resident.state != "ready":
                raise ModelBusy(f"model {name} is {resident.state} on this worker")
            resident.state = "unloading"
        self.heartbeat.beat()
        return resident

    def drained(self, resident: Resident) -> bool:
        with self._lock:
            return resident.inflight == 0

    def finish_unload(self, resident: Resident) -> None:
        """Forget ``resident`` (later jobs for it are requeued), then free its memory."""
        with self._lock:
            if self._models.get(resident.spec.name) is resident:
                del self._models[resident.spec.name]
        resident.free()
        gc.collect()
        self.heartbeat.beat()
        log.info("unloaded %s", resident.spec.name)

    def _prepare_device(self, device: str) -> None:
        if not device.startswith("cuda") and not self._cpu_ready:
            limit_cpu_threads(self.settings.worker.cpu_threads)
            self._cpu_ready = True

    def held(self) -> list[str]:
        with self._lock:
            return list(self._models)

    def start(self) -> None:
        # The engine thread holds the GIL between short torch ops; a thread that wants it
        # back (Celery's consumer, task threads) waits up to the switch interval each time.
        sys.setswitchinterval(self.settings.worker.switch_interval_ms / 1000)
        self._prepare_device(self.device)  # imports torch now, not in the first load
        self.heartbeat.announce()
        self.heartbeat.start()
        from celery.signals import worker_shutting_down

        worker_shutting_down.connect(self.begin_shutdown, weak=False)
        quiet_task_lines()

    def begin_shutdown(self, **_: Any) -> None:
        """SIGTERM (Celery's warm shutdown takes no new task and waits for running ones):
        after ``shutdown_grace_s`` hand every job still running back to its queue."""
        if self._shutdown.is_set():
            return
        self._shutdown.set()
        grace = self.settings.worker.shutdown_grace_s
        log.info("shutting down: running jobs get %.0f s before they are handed back", grace)
        threading.Thread(target=self._hand_back_after, args=(grace,), daemon=True).start()

    def _hand_back_after(self, grace: float) -> None:
        if self._stop.wait(grace):
            return
        with self._lock:
            residents = list(self._models.values())
        running = self.heartbeat.running()
        if running:
            log.warning("grace period over: handing %d running job(s) back", running)
        for resident in residents:
            resident.scheduler.hand_back()

    def stop(self) -> None:
        self._stop.set()
        self.heartbeat.stop()
        with self._lock:
            residents = list(self._models.values())
        for resident in residents:
            resident.scheduler.stop()
        self.heartbeat.withdraw()
        self.redis.close()

    # ---- what the heartbeat announces -------------------------------------------

    def info(self) -> WorkerInfo:
        with self._lock:
            models = [r.view() for r in self._models.values()]
        active = sum(m.active for m in models)
        free, total = device_memory(self.device)
        return WorkerInfo(
            id=self.worker_id,
            host=self.host,
            pid=os.getpid(),
            slots=self.slots,
            active=active,
            models=models,
            started_at=self.started_at,
            seen_at=time.time(),
            device=self.device,
            memory_free=free,
            memory_total=total,
            free_slots=max(0, self.slots - active),
            node=self.node,
            registered=sorted(self.registry),
        )

    # ---- jobs ----------------------------------------------------------------------

    def run_job(self, job_id: str, model: str | None = None, interactive: bool = True) -> str:
        """Claim ``job_id`` of ``model``, run it to its end, return its final status.

        A job whose model this worker does not hold (it was unloaded after the message was
        fetched) goes back to the head of its queue, unclaimed: ``requeued``. So does a job
        that finds no slot it may take for :data:`~workers.lane.LANE_WAIT_S` (the interactive
        lane and the key reserve, :mod:`workers.lane`), and one whose key holds its share
        of the slots while another key waits: the task runs that key's job instead.
        """
        name, owner, waiting = retrying(lambda: self._finder.meta(job_id, model, interactive))
        find = self._find_for(name, interactive)
        stolen = self.lane.take_for_another(name, interactive, owner, waiting, find)
        if stolen is not None:
            held, other, other_owner = stolen
            retrying(lambda: self._requeuer.give_back(job_id, name, LANE_FULL))
            return self._run_held(name, held, other, other_owner, interactive)
        resident = self.lane.take(name, interactive, owner, waiting)
        if resident is None:
            why = LANE_FULL if name in self._models else "model not held here"
            return retrying(lambda: self._requeuer.give_back(job_id, name, why))
        return self._run_held(name, resident, job_id, owner, interactive)

    def _run_held(
        self, name: str, resident: Resident, job_id: str, owner: str, interactive: bool
    ) -> str:
        try:
            return self._run_on(resident, job_id, interactive)
        finally:
            self.lane.release(name, resident, interactive, owner)

    def _find_for(self, name: str, interactive: bool) -> FindJob:
        """How the lane looks for a waiting key's job of ``name`` (through an outage)."""

        def find(held: dict[str, int], below: int) -> tuple[str, str] | None:
            return retrying(lambda: self._finder.find(name, interactive, held, below))

        return find

    def _run_on(self, resident: Resident, job_id: str, interactive: bool = True) -> str:
        claim = retrying(lambda: self.claimer.claim(job_id))
        if claim.outcome != "claimed":
            log.info("job %s not run: %s", job_id, claim.outcome, extra={"job_id": job_id})
            if claim.outcome == "cancelled":
                self._record_unstarted_cancel(job_id, claim.last_seq)
            return claim.outcome
        with self.heartbeat.leased(job_id):
            return self._run_claimed(resident, job_id, claim, interactive)

    def _run_claimed(self, resident: Resident, job_id: str, claim: Claim, interactive: bool) -> str:
        attempt, last_seq = claim.attempt, claim.last_seq
        try:
            job = self._prepare(resident, job_id, claim, interactive)
        except ContextTooLong as exc:
            self._fail_unstarted(job_id, attempt, last_seq, str(exc), exc.param, exc.code)
            return JobStatus.FAILED.value
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            self._fail_unstarted(job_id, attempt, last_seq, f"job could not be prepared: {exc}")
            return JobStatus.FAILED.value
        job.seq = last_seq
        resident.scheduler.submit(job)
        job.done.wait()
        if job.handed_back:
            return self.reaper.hand_back(job_id, attempt)
        return (job.final_status or JobStatus.FAILED).value

    def _prepare(
        self, resident: Resident, job_id: str, claim: Claim, interactive: bool
    ) -> ActiveJob:
        """The claimed job, tokenized (:mod:`workers.prepare`); a later attempt resumes."""
        spec = msgspec.json.decode(claim.spec or b"null", type=JobSpec)
        engine, limit = resident.engine, resident.spec.max_seq_len
        job = prepare_job(engine, limit, job_id, spec, claim.attempt, self.worker_id)
        job.interactive, job.meter = interactive, claim.meter
        if claim.attempt > 1 and claim.last_seq:
            resume_job(engine, job, resume_state(self.redis, job_id, claim.last_seq))
        return job

    def _record_unstarted_cancel(self, job_id: str, last_seq: int) -> None:
        job = unstarted_job(job_id, self.worker_id, 0, last_seq)
        job.finish("cancelled", JobStatus.CANCELLED)
        self._write_final(job)

    def _fail_unstarted(
        self,
        job_id: str,
        attempt: int,
        last_seq: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        job = unstarted_job(job_id, self.worker_id, attempt, last_seq)
        job.fail(message, error_type="invalid_request_error", param=param, code=code)
        self._write_final(job)

    def _write_final(self, job: ActiveJob) -> None:
        events, fields, ids = job.take_writes()
        self.sink.flush([JobWrite(job.job_id, events, fields, True, job.attempt, ids)], [])


def limit_cpu_threads(wanted: int) -> None:
    """Cap torch's intra-op threads. Oversubscribed OpenMP threads spin at every barrier, so
    a worker that shares its cores with the API and Redis runs many times slower (measured:
    8 streams on 2 cores took 68 s with 2 threads, 3.9 s with 1)."""
    import torch

    usable = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )
    torch.set_num_threads(wanted or max(1, usable - 1))


def quiet_task_lines() -> None:
    """Celery logs two INFO lines per task (received, succeeded); the interactive lane
    cycles batch messages up to 50 times a second per spare thread under a backlog, so those
    lines would flood the log. They stay visible at DEBUG; failures are logged as errors."""
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        for name in ("celery.worker.strategy", "celery.app.trace"):
            logging.getLogger(name).setLevel(logging.WARNING)
