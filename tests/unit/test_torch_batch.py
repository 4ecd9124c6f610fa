"""The torch engine's forward inputs (workers.engines.torch_batch) and BOS rule, no model."""

from __future__ import annotations

import torch

from workers.engines.slot_cache import SlotCache
from workers.engines.torch_batch import KV_BUCKET, decode_forward, mixed_forward, prefill_forward
from workers.engines.torch_model import with_one_bos

CPU, F32 = torch.device("cpu"), torch.float32


def visible(mask: torch.Tensor) -> torch.Tensor:
    return mask == 0


def test_decode_rows_feed_their_last_token_at_their_own_length() -> None:
    cache = SlotCache(max_batch=4, max_len=100)
    forward = decode_forward(cache, [7, 8], [3, 40], limit=100, device=CPU, dtype=F32)
    assert forward.ids.tolist() == [[7], [8]]
    assert forward.positions.tolist() == [[3], [40]]
    assert forward.mask.shape == (2, 1, 1, 2 * KV_BUCKET)  # 41 rounded up to the bucket
    assert visible(forward.mask)[0, 0, 0].tolist() == [True] * 4 + [False] * 60
    assert cache.get_seq_length() == 2 * KV_BUCKET
    capped = decode_forward(cache, [1], [90], limit=95, device=CPU, dtype=F32)
    assert capped.mask.shape[-1] == 95


def test_prefill_pads_on_the_left_and_hides_the_padding() -> None:
    cache = SlotCache(max_batch=4, max_len=100)
    forward = prefill_forward(cache, [[1, 2, 3], [4]], first_row=1, device=CPU, dtype=F32)
    assert forward.ids.tolist() == [[1, 2, 3], [0, 0, 4]]
    assert forward.positions.tolist() == [[0, 1, 2], [0, 0, 0]]
    seen = visible(forward.mask)[1, 0]  # the short prompt: padded queries see themselves
    assert seen.tolist() == [[True, False, False], [False, True, False], [False, False, True]]
    assert visible(forward.mask)[0, 0].tolist() == [
        [True, False, False],
        [True, True, False],
        [True, True, True],
    ]


def test_mixed_decodes_running_rows_and_prefills_new_ones_in_one_forward() -> None:
    cache = SlotCache(max_batch=4, max_len=100)
    forward = mixed_forward(cache, [[9], [1, 2]], [5, 0], limit=100, device=CPU, dtype=F32)
    assert forward.ids.tolist() == [[0, 9], [1, 2]]
    assert forward.positions.tolist() == [[4, 5], [0, 1]]
    assert forward.mask.shape == (2, 1, 2, KV_BUCKET)
    running = visible(forward.mask)[0, 0]
    assert running[1, :7].tolist() == [True] * 6 + [False]  # its cache up to position 5
    assert running[0].tolist() == [True] + [False] * (KV_BUCKET - 1)  # padding: one key


def test_one_bos_whoever_added_it() -> None:
    assert with_one_bos([1, 1, 5], bos=1, add_bos=True) == [1, 5]
    assert with_one_bos([5], bos=1, add_bos=True) == [1, 5]
    assert with_one_bos([5], bos=1, add_bos=False) == [5]
    assert with_one_bos([1, 1, 5], bos=1, add_bos=False) == [1, 5]
    assert with_one_bos([1, 1], bos=None, add_bos=True) == [1, 1]
