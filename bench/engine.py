"""In-process throughput of the torch engine on the tiny model, against HF ``generate``.

Runs our engine at 1, 8 and 32 concurrent jobs (all enqueued at once, sampled at
temperature 1, EOS ignored so every job runs to ``--tokens``) and reports aggregate tokens/s and
time-to-first-token percentiles measured by step timing; then HF ``generate`` at static
batch 32 and batch 1 on the same model. Usage::

    .venv/bin/python -m bench.engine [--tokens 128] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from protocol.jobs import SamplingParams
from workers.engines.base import EngineJob
from workers.engines.torch_engine import TorchEngine
from workers.tiny import make_tiny

PROMPT = "The quick brown fox jumps over the lazy dog. " * 2


def bench_engine(
    model_dir: Path, device: str, jobs: int, tokens: int
) -> tuple[float, float, float]:
    """(aggregate tokens/s, TTFT p50 s, TTFT p99 s) for ``jobs`` concurrent jobs."""
    engine = TorchEngine(device=device, max_batch=max(jobs, 1), max_seq_len=2048)
    engine.load(model_dir)
    engine._eos = frozenset()  # run every job to max_tokens, as generate(min_new_tokens) does
    prompt = engine.encode(PROMPT)
    for i in range(jobs):
        params = SamplingParams(max_tokens=tokens, temperature=1.0, seed=i)
        engine.enqueue(EngineJob(f"job-{i}", list(prompt), params))
    start = time.perf_counter()
    first: dict[str, float] = {}
    produced = 0
    while engine.active:
        outputs = engine.step()
        now = time.perf_counter() - start
        for out in outputs:
            produced += len(out.token_ids)
            first.setdefault(out.job_id, now)
    elapsed = time.perf_counter() - start
    ttft = sorted(first.values())
    return produced / elapsed, statistics.median(ttft), _percentile(ttft, 0.99)


def bench_generate(model_dir: Path, device: str, batch: int, tokens: int) -> float:
    """Aggregate tokens/s of HF ``generate`` (sampling, static batch, no EOS stop)."""
    dtype = torch.float32 if device == "cpu" else torch.bfloat16  # the engine's dtype there
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()
    ids = TorchEngine(device, 1, 2048)
    ids.load(model_dir)
    prompt = torch.tensor([ids.encode(PROMPT)] * batch, device=device)
    with torch.inference_mode():
        start = time.perf_counter()
        out = model.generate(
            prompt,
            do_sample=True,
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            pad_token_id=model.config.pad_token_id,
        )
        elapsed = time.perf_counter() - start
    return (out.shape[1] - prompt.shape[1]) * batch / elapsed


def _percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per job")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_tiny(Path(tmp) / "tiny")
        bench_engine(model_dir, args.device, 4, 8)  # warm-up
        print(
            f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
            f"{args.tokens} new tokens per job, device {args.device}"
        )
        print(f"{'what':<28}{'tok/s':>10}{'TTFT p50':>12}{'TTFT p99':>12}")
        for jobs in (1, 8, 32):
            rate, p50, p99 = bench_engine(model_dir, args.device, jobs, args.tokens)
            print(f"{f'engine, {jobs} concurrent':<28}{rate:>10.0f}{p50:>11.3f}s{p99:>11.3f}s")
        for batch in (32, 1):
            rate = bench_generate(model_dir, args.device, batch, args.tokens)
            print(f"{f'HF generate, batch {batch}':<28}{rate:>10.0f}{'':>12}{'':>12}")


if __name__ == "__main__":
    main()
