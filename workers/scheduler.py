"""The scheduler thread: the only caller of the engine.

Task threads hand jobs over through a queue. Each iteration admits new jobs, runs one
engine step for every active job together, turns token ids into events, and hands them to
the model's writer thread (:class:`workers.sink.BackgroundWriter`), which flushes them with
one Redis script while the next step runs; its answer carries the cancel flags back.
"""

from __future__ import annotations

import logging
import queue
import threading

from protocol.states import JobStatus
from workers.engines.base import Engine, EngineJob, StepOutput
from workers.jobstate import ActiveJob
from workers.sink import BackgroundWriter, JobWrite, RedisSink

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(self, engine: Engine, sink: RedisSink, idle_wait_s: float = 0.1) -> None:
        self._engine = engine
        self._writer = BackgroundWriter(sink)
        self._idle_wait_s = idle_wait_s
        self._inbox: queue.SimpleQueue[ActiveJob | None] = queue.SimpleQueue()
        self._jobs: dict[str, ActiveJob] = {}
        self._stopping = threading.Event()
        self._handing_back = threading.Event()
        self.tokens_total = 0
        """Tokens the engine produced (heartbeats report it; the API exports it)."""
        self.steps_total = 0
        self.batch_size = 0
        """Jobs in the last engine step."""
        self._thread = threading.Thread(target=self._run, name="uml-scheduler", daemon=True)

    @property
    def active(self) -> int:
        return len(self._jobs)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._inbox.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._writer.close(timeout)

    def hand_back(self) -> None:
        """Stop every running job at the next iteration and hand it back (any thread)."""
        self._handing_back.set()

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
        if self._handing_back.is_set():
            for job in self._jobs.values():
                if not job.finished:
                    self._engine.cancel(job.job_id)
                    job.hand_back()
        if not self._jobs:
            return
        if any(not job.finished for job in self._jobs.values()):
            self.batch_size = len(self._jobs)
            outputs = self._engine.step()
            self.steps_total += 1
            for output in outputs:
                self.tokens_total += len(output.token_ids)
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
            EngineJob(
                job_id=job.job_id,
                prompt_ids=job.prompt_ids,
                sampling=job.spec.sampling,
                forced_ids=job.forced_ids,
                sampled=job.tokens,
                urgent=job.interactive,
            )
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
        """Hand this iteration's writes to the writer; apply cancels it has seen so far."""
        writes, done = [], []
        for job in list(self._jobs.values()):
            events, fields, ids = job.take_writes()
            if events or fields:
                final = job.finished and not job.handed_back
                writes.append(
                    JobWrite(job.job_id, events, fields, final, job.attempt, ids, job.meter)
                )
            if job.finished:
                done.append(self._jobs.pop(job.job_id).done)
        watch = list(self._jobs)
        self._writer.submit(writes, watch, done)
        for job_id in self._writer.take_cancelled():
            flagged = self._jobs.get(job_id)
            if flagged is not None and not flagged.finished:
                self._engine.cancel(job_id)
                flagged.finish("cancelled", JobStatus.CANCELLED)

    def _fail_all(self, message: str) -> None:
        for job in list(self._jobs.values()):
            self._engine.cancel(job.job_id)
            job.fail(message)
        self._flush()
