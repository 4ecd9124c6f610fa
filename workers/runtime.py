"""The worker process's resident state: one engine, its scheduler, heartbeats.

``uml worker`` builds a :class:`Runtime` (loading the model once), installs it, then
starts the Celery consumer; each ``uml.generate`` task thread calls :meth:`Runtime.run_job`.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import redis

from protocol.events import FINALIZE_LUA, expired_unstarted, template
from protocol.jobs import JobSpec, SamplingParams
from protocol.keys import WORKERS_SET, events_key, job_key, worker_key
from protocol.settings import Settings
from protocol.states import JobStatus
from protocol.workers import ModelState, WorkerInfo
from workers.detok import IncrementalDetokenizer
from workers.engines import Engine, create_engine
from workers.jobstate import ActiveJob
from workers.scheduler import Scheduler
from workers.sink import JobWrite, RedisSink
from workers.stops import StopMatcher

log = logging.getLogger(__name__)

# Claim a job atomically: only a queued job (not cancelled, deadline not passed) becomes
# running, once. A job past its deadline is expired here, with its final event.
# KEYS: job, events. ARGV: worker id, now, expired event template, retention.
# Returns {outcome, attempt, last_seq, spec}.
_CLAIM = (
    FINALIZE_LUA
    + """
local job = KEYS[1]
local status = redis.call('HGET', job, 'status')
if not status then return {'missing', 0, 0, false} end
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local seq = 0
if last[1] then seq = tonumber(string.match(last[1][1], '^(%d+)')) end
if status ~= 'queued' then return {'skip:' .. status, 0, seq, false} end
if redis.call('HGET', job, 'cancel') == '1' then
  redis.call('HSET', job, 'status', 'cancelled', 'finished_at', ARGV[2])
  redis.call('HDEL', job, 'msg')
  return {'cancelled', 0, seq, false}
end
local deadline = redis.call('HGET', job, 'deadline')
if deadline and tonumber(deadline) <= tonumber(ARGV[2]) then
  seq = finalize(job, KEYS[2], 'expired', ARGV[2], ARGV[3], tonumber(ARGV[4]))
  return {'expired', 0, seq, false}
end
local attempt = redis.call('HINCRBY', job, 'attempt', 1)
redis.call('HSET', job, 'status', 'running', 'worker', ARGV[1], 'started_at', ARGV[2])
redis.call('HDEL', job, 'msg')
return {'claimed', attempt, seq, redis.call('HGET', job, 'spec')}
"""
)


_NO_SAMPLING = SamplingParams(max_tokens=1)


class ContextTooLong(ValueError):
    """The prompt plus max_tokens does not fit the model's context (OpenAI's error code)."""

    code = "context_length_exceeded"

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class ModelSpec:
    name: str
    path: Path
    engine: str
    device: str


class Runtime:
    _current: Runtime | None = None

    def __init__(self, settings: Settings, model: ModelSpec, slots: int) -> None:
        self.settings = settings
        self.model = model
        self.slots = slots
        self.worker_id = f"w-{uuid.uuid4().hex[:8]}"
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
        self.engine: Engine = create_engine(
            model.engine, model.device, max_batch=slots, max_seq_len=settings.worker.max_seq_len
        )
        self.sink = RedisSink(self.redis, settings.redis.retention_s)
        self.scheduler = Scheduler(self.engine, self.sink)
        self._claim = self.redis.register_script(_CLAIM)
        self._expired = template(expired_unstarted())
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(
            target=self._beat_loop, name="uml-heartbeat", daemon=True
        )

    # ---- lifecycle -----------------------------------------------------------------

    @classmethod
    def install(cls, runtime: Runtime) -> None:
        cls._current = runtime

    @classmethod
    def current(cls) -> Runtime:
        if cls._current is None:
            raise RuntimeError("no model runtime in this process: start workers with `uml worker`")
        return cls._current

    def load(self) -> None:
        if not self.model.device.startswith("cuda"):
            limit_cpu_threads(self.settings.worker.cpu_threads)
        started = time.monotonic()
        self.engine.load(self.model.path)
        log.info(
            "loaded %s from %s on %s with %s (%s) in %.1fs",
            self.model.name,
            self.model.path,
            self.model.device,
            self.model.engine,
            self.engine.batching,
            time.monotonic() - started,
        )

    def start(self) -> None:
        # The engine thread holds the GIL between short torch ops; a thread that wants it
        # back (Celery's consumer, task threads) waits up to the switch interval each time.
        sys.setswitchinterval(self.settings.worker.switch_interval_ms / 1000)
        self.scheduler.start()
        self.beat()
        self._heartbeat.start()

    def stop(self) -> None:
        self._stop.set()
        self.scheduler.stop()
        try:
            self.redis.delete(worker_key(self.worker_id))
            self.redis.srem(WORKERS_SET, self.worker_id)
        except redis.RedisError:
            log.warning("could not remove this worker's heartbeat; it expires by itself")

    # ---- heartbeats ----------------------------------------------------------------

    def info(self) -> WorkerInfo:
        model = ModelState(
            name=self.model.name,
            engine=self.model.engine,
            device=self.model.device,
            state="ready",
            batching=self.engine.batching,
            max_batch=self.engine.max_batch,
        )
        return WorkerInfo(
            id=self.worker_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            slots=self.slots,
            active=self.scheduler.active,
            models=[model],
            started_at=self.started_at,
            seen_at=time.time(),
        )

    def beat(self) -> None:
        ttl_ms = int(self.settings.worker.heartbeat_ttl_s * 1000)
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(worker_key(self.worker_id), msgspec.json.encode(self.info()), px=ttl_ms)
        pipe.sadd(WORKERS_SET, self.worker_id)
        pipe.execute()

    def _beat_loop(self) -> None:
        while not self._stop.wait(self.settings.worker.heartbeat_s):
            try:
                self.beat()
            except redis.RedisError as exc:
                log.warning("heartbeat failed: %s", exc)

    # ---- jobs ----------------------------------------------------------------------

    def run_job(self, job_id: str) -> str:
        """Claim ``job_id``, run it to its end, return its final status."""
        outcome, attempt, last_seq, raw_spec = self._claim_job(job_id)
        if outcome != "claimed":
            log.info("job %s not run: %s", job_id, outcome)
            if outcome == "cancelled":
                self._record_unstarted_cancel(job_id, last_seq)
            return outcome
        try:
            spec = msgspec.json.decode(raw_spec or b"null", type=JobSpec)
            job = self._prepare(job_id, spec, attempt)
        except ContextTooLong as exc:
            self._fail_unstarted(job_id, attempt, last_seq, str(exc), exc.param, exc.code)
            return JobStatus.FAILED.value
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            self._fail_unstarted(job_id, attempt, last_seq, f"job could not be prepared: {exc}")
            return JobStatus.FAILED.value
        job.seq = last_seq
        self.scheduler.submit(job)
        job.done.wait()
        return (job.final_status or JobStatus.FAILED).value

    def _claim_job(self, job_id: str) -> tuple[str, int, int, bytes | None]:
        args = [self.worker_id, time.time(), self._expired, self.settings.redis.retention_s]
        result: list[Any] = self._claim(keys=[job_key(job_id), events_key(job_id)], args=args)
        outcome = result[0].decode() if isinstance(result[0], bytes) else str(result[0])
        return outcome, int(result[1]), int(result[2]), result[3] or None

    def _prepare(self, job_id: str, spec: JobSpec, attempt: int) -> ActiveJob:
        """Render and tokenize the prompt (in the task thread, off the scheduler's path)."""
        if spec.kind == "chat":
            messages = [
                {"role": m.role, "content": m.content if isinstance(m.content, str) else ""}
                for m in spec.messages or []
            ]
            prompt = self.engine.render_chat(messages)
        else:
            prompt = spec.prompt or ""
        prompt_ids = self.engine.encode(prompt)
        limit = self.settings.worker.max_seq_len
        if len(prompt_ids) + spec.sampling.max_tokens > limit:
            raise ContextTooLong(
                f"The prompt ({len(prompt_ids)} tokens) plus max_tokens "
                f"({spec.sampling.max_tokens}) exceeds the model's context of {limit} tokens",
                param="messages" if spec.kind == "chat" else "prompt",
            )
        job = ActiveJob(
            job_id=job_id,
            spec=spec,
            prompt_ids=prompt_ids,
            attempt=attempt,
            worker_id=self.worker_id,
            detok=IncrementalDetokenizer(self.engine.decode),
            stops=StopMatcher(spec.sampling.stop),
        )
        job.fields["prompt_tokens"] = len(prompt_ids)  # written with the first events
        return job

    def _record_unstarted_cancel(self, job_id: str, last_seq: int) -> None:
        job = self._bare_job(job_id, 0, last_seq)
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
        job = self._bare_job(job_id, attempt, last_seq)
        job.fail(message, error_type="invalid_request_error", param=param, code=code)
        self._write_final(job)

    def _bare_job(self, job_id: str, attempt: int, last_seq: int) -> ActiveJob:
        spec = JobSpec(kind="completion", model=self.model.name, sampling=_NO_SAMPLING)
        job = ActiveJob(
            job_id=job_id,
            spec=spec,
            prompt_ids=[],
            attempt=attempt,
            worker_id=self.worker_id,
            detok=IncrementalDetokenizer(self.engine.decode),
            stops=StopMatcher(()),
        )
        job.seq = last_seq
        return job

    def _write_final(self, job: ActiveJob) -> None:
        events, fields = job.take_writes()
        self.sink.flush([JobWrite(job.job_id, events, fields, final=True)], [])


def limit_cpu_threads(wanted: int) -> None:
    """Cap torch's intra-op threads. Oversubscribed OpenMP threads spin at every barrier, so
    a worker that shares its cores with the API and Redis runs many times slower (measured:
    8 streams on 2 cores took 68 s with 2 threads, 3.9 s with 1)."""
    import torch

    usable = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )
    torch.set_num_threads(wanted or max(1, usable - 1))
