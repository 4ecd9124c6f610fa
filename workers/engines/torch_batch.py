"""One forward of the torch engine over its slot cache: token ids, positions and mask.

The engine (:mod:`workers.engines.torch_engine`) runs three shapes of forward:

- **decode**: every running row feeds its last token at its own position;
- **prefill**: new prompts, left-padded to the longest, into fresh rows;
- **mixed**: both at once, every row padded on the left to the longest new prompt.

Each builder tells the slot cache (:class:`~workers.engines.slot_cache.SlotCache`) where the
forward's keys and values go and returns the forward's inputs: token ids, per-row
``position_ids`` and an explicit additive 4D attention mask, so rows of different lengths
share one forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from workers.engines.slot_cache import SlotCache

__all__ = ["KV_BUCKET", "Forward", "decode_forward", "mixed_forward", "prefill_forward"]

KV_BUCKET = 32
"""Decode attends over a multiple of this many positions (masked beyond each row's length),
so attention kernels see few distinct shapes (cuDNN would plan every new length anew)."""


@dataclass(frozen=True, slots=True)
class Forward:
    """A forward's inputs: ``ids`` and ``positions`` ``[B, q]``, ``mask`` ``[B, 1, q, k]``."""

    ids: torch.Tensor
    positions: torch.Tensor
    mask: torch.Tensor


def decode_forward(
    cache: SlotCache,
    lasts: Sequence[int],
    lengths: Sequence[int],
    limit: int,
    device: torch.device,
    dtype: torch.dtype,
) -> Forward:
    """Row ``i`` feeds ``lasts[i]`` at position ``lengths[i]`` (its cached length)."""
    ids = torch.tensor([[t] for t in lasts], device=device)
    positions = torch.tensor(list(lengths), device=device)
    needed = min(_round_up(max(lengths) + 1, KV_BUCKET), limit)
    cache.for_decode(positions, needed)
    span = torch.arange(needed, device=device)
    mask = _additive(span[None, :] <= positions[:, None], dtype)[:, None, None, :]
    return Forward(ids, positions[:, None], mask)


def mixed_forward(
    cache: SlotCache,
    tokens: Sequence[list[int]],
    starts: Sequence[int],
    limit: int,
    device: torch.device,
    dtype: torch.dtype,
) -> Forward:
    """Row ``b`` (= cache row ``b``) feeds ``tokens[b]`` from position ``starts[b]`` on: one
    token for a running row, a whole prompt (start 0) for a new one."""
    counts = [len(t) for t in tokens]
    width = max(counts)
    ids = torch.tensor([[0] * (width - len(t)) + t for t in tokens], device=device)
    start = torch.tensor(starts, device=device)[:, None]
    offset = torch.tensor([width - c for c in counts], device=device)[:, None]
    span = torch.arange(width, device=device)[None, :]
    positions = (start + span - offset).clamp(min=0)
    needed = max(a + c for a, c in zip(starts, counts, strict=True))
    needed = min(_round_up(needed, KV_BUCKET), limit)
    cache.for_mixed(starts, counts, needed)
    key = torch.arange(needed, device=device)[None, None, :]
    real = span[:, :, None] >= offset[:, :, None]
    visible = (key <= positions[:, :, None]) & real
    visible = visible | (~real & (key == 0))  # padded queries see one key: no NaN
    return Forward(ids, positions, _additive(visible, dtype)[:, None])


def prefill_forward(
    cache: SlotCache,
    tokens: Sequence[list[int]],
    first_row: int,
    device: torch.device,
    dtype: torch.dtype,
) -> Forward:
    """Left-padded prompts ``tokens`` into cache rows ``first_row`` on."""
    width = max(len(t) for t in tokens)
    pads = [width - len(t) for t in tokens]
    ids = torch.tensor([[0] * p + t for p, t in zip(pads, tokens, strict=True)], device=device)
    pad = torch.tensor(pads, device=device)[:, None]
    positions = (torch.arange(width, device=device)[None, :] - pad).clamp(min=0)
    cache.for_prefill(
        [(first_row + b, p, len(t)) for b, (p, t) in enumerate(zip(pads, tokens, strict=True))]
    )
    mask = _additive(_prefill_visible(pad, width), dtype)[:, None]
    return Forward(ids, positions, mask)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _prefill_visible(pad: torch.Tensor, width: int) -> torch.Tensor:
    """``[B, q, k]``: causal, left padding hidden (a padded query sees itself, avoiding NaN)."""
    span = torch.arange(width, device=pad.device)
    key, query = span[None, None, :], span[None, :, None]
    visible = (key <= query) & (key >= pad[:, :, None])
    return visible | (key == query)


def _additive(visible: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean visibility mask as an additive float mask (0 or the dtype's minimum)."""
    zero = torch.zeros((), dtype=dtype, device=visible.device)
    return torch.where(visible, zero, torch.finfo(dtype).min)
