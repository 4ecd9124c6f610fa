"""The slot KV cache the torch engine drives: one row per running job, each its own length.

Per layer one ``[max_batch, kv_heads, capacity, head_dim]`` buffer. Before each forward the
engine says what the forward holds (:meth:`SlotCache.for_decode`, ``for_prefill`` or
``for_mixed``); the model's attention layers then call :meth:`SlotCache.update` through
Hugging Face's ``Cache`` interface.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers.cache_utils import Cache

__all__ = ["SlotCache"]


class SlotCache(Cache):
    """A KV cache of ``max_batch`` rows with per-row lengths, driven by :class:`TorchEngine`.

    The engine calls :meth:`for_decode` or :meth:`for_prefill` before each forward; the
    model's attention layers then call :meth:`update`. Buffers are allocated on first use
    (so any head layout works) and grow by doubling up to ``max_len``.
    """

    def __init__(self, max_batch: int, max_len: int):
        super().__init__(layers=[])
        self.max_batch, self.max_len = max_batch, max_len
        self._keys: dict[int, torch.Tensor] = {}
        self._values: dict[int, torch.Tensor] = {}
        self._mode = "decode"
        self._positions = torch.zeros(0, dtype=torch.long)
        self._rows = torch.zeros(0, dtype=torch.long)
        self._needed = 0
        self._slots: list[tuple[int, int, int]] = []

    def for_decode(self, positions: torch.Tensor, needed: int) -> None:
        """Next forward: row ``i`` writes its one new token at ``positions[i]``."""
        self._mode, self._positions, self._needed = "decode", positions, needed
        self._rows = torch.arange(positions.shape[0], device=positions.device)

    def for_prefill(self, slots: Sequence[tuple[int, int, int]]) -> None:
        """Next forward: batch row ``b`` = ``(slot, pad, length)`` stores its tokens in ``slot``."""
        self._mode, self._slots = "prefill", list(slots)
        self._needed = max(length for _, _, length in slots)

    def for_mixed(self, starts: Sequence[int], counts: Sequence[int], needed: int) -> None:
        """Next forward: batch row ``b`` (= cache row ``b``) writes its last ``counts[b]`` query
        positions at cache positions ``starts[b]`` on, then attends over ``[:needed]``."""
        self._mode, self._needed = "mixed", needed
        rows = enumerate(zip(starts, counts, strict=True))
        self._slots = [(b, start, count) for b, (start, count) in rows]

    def update(
        self,
        key_states: torch.Tensor,
        value_states: torch.Tensor,
        layer_idx: int,
        *args: Any,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self._buffers(layer_idx, key_states, value_states)
        if self._mode == "prefill":
            for b, (slot, pad, length) in enumerate(self._slots):
                keys[slot, :, :length] = key_states[b, :, pad:]
                values[slot, :, :length] = value_states[b, :, pad:]
            return key_states, value_states
        if self._mode == "mixed":
            width = key_states.shape[2]
            for row, start, count in self._slots:
                keys[row, :, start : start + count] = key_states[row, :, width - count :]
                values[row, :, start : start + count] = value_states[row, :, width - count :]
            rows = len(self._slots)
            return keys[:rows, :, : self._needed], values[:rows, :, : self._needed]
        keys[self._rows, :, self._positions] = key_states[:, :, 0]
        values[self._rows, :, self._positions] = value_states[:, :, 0]
        rows = self._rows.shape[0]
        return keys[:rows, :, : self._needed], values[:rows, :, : self._needed]

    def move(self, src: int, dst: int, length: int) -> None:
        """Copy row ``src``'s first ``length`` positions into row ``dst`` (compaction)."""
        with torch.inference_mode():  # the buffers are inference tensors
            for store in (self._keys, self._values):
                for buffer in store.values():
                    buffer[dst, :, :length] = buffer[src, :, :length]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self._needed

    def _buffers(
        self, layer_idx: int, key_states: torch.Tensor, value_states: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        keys = self._keys.get(layer_idx)
        if keys is None or keys.shape[2] < self._needed:
            capacity = min(self.max_len, max(256, 2 * self._needed))
            self._keys[layer_idx] = _grown(keys, key_states, self.max_batch, capacity)
            self._values[layer_idx] = _grown(
                self._values.get(layer_idx), value_states, self.max_batch, capacity
            )
        return self._keys[layer_idx], self._values[layer_idx]


def _grown(old: torch.Tensor | None, like: torch.Tensor, rows: int, capacity: int) -> torch.Tensor:
    shape = (rows, like.shape[1], capacity, like.shape[3])
    new = torch.zeros(shape, dtype=like.dtype, device=like.device)
    if old is not None:
        new[:, :, : old.shape[2]] = old
    return new
