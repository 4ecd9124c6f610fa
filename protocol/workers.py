"""Worker heartbeats: what each live worker holds, written with a short TTL."""

from __future__ import annotations

from typing import Literal

from msgspec import Struct, field


class ModelState(Struct, kw_only=True):
    name: str
    engine: str
    device: str
    state: Literal["loading", "ready", "unloading"] = "ready"
    batching: str = "batched"
    max_batch: int = 0


class WorkerInfo(Struct, kw_only=True):
    id: str
    host: str
    pid: int
    slots: int
    active: int = 0
    models: list[ModelState] = field(default_factory=list)
    started_at: float = 0.0
    seen_at: float = 0.0
