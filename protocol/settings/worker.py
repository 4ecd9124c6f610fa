"""The workers and the models they hold: ``WorkerSettings`` (``UML_WORKER_*``) and
``ModelSettings`` (``UML_*``: the registry, loads and unloads).
"""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct


class WorkerSettings(Struct, frozen=True, kw_only=True):
    """Read from ``UML_WORKER_<FIELD>``."""

    slots: Annotated[int, Meta(ge=1, description="Concurrent jobs per worker process.")] = 16
    engine: Annotated[str, Meta(description="Default engine: torch or exllamav2.")] = "torch"
    device: Annotated[str, Meta(description="Default device: cpu or cuda:N.")] = "cpu"
    heartbeat_s: Annotated[float, Meta(gt=0, description="Seconds between worker heartbeats.")] = (
        1.0
    )
    heartbeat_ttl_s: Annotated[
        float, Meta(gt=0, description="A worker silent this long counts as gone.")
    ] = 5.0
    max_seq_len: Annotated[
        int, Meta(ge=16, description="Longest prompt+completion a job may reach.")
    ] = 2048
    switch_interval_ms: Annotated[
        float,
        Meta(
            gt=0, description="Python's thread switch interval in a worker (the default is 5 ms)."
        ),
    ] = 0.5
    cpu_threads: Annotated[
        int,
        Meta(
            ge=0,
            description="Torch threads of a CPU engine; 0 leaves one core for the API and Redis.",
        ),
    ] = 0
    lease_s: Annotated[
        float,
        Meta(
            gt=0,
            description="A running job's lease, renewed with every heartbeat; a job whose lease "
            "lapsed (its worker died) is re-queued by the reaper and resumes elsewhere.",
        ),
    ] = 15.0
    max_attempts: Annotated[
        int,
        Meta(
            ge=1,
            description="Attempts a job gets; one whose worker died this many times fails "
            "with code worker_lost.",
        ),
    ] = 3
    interactive_slots: Annotated[
        int,
        Meta(
            ge=-1,
            description="Slots of each model that batch-priority jobs may not take, so an "
            "interactive request starts at once under a batch backlog; -1: max(1, slots // 4).",
        ),
    ] = -1
    key_reserve_slots: Annotated[
        int,
        Meta(
            ge=-1,
            description="Slots of each model kept for API keys with no job running on it "
            "while more than one key has work for it, so a new key's request starts at once "
            "behind other keys' long streams; -1: slots // 8.",
        ),
    ] = -1
    shutdown_grace_s: Annotated[
        float,
        Meta(
            ge=0,
            description="On SIGTERM a worker takes no new job and lets running ones finish "
            "this long; then it hands the rest back to the queue, to resume elsewhere.",
        ),
    ] = 30.0


class ModelSettings(Struct, frozen=True, kw_only=True):
    """The model registry and model management, read from ``UML_<FIELD>`` (docs/models.md)."""

    models: Annotated[
        str,
        Meta(
            description="TOML file of the model registry (name -> path, engine, options); "
            "read by workers (what they can load) and the API (what is registered)."
        ),
    ] = ""
    load_on_demand: Annotated[
        bool,
        Meta(
            description="A request for a registered model no worker holds loads it on an "
            "eligible worker and waits, instead of answering 404."
        ),
    ] = True
    load_wait_s: Annotated[
        float,
        Meta(
            gt=0,
            description="Longest wait for a load: of a request that loads on demand, and of "
            "POST /load_model?wait=true.",
        ),
    ] = 120.0
    unload_drain_s: Annotated[
        float,
        Meta(
            gt=0,
            description="Longest an unload waits for the model's running jobs to finish "
            "before it frees the memory anyway.",
        ),
    ] = 600.0
