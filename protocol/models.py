"""The model registry and the model-management wire types.

A registry is a TOML file (``UML_MODELS``) naming each model a worker may load::

    [models.tiny]
    path = "/srv/models/tiny"     # a model directory on the worker's host
    engine = "torch"              # torch | exllamav2; empty: the worker's default
    device = "cpu"                # cpu | cuda:N; empty: the worker's default
    max_seq_len = 2048            # 0: the worker's default (UML_WORKER_MAX_SEQ_LEN)
    cache_tokens = 0              # KV-cache size in tokens; 0: max_seq_len x slots
    max_batch = 0                 # jobs per engine step; 0: the worker's slots

Load and unload are operations with a record in Redis (:class:`ModelOp`) that the API
answers 202 with and the caller polls until its ``state`` is terminal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct, field

ModelName = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][\w.:/-]*$")]
"""A model name: it becomes part of a queue name (``model.<name>``)."""


class ModelEntry(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One registered model: where it lives and how to run it."""

    path: Annotated[str, Meta(min_length=1)]
    engine: str = ""
    device: str = ""
    max_seq_len: Annotated[int, Meta(ge=0)] = 0
    cache_tokens: Annotated[int, Meta(ge=0)] = 0
    max_batch: Annotated[int, Meta(ge=0)] = 0


class _RegistryFile(Struct, frozen=True, forbid_unknown_fields=True):
    models: dict[ModelName, ModelEntry] = field(default_factory=dict)


def parse_registry(text: str | bytes, base: Path | None = None) -> dict[str, ModelEntry]:
    """Decode a registry file; a relative ``path`` is taken from ``base`` (the file's folder).

    A malformed file raises a ValueError naming the problem.
    """
    try:
        decoded = msgspec.toml.decode(text, type=_RegistryFile)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"invalid model registry: {exc}") from None
    if base is None:
        return dict(decoded.models)
    return {
        name: msgspec.structs.replace(entry, path=str(base / entry.path))
        for name, entry in decoded.models.items()
    }


def load_registry(path: str) -> dict[str, ModelEntry]:
    """The registry in file ``path``; an empty path means no registry (an empty dict)."""
    if not path:
        return {}
    file = Path(path)
    try:
        text = file.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the model registry {path}: {exc.strerror}") from None
    return parse_registry(text, base=file.parent)


# ---- the API's requests and answers -------------------------------------------------


class LoadModelRequest(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /load_model``. ``path`` (admin) loads a directory that is not registered."""

    model: ModelName
    worker: str | None = None
    device: str | None = None
    path: str | None = None
    engine: str | None = None


class UnloadModelRequest(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /unload_model``: from ``worker``, or from every worker holding ``model``."""

    model: ModelName
    worker: str | None = None


OpKind = Literal["load", "unload"]
OpState = Literal["pending", "loading", "ready", "unloading", "unloaded", "failed"]
OP_TERMINAL: frozenset[str] = frozenset({"ready", "unloaded", "failed"})


class ModelOp(Struct, kw_only=True):
    """One load or unload on one worker, as stored in ``uml:modelop:{id}``."""

    id: str
    kind: OpKind
    model: str
    worker: str
    state: OpState = "pending"
    error: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def done(self) -> bool:
        return self.state in OP_TERMINAL


class ModelOpList(Struct, kw_only=True):
    """The answer to load/unload: one operation per worker it concerns."""

    object: Literal["list"] = "list"
    data: list[ModelOp] = field(default_factory=list)


class LoadCommand(Struct, frozen=True, kw_only=True):
    """The remote-control command's arguments: what to load, resolved by the API when it
    knows the entry (its own registry, or an admin's ``path``); else the worker looks the
    name up in its own registry."""

    op_id: str
    model: str
    entry: ModelEntry | None = None
    device: str | None = None


class UnloadCommand(Struct, frozen=True, kw_only=True):
    op_id: str
    model: str


# ---- GET /models ---------------------------------------------------------------------


class ModelPlacement(Struct, kw_only=True):
    """One model on one worker."""

    worker: str
    host: str
    device: str
    state: str
    active: int = 0
    memory_bytes: int = 0


class ModelStatus(Struct, kw_only=True):
    """One model across the deployment: where it is, and how many jobs wait for it."""

    name: str
    registered: bool
    ready: bool
    queued: int
    workers: list[ModelPlacement] = field(default_factory=list)


class WorkerStatus(Struct, kw_only=True):
    id: str
    host: str
    device: str
    memory_free: int
    memory_total: int
    slots: int
    free_slots: int
    active: int
    models: list[str] = field(default_factory=list)
    seen_at: float = 0.0


class ModelsOverview(Struct, kw_only=True):
    """``GET /models``: every known model (registered or held) and every live worker."""

    models: list[ModelStatus] = field(default_factory=list)
    workers: list[WorkerStatus] = field(default_factory=list)
