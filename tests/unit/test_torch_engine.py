"""The torch engine: greedy parity with HF ``generate``, batching, limits, cancel, seeds."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from protocol.jobs import SamplingParams
from workers.engines import create_engine
from workers.engines.base import EngineJob
from workers.engines.torch_engine import TorchEngine

PROMPTS = ["Hello", "The quick brown fox jumps over", "a", "Grüße 😀 漢字, a longer prompt here."]
NEW = 16


@pytest.fixture
def engine(tiny_model_dir: Path) -> TorchEngine:
    engine = TorchEngine(device="cpu", max_batch=8, max_seq_len=256)
    engine.load(tiny_model_dir)
    return engine


@pytest.fixture(scope="module")
def hf_model(tiny_model_dir: Path) -> PreTrainedModel:
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


def greedy(max_tokens: int = NEW, **kwargs: object) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, **kwargs)  # type: ignore[arg-type]


def job(engine: TorchEngine, index: int, params: SamplingParams | None = None) -> EngineJob:
    prompt = engine.encode(PROMPTS[index % len(PROMPTS)])
    return EngineJob(f"job-{index}", prompt, params or greedy())


def run(
    engine: TorchEngine, jobs: Iterable[EngineJob], join_every: int = 0
) -> dict[str, tuple[list[int], str | None]]:
    """Run to completion; with ``join_every`` > 0 each job joins that many steps later."""
    pending = list(jobs)
    tokens: dict[str, list[int]] = {j.job_id: [] for j in pending}
    reasons: dict[str, str | None] = {}
    step = 0
    while pending or engine.active:
        while pending and (join_every == 0 or step % join_every == 0 or not engine.active):
            engine.enqueue(pending.pop(0))
            if join_every:
                break
        for out in engine.step():
            assert out.job_id not in reasons, "output after finish"
            tokens[out.job_id] += out.token_ids
            if out.finished:
                reasons[out.job_id] = out.finish_reason
        step += 1
    return {k: (v, reasons[k]) for k, v in tokens.items()}


def solo(engine: TorchEngine, index: int, params: SamplingParams | None = None) -> list[int]:
    return run(engine, [job(engine, index, params)])[f"job-{index}"][0]


def hf_greedy(model: PreTrainedModel, prompt: list[int], new: int) -> list[int]:
    out = model.generate(
        torch.tensor([prompt]), do_sample=False, max_new_tokens=new, pad_token_id=2
    )
    generated = out[0, len(prompt) :].tolist()
    return generated[: generated.index(1)] if 1 in generated else generated


def test_create_engine_builds_a_torch_engine() -> None:
    engine = create_engine("torch", "cpu", 4, 128)
    assert isinstance(engine, TorchEngine)
    assert (engine.name, engine.batching, engine.active) == ("torch", "batched", 0)


@pytest.mark.parametrize("index", range(len(PROMPTS)))
def test_solo_greedy_equals_hf_generate(
    engine: TorchEngine, hf_model: PreTrainedModel, index: int
) -> None:
    prompt = engine.encode(PROMPTS[index])
    assert solo(engine, index) == hf_greedy(hf_model, prompt, NEW)


@pytest.mark.parametrize("join_every", [0, 1, 3])
def test_concurrent_jobs_equal_their_solo_runs(engine: TorchEngine, join_every: int) -> None:
    expected = {f"job-{i}": solo(engine, i) for i in range(6)}
    lengths = [greedy(max_tokens=NEW - i) for i in range(6)]
    expected = {k: v[: NEW - i] for i, (k, v) in enumerate(expected.items())}
    results = run(engine, [job(engine, i, lengths[i]) for i in range(6)], join_every)
    assert {k: v[0] for k, v in results.items()} == expected


def test_jobs_beyond_max_batch_wait_inside_the_engine(tiny_model_dir: Path) -> None:
    engine = TorchEngine(device="cpu", max_batch=2, max_seq_len=256)
    engine.load(tiny_model_dir)
    expected = {f"job-{i}": solo(engine, i) for i in range(5)}
    for i in range(5):
        engine.enqueue(job(engine, i))
    assert engine.active == 5
    tokens: dict[str, list[int]] = {k: [] for k in expected}
    while engine.active:
        outputs = engine.step()
        assert len(outputs) <= 2 * engine.max_batch
        for out in outputs:
            tokens[out.job_id] += out.token_ids
    assert tokens == expected


def test_max_tokens_ends_with_length(engine: TorchEngine) -> None:
    assert run(engine, [job(engine, 0, greedy(max_tokens=5))])["job-0"][1] == "length"
    assert len(run(engine, [job(engine, 0, greedy(max_tokens=5))])["job-0"][0]) == 5


def test_max_seq_len_ends_with_length(tiny_model_dir: Path) -> None:
    engine = TorchEngine(device="cpu", max_batch=2, max_seq_len=12)
    engine.load(tiny_model_dir)
    prompt = engine.encode("Hello")  # 6 ids with BOS
    tokens, reason = run(engine, [EngineJob("a", prompt, greedy(max_tokens=100))])["a"]
    assert (len(prompt) + len(tokens), reason) == (12, "length")
    too_long = EngineJob("b", engine.encode("x" * 20), greedy())
    assert run(engine, [too_long])["b"] == ([], "length")


def test_eos_ends_with_stop_and_is_not_emitted(engine: TorchEngine) -> None:
    reference = solo(engine, 1)
    cut = next(i for i in range(1, NEW) if reference[i] not in reference[:i])
    engine._eos = frozenset({reference[cut]})  # pretend this token is the model's EOS
    assert run(engine, [job(engine, 1)])["job-1"] == (reference[:cut], "stop")


def test_forced_ids_resume_and_count_toward_max_tokens(engine: TorchEngine) -> None:
    reference = solo(engine, 3)
    resumed = job(engine, 3)
    resumed.forced_ids = reference[:4]
    assert run(engine, [resumed])["job-3"] == (reference[4:], "length")
    done = job(engine, 3, greedy(max_tokens=4))
    done.forced_ids = reference[:4]
    assert run(engine, [done])["job-3"] == ([], "length")


def test_a_resumed_seeded_job_replays_its_draws(engine: TorchEngine) -> None:
    """A resumed attempt skips the draws of the forced tokens: the same sampled text."""
    params = SamplingParams(max_tokens=NEW, temperature=1.0, top_k=40, seed=11)
    reference = solo(engine, 1, params)
    resumed = job(engine, 1, params)
    resumed.forced_ids, resumed.sampled = reference[:6], 6
    assert run(engine, [resumed])["job-1"][0] == reference[6:]
    fresh = job(engine, 1, params)
    fresh.forced_ids = reference[:6]  # without the replay the draws start over
    assert run(engine, [fresh])["job-1"][0] != reference[6:]


def test_cancel_frees_the_row_and_leaves_others_intact(engine: TorchEngine) -> None:
    expected = {f"job-{i}": solo(engine, i) for i in range(4)}
    for i in range(4):
        engine.enqueue(job(engine, i))
    engine.enqueue(job(engine, 9))
    engine.cancel("job-9")  # still waiting
    tokens: dict[str, list[int]] = {k: [] for k in expected}
    for step in range(NEW):
        if step == 3:
            engine.cancel("job-1")
            engine.cancel("no-such-job")
            assert engine.active == 3
        for out in engine.step():
            assert out.job_id != "job-1" or step < 3
            tokens[out.job_id] += out.token_ids
    assert engine.active == 0
    assert tokens["job-1"] == expected["job-1"][:3]
    assert {k: v for k, v in tokens.items() if k != "job-1"} == {
        k: v for k, v in expected.items() if k != "job-1"
    }


def test_seeded_sampling_repeats_alone_and_in_a_batch(engine: TorchEngine) -> None:
    params = SamplingParams(max_tokens=NEW, temperature=1.0, top_p=0.9, seed=42)
    alone = solo(engine, 2, params)
    assert alone == solo(engine, 2, params)
    mates = [job(engine, i, SamplingParams(max_tokens=NEW, top_k=5)) for i in (0, 1, 3)]
    together = run(engine, [*mates, job(engine, 2, params)], join_every=2)
    assert together["job-2"][0] == alone
    other = solo(engine, 2, SamplingParams(max_tokens=NEW, temperature=1.0, seed=43))
    assert other != alone


def test_encode_adds_one_bos_and_decode_round_trips(engine: TorchEngine) -> None:
    ids = engine.encode("Zoë 😀")
    assert ids[0] == 0 and ids[1] != 0
    assert engine.decode(ids) == "Zoë 😀"
    prompt = engine.render_chat([{"role": "user", "content": "hi"}])
    assert prompt.startswith("<s><|im_start|>user\nhi")
    chat_ids = engine.encode(prompt)
    assert chat_ids[0] == 0 and chat_ids[1] != 0


def test_empty_job_is_refused_and_unloaded_engine_raises(engine: TorchEngine) -> None:
    with pytest.raises(ValueError, match="empty prompt"):
        engine.enqueue(EngineJob("x", [], greedy()))
    engine.enqueue(job(engine, 0))
    engine.unload()
    assert engine.active == 0
    assert engine.step() == []
    engine.enqueue(EngineJob("y", [0, 5], greedy()))
    with pytest.raises(RuntimeError, match="no model"):
        engine.step()


def test_joining_jobs_ride_the_decode_forward(engine: TorchEngine) -> None:
    """A step that decodes running jobs and admits short new ones runs one forward, not two."""
    forwards = 0
    original = engine._forward

    def counting(*args: object, **kwargs: object) -> torch.Tensor:
        nonlocal forwards
        forwards += 1
        return original(*args, **kwargs)  # type: ignore[arg-type]

    engine._forward = counting  # type: ignore[method-assign]
    try:
        engine.enqueue(job(engine, 0, greedy(max_tokens=4)))
        engine.step()  # prefill alone
        engine.enqueue(job(engine, 1, greedy(max_tokens=4)))
        engine.enqueue(job(engine, 2, greedy(max_tokens=4)))
        forwards = 0
        outputs = engine.step()
        assert forwards == 1
        assert {o.job_id for o in outputs} == {"job-0", "job-1", "job-2"}
    finally:
        engine._forward = original  # type: ignore[method-assign]
        for i in range(3):
            engine.cancel(f"job-{i}")
