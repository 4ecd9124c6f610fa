"""One sampling step for a whole batch: logits ``[B, V]`` in, next token ids ``[B]`` out.

Every row has its own temperature, top-p, top-k and optionally its own seeded
``torch.Generator``. The work is vectorised over rows: temperature is a column divide,
top-k/top-p one shared sort (skipped when no row filters) that masks logits, and the draw
is inverse-CDF sampling in vocabulary order with one uniform number per row. A seeded row
takes its uniform from its own generator, so its tokens depend only on its seed and its
logits, never on which other jobs share the batch. Temperature 0 is greedy (argmax).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["RowSampling", "make_generator", "sample"]

_GREEDY_BELOW = 1e-5


@dataclass(slots=True)
class RowSampling:
    """One row's sampling controls; ``top_k`` 0 and ``top_p`` 1 disable those filters."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    generator: torch.Generator | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature < _GREEDY_BELOW


def make_generator(seed: int | None, drawn: int = 0) -> torch.Generator | None:
    """A CPU generator seeded with ``seed`` (``None``: use the global RNG), past the draws of
    ``drawn`` tokens: a sampled row takes exactly one per token, so a resumed job replays."""
    if seed is None:
        return None
    generator = torch.Generator().manual_seed(seed)
    for _ in range(drawn):
        _draw(generator)
    return generator


def _draw(generator: torch.Generator) -> torch.Tensor:
    """A seeded row's one uniform for one token."""
    return torch.rand(1, generator=generator)


def sample(logits: torch.Tensor, rows: Sequence[RowSampling]) -> torch.Tensor:
    """Next token ids ``[B]`` (int64, on the logits' device) for ``logits`` ``[B, V]``."""
    greedy = logits.argmax(dim=-1)
    if all(row.greedy for row in rows):
        return greedy
    device = logits.device
    temperature = torch.tensor([max(r.temperature, _GREEDY_BELOW) for r in rows], device=device)
    scaled = logits.float() / temperature[:, None]
    if any(r.top_k > 0 or r.top_p < 1.0 for r in rows):
        scaled = scaled.masked_fill(_filtered_out(scaled, rows), float("-inf"))
    drawn = _inverse_cdf(torch.softmax(scaled, dim=-1), _uniforms(rows, device))
    is_greedy = torch.tensor([r.greedy for r in rows], device=device)
    return torch.where(is_greedy, greedy, drawn)


def _filtered_out(scaled: torch.Tensor, rows: Sequence[RowSampling]) -> torch.Tensor:
    """``[B, V]`` True where top-k or top-p removes a token (one shared descending sort).

    The draw itself happens in vocabulary order, so a seeded row picks the same token
    whether or not its batch mates filter.
    """
    device, vocab = scaled.device, scaled.shape[-1]
    sorted_logits, order = scaled.sort(dim=-1, descending=True)
    ranks = torch.arange(vocab, device=device)[None, :]
    top_k = torch.tensor([r.top_k if r.top_k > 0 else vocab for r in rows], device=device)
    probs = torch.softmax(sorted_logits.masked_fill(ranks >= top_k[:, None], float("-inf")), -1)
    top_p = torch.tensor([r.top_p for r in rows], device=device, dtype=probs.dtype)
    before = probs.cumsum(dim=-1) - probs
    removed = (ranks >= top_k[:, None]) | ((before >= top_p[:, None]) & (ranks > 0))
    return torch.zeros_like(removed).scatter(1, order, removed)


def _uniforms(rows: Sequence[RowSampling], device: torch.device) -> torch.Tensor:
    """One uniform in [0, 1) per row: from the row's generator if seeded, else global RNG."""
    values = torch.rand(len(rows))
    for i, row in enumerate(rows):
        if row.generator is not None:
            values[i] = _draw(row.generator)
    return values.to(device)


def _inverse_cdf(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Index ``i`` per row with ``cdf[i-1] <= u * total < cdf[i]`` (unnormalised probs ok)."""
    cdf = probs.cumsum(dim=-1)
    target = (uniforms.to(cdf.dtype) * cdf[:, -1])[:, None]
    index = torch.searchsorted(cdf, target, right=True).squeeze(1)
    return index.clamp_(max=probs.shape[-1] - 1)
