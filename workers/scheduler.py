"""The scheduler thread: the only caller of the engine.

Task threads hand jobs over through a queue. Each iteration admits new jobs, runs one
engine step for every active job together, turns token ids into events, and writes all
of them with one Redis pipeline (which also returns the cancel flags).
"""

from __future__ import annotations

import logging
import queue
import threading

from protocol.states import JobStatus
from workers.engines.base import Engine, EngineJob, StepOutput
from workers.jobstate import ActiveJob
from workers.sink import JobWrite, RedisSink

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(self, engine: Engine, sink: RedisSink, idle_wait_s: float = 0.1) -> None:
        self._engine = engine
        self._sink = sink
        self._idle_wait_s = idle_wait_s
        self._inbox: queue.SimpleQueue[ActiveJob | None] = queue.SimpleQueue()
        self._jobs: dict[str, ActiveJob] = {}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="uml-scheduler", daemon=True)

    @property
    def active(self) -> int:
        return len(self._jobs)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._inbox.put(None)
        self._thread.join(timeout)

    def submit(self, job: ActiveJob) -> None:
        """Hand ``job`` to the scheduler (any thread); ``job.done`` is set when it ends."""
        self._inbox.put(job)

    # ---- the loop (scheduler thread only) --------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.iterate()
            except Exception:  # never let the loop die with jobs waiting on it
                log.exception("scheduler iteration failed; failing its active jobs")
                self._fail_all("internal error in the generation loop")

    def iterate(self) -> None:
        self._admit(block=not self._jobs)
        if not self._jobs:
            return
        running = [job for job in self._jobs.values() if not job.finished]
        if running:
            for output in self._engine.step():
                self._apply(output)
        self._flush()

    def _admit(self, block: bool) -> None:
        try:
            item = self._inbox.get(timeout=self._idle_wait_s) if block else self._inbox.get_nowait()
        except queue.Empty:
            return
        while item is not None:
            self._start(item)
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return

    def _start(self, job: ActiveJob) -> None:
        self._jobs[job.job_id] = job
        job.start()
        self._engine.enqueue(
            EngineJob(job_id=job.job_id, prompt_ids=job.prompt_ids, sampling=job.spec.sampling)
        )

    def _apply(self, output: StepOutput) -> None:
        job = self._jobs.get(output.job_id)
        if job is None or job.finished:
            return
        stopped = job.add_tokens(output.token_ids)
        if stopped:
            self._engine.cancel(job.job_id)
            job.finish("stop")
        elif output.finished:
            job.finish(output.finish_reason or "stop")

    def _flush(self) -> None:
        writes = []
        for job in self._jobs.values():
            events, fields = job.take_writes()
            if events or fields:
                writes.append(JobWrite(job.job_id, events, fields, final=job.finished))
        watch = [job.job_id for job in self._jobs.values() if not job.finished]
        cancelled = self._sink.flush(writes, watch)
        for job_id in [j for j, job in self._jobs.items() if job.finished]:
            self._jobs.pop(job_id).done.set()
        for job_id in cancelled:
            self._engine.cancel(job_id)
            self._jobs[job_id].finish("cancelled", JobStatus.CANCELLED)

    def _fail_all(self, message: str) -> None:
        for job in list(self._jobs.values()):
            self._engine.cancel(job.job_id)
            job.fail(message)
        try:
            self._flush()
        except Exception:
            log.exception("could not record the failure of %d jobs", len(self._jobs))
            for job in self._jobs.values():
                job.done.set()
            self._jobs.clear()
