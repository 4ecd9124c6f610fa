"""The types the clients answer with: the server's own ``protocol`` Structs, plus ``Health``.

Responses are decoded with msgspec into the same Structs the API encodes, so a field the
server adds is one the client sees.
"""

from __future__ import annotations

from typing import Any

from msgspec import Struct

from protocol.batches import (
    BATCH_TERMINAL,
    Batch,
    BatchList,
    FileDeleted,
    FileList,
    FileObject,
)
from protocol.events import DoneEvent, ErrorEvent, Event, StatusEvent, TokenEvent
from protocol.jobs import Job, JobList
from protocol.models import ModelOp, ModelOpList, ModelsOverview
from protocol.openai import (
    ChatCompletionChunk,
    ChatCompletionResponse,
    CompletionChunk,
    CompletionResponse,
    ModelCard,
    ModelList,
    Usage,
)
from protocol.states import TERMINAL, JobStatus, Priority

JSON = dict[str, Any]


class Health(Struct, kw_only=True):
    """``GET /health``: ``status`` is ``ok``, ``no_workers`` or ``redis_down``."""

    status: str
    redis: bool = False
    workers: int = 0
    models: list[str] = []

    @property
    def ok(self) -> bool:
        return self.status == "ok"


__all__ = [
    "BATCH_TERMINAL",
    "JSON",
    "TERMINAL",
    "Batch",
    "BatchList",
    "ChatCompletionChunk",
    "ChatCompletionResponse",
    "CompletionChunk",
    "CompletionResponse",
    "DoneEvent",
    "ErrorEvent",
    "Event",
    "FileDeleted",
    "FileList",
    "FileObject",
    "Health",
    "Job",
    "JobList",
    "JobStatus",
    "ModelCard",
    "ModelList",
    "ModelOp",
    "ModelOpList",
    "ModelsOverview",
    "Priority",
    "StatusEvent",
    "TokenEvent",
    "Usage",
]
