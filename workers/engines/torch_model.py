"""What the torch engine loads and reads of a Hugging Face model directory.

The model itself (float32 on CPU with at most the usable cores, bfloat16 or float16 on
CUDA), and the special tokens that steer generation: the EOS ids of the config and the
generation config, the BOS id and whether the tokenizer config asks for it
(``add_bos_token``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, cast

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

__all__ = ["bos_of", "dtype_for", "eos_ids", "fit_threads", "load_model", "with_one_bos"]


def load_model(model_dir: Path, device: str) -> PreTrainedModel:
    """The causal LM of ``model_dir`` on ``device`` in eval mode, with SDPA attention."""
    loaded: Any = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=dtype_for(device), attn_implementation="sdpa"
    )
    # transformers leaves ``to`` (functools.wraps of nn.Module.to, which type checkers do not
    # bind to the instance) and ``eval`` without usable annotations; both return the model.
    return cast(PreTrainedModel, loaded.to(device).eval())


def fit_threads() -> None:
    """Use at most the cores this process may run on (containers often see the host's)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if usable and torch.get_num_threads() > usable:
        torch.set_num_threads(usable)


def dtype_for(device: str) -> torch.dtype:
    """CPU runs float32; CUDA bfloat16 where supported, else float16."""
    if not device.startswith("cuda"):
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def eos_ids(model: PreTrainedModel) -> frozenset[int]:
    """EOS ids of the config and the generation config (each an int or a list)."""
    eos: set[int] = set()
    sources: list[Any] = [model.config]
    if model.generation_config is not None:
        sources.append(model.generation_config)
    for source in sources:
        value = getattr(source, "eos_token_id", None)
        eos.update([value] if isinstance(value, int) else list(value or []))
    return frozenset(eos)


def bos_of(model_dir: Path, model: PreTrainedModel) -> tuple[int | None, bool]:
    """The BOS id, and whether the tokenizer config asks for it (``add_bos_token``)."""
    path = model_dir / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    bos = getattr(model.config, "bos_token_id", None)
    bos = bos if isinstance(bos, int) else None
    return bos, bool(config.get("add_bos_token", False)) and bos is not None


def with_one_bos(ids: list[int], bos: int | None, add_bos: bool) -> list[int]:
    """``ids`` starting with exactly one BOS when the model uses one (``add_bos``), else at
    most one: the tokenizer's post-processor may add BOS, and a chat template may write it
    as text, so a prompt can arrive with two or with none."""
    if bos is None:
        return ids
    while len(ids) >= 2 and ids[0] == ids[1] == bos:
        ids.pop(0)
    if add_bos and (not ids or ids[0] != bos):
        ids.insert(0, bos)
    return ids
