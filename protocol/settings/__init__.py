"""Settings, one small frozen object per concern, read from the environment.

Every field is read from ``UML_<NAME>`` (upper case); ``RedisSettings.url`` also from
``REDIS_URL``. Settings live in ``protocol/`` because the API, the workers and the CLI
all read the same names; this package needs nothing beyond msgspec.

The Structs live by concern in ``server`` (Redis, the API), ``worker`` (workers, models),
``security`` (keys, CORS, audit, limits), ``batch`` and ``ops`` (Flower, logs); import
them from here. This module joins them into ``Settings`` and reads the environment.
"""

from __future__ import annotations

import functools
import os
import typing
from typing import Any, TypeVar

import msgspec
from msgspec import Meta, Struct

from protocol.settings.batch import BatchSettings
from protocol.settings.ops import FlowerSettings, LogSettings
from protocol.settings.security import LimitSettings, SecuritySettings
from protocol.settings.server import RedisSettings, ServerSettings
from protocol.settings.worker import ModelSettings, WorkerSettings

__all__ = [
    "BatchSettings",
    "FlowerSettings",
    "LimitSettings",
    "LogSettings",
    "ModelSettings",
    "RedisSettings",
    "SecuritySettings",
    "ServerSettings",
    "Settings",
    "WorkerSettings",
    "describe",
    "env_name",
    "get_settings",
    "load",
]

T = TypeVar("T", bound=Struct)


class Settings(Struct, frozen=True, kw_only=True):
    redis: RedisSettings
    server: ServerSettings
    worker: WorkerSettings
    models: ModelSettings = msgspec.field(default_factory=ModelSettings)
    security: SecuritySettings = msgspec.field(default_factory=SecuritySettings)
    limits: LimitSettings = msgspec.field(default_factory=LimitSettings)
    batch: BatchSettings = msgspec.field(default_factory=BatchSettings)
    flower: FlowerSettings = msgspec.field(default_factory=FlowerSettings)
    log: LogSettings = msgspec.field(default_factory=LogSettings)


_PREFIXES: dict[type[Struct], str] = {
    RedisSettings: "UML_REDIS_",
    ServerSettings: "UML_",
    WorkerSettings: "UML_WORKER_",
    ModelSettings: "UML_",
    SecuritySettings: "UML_",
    LimitSettings: "UML_LIMIT_",
    BatchSettings: "UML_BATCH_",
    FlowerSettings: "UML_FLOWER_",
    LogSettings: "UML_LOG_",
}


def env_name(cls: type[Struct], field_name: str) -> str:
    return f"{_PREFIXES[cls]}{field_name.upper()}"


def load(cls: type[T], env: dict[str, str] | None = None) -> T:
    """Build ``cls`` from its environment variables; a bad value raises a clear ValueError."""
    env = dict(os.environ) if env is None else env
    values: dict[str, Any] = {}
    for name in cls.__struct_fields__:
        key = env_name(cls, name)
        if key in env:
            values[name] = env[key]
    if cls is RedisSettings and "url" not in values and env.get("REDIS_URL"):
        values["url"] = env["REDIS_URL"]
    try:
        return msgspec.convert(values, cls, strict=False)
    except msgspec.ValidationError as exc:
        raise ValueError(f"invalid setting for {cls.__name__}: {exc}") from None


@functools.cache
def get_settings() -> Settings:
    """The process's settings, read once."""
    return Settings(
        redis=load(RedisSettings),
        server=load(ServerSettings),
        worker=load(WorkerSettings),
        models=load(ModelSettings),
        security=load(SecuritySettings),
        limits=load(LimitSettings),
        batch=load(BatchSettings),
        flower=load(FlowerSettings),
        log=load(LogSettings),
    )


def describe() -> list[tuple[str, str, str]]:
    """(variable, default, description) for every setting: the sample config and --help."""
    rows: list[tuple[str, str, str]] = []
    for cls in _PREFIXES:
        hints = typing.get_type_hints(cls, include_extras=True)
        defaults = dict(zip(cls.__struct_fields__, cls.__struct_defaults__, strict=True))
        for name in cls.__struct_fields__:
            metas = [m for m in getattr(hints[name], "__metadata__", ()) if isinstance(m, Meta)]
            text = next((m.description for m in metas if m.description), "")
            rows.append((env_name(cls, name), repr(defaults[name]), text))
    return rows
