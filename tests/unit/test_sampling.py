"""Batched sampling: greedy, filters, and per-row seeded determinism."""

from __future__ import annotations

import torch

from workers.sampling import RowSampling, make_generator, sample


def logits(rows: int = 4, vocab: int = 50, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed))


def test_temperature_zero_is_argmax() -> None:
    x = logits()
    assert torch.equal(sample(x, [RowSampling(temperature=0.0)] * 4), x.argmax(-1))


def test_greedy_rows_mix_with_sampled_rows() -> None:
    x = logits()
    greedy = RowSampling(temperature=0.0)
    rows = [greedy, RowSampling(), greedy, RowSampling()]
    out = sample(x, rows)
    assert out[0] == x[0].argmax() and out[2] == x[2].argmax()
    assert out.shape == (4,) and out.dtype == torch.int64


def test_same_seed_same_tokens_regardless_of_batch_mates() -> None:
    x = logits()

    def draw(row: int, batch: list[RowSampling]) -> list[int]:
        return [int(sample(x, batch)[row]) for _ in range(20)]

    seeded = RowSampling(generator=make_generator(7))
    solo = draw(1, [RowSampling(), seeded, RowSampling(), RowSampling()])
    seeded = RowSampling(generator=make_generator(7))
    mates = [RowSampling(temperature=0.5, top_k=3), seeded, RowSampling(top_p=0.5), RowSampling()]
    assert draw(1, mates) == solo
    assert len(set(solo)) > 3


def test_different_seeds_differ() -> None:
    x = logits(rows=1)
    a, b = (RowSampling(generator=make_generator(s)) for s in (1, 2))
    assert [int(sample(x, [a])) for _ in range(20)] != [int(sample(x, [b])) for _ in range(20)]


def test_top_k_keeps_only_the_k_best() -> None:
    x = logits(rows=1)
    allowed = set(x[0].topk(3).indices.tolist())
    row = RowSampling(temperature=5.0, top_k=3, generator=make_generator(0))
    assert {int(sample(x, [row])) for _ in range(200)} == allowed


def test_top_p_keeps_the_nucleus() -> None:
    x = torch.tensor([[10.0, 9.5, 0.0, -1.0, -2.0]])
    row = RowSampling(top_p=0.9, generator=make_generator(0))
    assert {int(sample(x, [row])) for _ in range(200)} == {0, 1}


def test_tiny_top_p_still_picks_the_best() -> None:
    x = logits()
    rows = [RowSampling(top_p=1e-6, generator=make_generator(i)) for i in range(4)]
    assert torch.equal(sample(x, rows), x.argmax(-1))


def test_sampled_frequencies_follow_the_distribution() -> None:
    x = torch.log(torch.tensor([[0.7, 0.2, 0.1]]))
    row = RowSampling(generator=make_generator(3))
    counts = torch.bincount(torch.stack([sample(x, [row]) for _ in range(2000)]).flatten())
    assert abs(counts[0].item() / 2000 - 0.7) < 0.05
    assert abs(counts[2].item() / 2000 - 0.1) < 0.03
