"""Files and batches: ``BatchSettings`` (``UML_BATCH_*``)."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct


class BatchSettings(Struct, frozen=True, kw_only=True):
    """Files and batches (``/v1/files``, ``/v1/batches``), read from ``UML_BATCH_<FIELD>``."""

    max_file_bytes: Annotated[
        int,
        Meta(
            ge=1024, description="Largest file /v1/files accepts (413 beyond); files live in Redis."
        ),
    ] = 64 * 1024 * 1024
    max_lines: Annotated[int, Meta(ge=1, description="Most requests in one batch input file.")] = (
        50_000
    )
    file_ttl_s: Annotated[
        int,
        Meta(ge=60, description="Seconds a file (input or output) and a batch record are kept."),
    ] = 30 * 24 * 3600
    inflight: Annotated[
        int,
        Meta(
            ge=1,
            description="Most jobs of one batch queued or running at once; the rest wait in the "
            "batch, leaving the model's queue to other work.",
        ),
    ] = 256
    tick_s: Annotated[
        float, Meta(gt=0, description="Seconds between the batch runner's passes.")
    ] = 0.25
    lease_s: Annotated[
        float,
        Meta(
            ge=1,
            description="The batch runner's lease: one API replica drives every batch; another "
            "takes over this long after it dies.",
        ),
    ] = 10.0
    quota_bytes: Annotated[
        int,
        Meta(
            ge=0,
            description="Bytes of files one key may keep, its uploads and its batches' outputs "
            "together; an upload past it gets 400 `storage_quota_exceeded`. 0: no limit.",
        ),
    ] = 512 * 1024 * 1024
    quota_files: Annotated[
        int,
        Meta(
            ge=0,
            description="Files one key may keep, uploads and batch outputs together; an upload "
            "past it gets 400 `storage_quota_exceeded`. 0: no limit.",
        ),
    ] = 1000
