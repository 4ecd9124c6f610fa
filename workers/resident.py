"""One model resident in a worker: its engine, its scheduler thread, its state.

A worker holds any number of residents, each with its own scheduler thread (the only
caller of that engine). A resident is ``loading`` until its weights are in memory,
``ready`` while its queue is consumed, ``unloading`` from the moment its queue is
cancelled until its last job has finished.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from protocol.models import ModelEntry
from protocol.settings import Settings
from protocol.workers import ModelPhase, ModelState
from workers.engines import Engine, create_engine
from workers.scheduler import Scheduler
from workers.sink import RedisSink


@dataclass(frozen=True)
class ModelSpec:
    """A model as a worker loads it: a registry entry with the worker's defaults filled in."""

    name: str
    path: Path
    engine: str
    device: str
    max_seq_len: int = 2048
    max_batch: int = 16
    cache_tokens: int = 0

    @classmethod
    def resolve(
        cls,
        name: str,
        entry: ModelEntry,
        settings: Settings,
        slots: int,
        device: str | None = None,
        engine: str | None = None,
    ) -> ModelSpec:
        """``entry`` with blanks taken from the worker's settings; ``device``/``engine``
        (from the command line or a load request) win over both."""
        return cls(
            name=name,
            path=Path(entry.path),
            engine=engine or entry.engine or settings.worker.engine,
            device=device or entry.device or settings.worker.device,
            max_seq_len=entry.max_seq_len or settings.worker.max_seq_len,
            max_batch=min(entry.max_batch or slots, slots),
            cache_tokens=entry.cache_tokens,
        )


@dataclass(eq=False)
class Resident:
    spec: ModelSpec
    engine: Engine
    scheduler: Scheduler
    state: ModelPhase = "loading"
    inflight: int = 0
    """Task threads that took a job of this model and have not returned yet."""
    batch_inflight: int = 0
    """Of ``inflight``, the batch-priority jobs (capped below the slots: the lane)."""
    loaded_at: float = 0.0
    load_seconds: float = 0.0
    memory_bytes: int = 0

    @classmethod
    def build(cls, spec: ModelSpec, sink: RedisSink) -> Resident:
        engine = create_engine(
            spec.engine,
            spec.device,
            max_batch=spec.max_batch,
            max_seq_len=spec.max_seq_len,
            cache_tokens=spec.cache_tokens,
        )
        return cls(spec=spec, engine=engine, scheduler=Scheduler(engine, sink))

    def load(self) -> None:
        """Load the weights (any thread but the scheduler's, before it starts)."""
        before = device_used(self.spec.device)
        started = time.monotonic()
        self.engine.load(self.spec.path)
        self.load_seconds = time.monotonic() - started
        grown = max(0, device_used(self.spec.device) - before)
        self.memory_bytes = model_bytes(self.engine) or grown
        self.loaded_at = time.time()
        self.scheduler.start()
        self.state = "ready"

    def free(self) -> None:
        """Stop the scheduler and free the weights (every job has finished)."""
        self.scheduler.stop()
        self.engine.unload()

    def view(self) -> ModelState:
        return ModelState(
            name=self.spec.name,
            engine=self.spec.engine,
            device=self.spec.device,
            state=self.state,
            batching=self.engine.batching,
            max_batch=self.engine.max_batch,
            active=self.inflight,
            memory_bytes=self.memory_bytes,
            max_seq_len=self.spec.max_seq_len,
            loaded_at=self.loaded_at,
            load_seconds=self.load_seconds,
            tokens_total=self.scheduler.tokens_total,
            steps_total=self.scheduler.steps_total,
            batch_size=self.scheduler.batch_size,
        )


def model_bytes(engine: Engine) -> int:
    """Bytes of the engine's weights, where it can tell (0 where not)."""
    measure = getattr(engine, "memory_bytes", None)
    return int(measure()) if callable(measure) else 0


def device_used(device: str) -> int:
    """Bytes allocated by torch on a CUDA device (0 on cpu or without torch)."""
    if not device.startswith("cuda"):
        return 0
    import torch

    return int(torch.cuda.memory_allocated(torch.device(device)))


def device_memory(device: str) -> tuple[int, int]:
    """(free, total) bytes of ``device``: the GPU's, or the host's for cpu."""
    if device.startswith("cuda"):
        try:
            import torch

            free, total = torch.cuda.mem_get_info(torch.device(device))
            return int(free), int(total)
        except (RuntimeError, AssertionError, ImportError):
            return 0, 0
    return host_memory()


def host_memory() -> tuple[int, int]:
    """(available, total) bytes of host memory, from /proc/meminfo where there is one."""
    try:
        with open("/proc/meminfo") as f:
            fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        return fields.get("MemAvailable", 0), fields.get("MemTotal", 0)
    except (OSError, ValueError, IndexError):
        pages = os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
        return 0, int(pages) * int(os.sysconf("SC_PAGE_SIZE")) if pages else 0
