"""Engines behind one small interface (:class:`workers.engines.base.Engine`)."""

from __future__ import annotations

from workers.engines.base import Engine, EngineJob, StepOutput

__all__ = ["Engine", "EngineJob", "StepOutput", "create_engine"]


def create_engine(name: str, device: str, max_batch: int, max_seq_len: int) -> Engine:
    """Build (but do not load) the engine called ``name``."""
    if name == "torch":
        from workers.engines.torch_engine import TorchEngine

        return TorchEngine(device=device, max_batch=max_batch, max_seq_len=max_seq_len)
    if name == "exllamav2":
        from workers.engines.exllamav2 import ExLlamaV2Engine

        return ExLlamaV2Engine(device=device, max_batch=max_batch, max_seq_len=max_seq_len)
    raise ValueError(f"unknown engine {name!r}: choose torch or exllamav2")
