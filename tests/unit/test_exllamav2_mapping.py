"""CPU tests of the ExLlamaV2 engine's pure parts: sampling map, finish reasons, refusal.

The generator is faked with result dicts shaped as ``ExLlamaV2DynamicGenerator.iterate()``
returns them (exllamav2 0.3.2, ``generator/dynamic.py``: ``emit`` in ``receive_sample``).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from protocol.jobs import SamplingParams
from workers.engines.base import EngineJob, StepOutput
from workers.engines.exllamav2 import (
    NO_CUDA_MESSAGE,
    ExLlamaV2Engine,
    attention_plan,
    sampler_kwargs,
    step_output,
)

EOS = 1


def _streaming(job_id: str, ids: list[int], **extra: Any) -> dict[str, Any]:
    result: dict[str, Any] = {"job": object(), "stage": "streaming", "eos": False}
    result.update(serial=0, identifier=job_id, text="x" * len(ids))
    if ids:
        result["token_ids"] = torch.tensor([ids], dtype=torch.long)
    result.update(extra)
    return result


def _stop_token(job_id: str, held: list[int]) -> dict[str, Any]:
    """An EOS result: the stop token sits at the end of ``held``, never in ``token_ids``."""
    result = _streaming(job_id, [], eos=True, eos_reason="stop_token")
    result.update(eos_triggering_token_id=EOS, eos_triggering_token_str="</s>")
    result.update(full_completion="...", new_tokens=len(held), prompt_tokens=3)
    result["held"] = {"token_ids": torch.tensor([held], dtype=torch.long)}
    return result


class FakeGenerator:
    """Plays back canned ``iterate()`` results and records cancels."""

    def __init__(self, rounds: list[list[dict[str, Any]]]) -> None:
        self.rounds = rounds
        self.cancelled: list[Any] = []

    def iterate(self) -> list[dict[str, Any]]:
        return self.rounds.pop(0)

    def cancel(self, job: Any) -> None:
        self.cancelled.append(job)


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> ExLlamaV2Engine:
    """An engine whose generator is a fake (construction believes CUDA is there)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    return ExLlamaV2Engine(device="cuda:0", max_batch=4, max_seq_len=256)


def _attach(engine: ExLlamaV2Engine, gen: FakeGenerator, job_ids: list[str]) -> None:
    engine._generator = gen
    engine._jobs = {job_id: object() for job_id in job_ids}


def test_greedy_for_temperature_zero() -> None:
    kw = sampler_kwargs(SamplingParams(max_tokens=4, temperature=0.0, top_p=0.5, top_k=7))
    assert kw["top_k"] == 1
    assert kw["token_repetition_penalty"] == 1.0


def test_sampling_knobs_map_and_neutral_defaults() -> None:
    kw = sampler_kwargs(SamplingParams(max_tokens=4, temperature=0.7, top_p=0.9, top_k=40))
    assert kw == {
        "temperature": 0.7,
        "top_k": 40,
        "top_p": 0.9,
        "token_repetition_penalty": 1.0,
        "min_p": 0.0,
        "typical": 0.0,
    }


def test_top_p_one_disables_top_p() -> None:
    kw = sampler_kwargs(SamplingParams(max_tokens=4, temperature=1.0, top_p=1.0, top_k=0))
    assert (kw["top_p"], kw["top_k"]) == (0.0, 0)


def test_refuses_without_cuda_in_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError) as info:
        ExLlamaV2Engine(device="cuda:0", max_batch=4, max_seq_len=256)
    assert str(info.value) == NO_CUDA_MESSAGE


def test_refuses_cpu_device() -> None:
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        ExLlamaV2Engine(device="cpu", max_batch=4, max_seq_len=256)


def test_non_streaming_stages_carry_nothing() -> None:
    assert step_output({"stage": "started", "eos": False, "identifier": "a"}) is None
    assert step_output({"stage": "prefill", "eos": False, "identifier": "a"}) is None


def test_held_token_step_carries_nothing() -> None:
    assert step_output(_streaming("a", [])) is None


def test_stop_token_is_dropped_and_reason_is_stop() -> None:
    out = step_output(_stop_token("a", [65, 66, EOS]))
    assert out == StepOutput("a", [65, 66], True, "stop")


def test_max_new_tokens_is_length() -> None:
    result = _streaming("a", [65, 66], eos=True, eos_reason="max_new_tokens", new_tokens=8)
    assert step_output(result) == StepOutput("a", [65, 66], True, "length")


def test_step_maps_a_round_and_forgets_finished_jobs(engine: ExLlamaV2Engine) -> None:
    gen = FakeGenerator(
        [
            [{"stage": "started", "eos": False, "identifier": "a", "serial": 0},
             _streaming("a", [70]), _streaming("b", [71])],
            [_stop_token("a", [EOS]), _streaming("b", [72], eos=True, eos_reason="max_new_tokens")],
        ]
    )
    _attach(engine, gen, ["a", "b"])
    assert engine.step() == [StepOutput("a", [70]), StepOutput("b", [71])]
    assert engine.step() == [
        StepOutput("a", [], True, "stop"),
        StepOutput("b", [72], True, "length"),
    ]
    assert engine.active == 0
    assert engine.step() == []


def test_cancel_hands_the_job_to_the_generator(engine: ExLlamaV2Engine) -> None:
    gen = FakeGenerator([])
    _attach(engine, gen, ["a"])
    job = engine._jobs["a"]
    engine.cancel("a")
    engine.cancel("unknown")
    assert gen.cancelled == [job]
    assert engine.active == 0


def test_resumed_job_already_at_its_limit_finishes_as_length(engine: ExLlamaV2Engine) -> None:
    _attach(engine, FakeGenerator([]), [])
    sampling = SamplingParams(max_tokens=2, temperature=0.0)
    engine.enqueue(EngineJob("a", [0, 65], sampling, forced_ids=[66, 67]))
    assert engine.step() == [StepOutput("a", [], True, "length")]


def test_paged_needs_flash_attn_with_paging() -> None:
    plan = attention_plan(flash_paged=True, flash=True, xformers=False, want_paged=None)
    assert plan == (True, "flash-attn")
    assert attention_plan(flash_paged=True, flash=True, xformers=False, want_paged=False) == (
        False,
        "flash-attn",
    )
    with pytest.raises(RuntimeError, match="flash-attn >= 2.5.7"):
        attention_plan(flash_paged=False, flash=True, xformers=False, want_paged=True)


def test_unpaged_without_flash_attn_never_uses_sdpa() -> None:
    """exllamav2 0.3.2's SDPA fallback prefills without a causal mask; matmul masks."""
    assert attention_plan(flash_paged=False, flash=False, xformers=True, want_paged=None) == (
        False,
        "xformers",
    )
    assert attention_plan(flash_paged=False, flash=False, xformers=False, want_paged=None) == (
        False,
        "matmul",
    )
