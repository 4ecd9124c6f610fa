"""Worker heartbeats: what each live worker holds, written with a short TTL.

Every field added after the first version has a default, so an older reader decodes a
newer record and the other way round.
"""

from __future__ import annotations

from typing import Literal

from msgspec import Struct, field

ModelPhase = Literal["loading", "ready", "unloading"]


class ModelState(Struct, kw_only=True):
    name: str
    engine: str
    device: str
    state: ModelPhase = "ready"
    batching: str = "batched"
    max_batch: int = 0
    active: int = 0
    """Jobs of this model running (or handed to the engine) on this worker."""
    memory_bytes: int = 0
    """Memory the loaded weights take (0 while loading or where unknown)."""
    max_seq_len: int = 0
    loaded_at: float = 0.0
    load_seconds: float = 0.0
    """How long the last load of the weights took."""
    tokens_total: int = 0
    """Tokens this worker's engine produced for the model since it loaded it."""
    steps_total: int = 0
    """Engine steps (one batched forward each) since the load."""
    batch_size: int = 0
    """Jobs in the engine's last step."""


class WorkerInfo(Struct, kw_only=True):
    id: str
    host: str
    pid: int
    slots: int
    active: int = 0
    models: list[ModelState] = field(default_factory=list)
    started_at: float = 0.0
    seen_at: float = 0.0
    device: str = ""
    """The device this worker loads models onto by default (cpu or cuda:N)."""
    memory_free: int = 0
    """Bytes free on ``device`` (host memory for cpu)."""
    memory_total: int = 0
    free_slots: int = 0
    node: str = ""
    """The Celery node name remote-control commands are addressed to (``{id}@{host}``)."""
    registered: list[str] = field(default_factory=list)
    """Names in this worker's registry: the models it can load by name alone."""

    def holds(self, model: str) -> ModelState | None:
        return next((m for m in self.models if m.name == model), None)
