"""Engines behind one small interface (:class:`workers.engines.base.Engine`)."""

from __future__ import annotations

from workers.engines.base import Engine, EngineJob, StepOutput

__all__ = ["Engine", "EngineJob", "StepOutput", "create_engine"]


def create_engine(
    name: str, device: str, max_batch: int, max_seq_len: int, cache_tokens: int = 0
) -> Engine:
    """Build (but do not load) the engine called ``name``; ``cache_tokens`` sizes the KV cache
    of an engine with a shared one (exllamav2; 0: ``max_batch`` x ``max_seq_len``)."""
    if name == "torch":
        from workers.engines.torch_engine import TorchEngine

        return TorchEngine(device=device, max_batch=max_batch, max_seq_len=max_seq_len)
    if name == "exllamav2":
        from workers.engines.exllamav2 import ExLlamaV2Engine

        return ExLlamaV2Engine(
            device=device, max_batch=max_batch, max_seq_len=max_seq_len, cache_tokens=cache_tokens
        )
    raise ValueError(f"unknown engine {name!r}: choose torch or exllamav2")
