"""Whole stack vs the same engine in-process, side by side in one run.

    .venv/bin/python bench/stack.py [--concurrency 1 8 32] [--max-tokens 64] [--rounds 3]

For each concurrency it runs the same prompts, seeds and ``max_tokens``, alternating round
by round, (1) through the engine driven by a bare step loop in this process and (2) through
HTTP → Celery → worker → Redis stream → SSE, and prints aggregate tokens/s and
time-to-first-token p50/p99 of both, their ratio and the TTFT the stack adds. Redis, the
worker and the API are real processes started here on free ports.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.sse_client import stream_post  # noqa: E402
from protocol.jobs import SamplingParams  # noqa: E402
from tests.auth import ADMIN_KEY  # noqa: E402
from tests.integration.stack import Stack  # noqa: E402
from uml.redis_server import start_redis  # noqa: E402
from workers.detok import IncrementalDetokenizer  # noqa: E402
from workers.engines import Engine, EngineJob, create_engine  # noqa: E402
from workers.runtime import limit_cpu_threads  # noqa: E402
from workers.tiny import make_tiny  # noqa: E402


@dataclass
class Run:
    tokens: int
    seconds: float
    ttft: list[float]

    def add(self, other: Run) -> None:
        self.tokens += other.tokens
        self.seconds += other.seconds
        self.ttft += other.ttft

    @property
    def tok_s(self) -> float:
        return self.tokens / self.seconds

    def pct(self, q: float) -> float:
        data = sorted(self.ttft)
        return data[min(len(data) - 1, int(round(q * (len(data) - 1))))] * 1000


def prompts(n: int, round_: int) -> list[tuple[str, int]]:
    return [(f"request {round_}-{i}: once upon a time", 1000 * round_ + i) for i in range(n)]


def engine_round(engine: Engine, concurrency: int, max_tokens: int, round_: int) -> Run:
    """One round through the engine driven by a bare step loop in this process."""
    jobs = prompts(concurrency, round_)
    started = time.perf_counter()
    first: dict[str, float] = {}
    detoks: dict[str, IncrementalDetokenizer] = {}
    for text, seed in jobs:
        sampling = SamplingParams(max_tokens=max_tokens, temperature=1.0, seed=seed)
        job = EngineJob(job_id=str(seed), prompt_ids=engine.encode(text), sampling=sampling)
        detoks[job.job_id] = IncrementalDetokenizer(engine.decode)
        engine.enqueue(job)
    count, live = 0, len(jobs)
    while live:
        for out in engine.step():
            # TTFT is time to the first text, as a stream client sees it.
            if detoks[out.job_id].push(out.token_ids) or out.finished:
                first.setdefault(out.job_id, time.perf_counter() - started)
            count += len(out.token_ids)
            live -= out.finished
    return Run(count, time.perf_counter() - started, list(first.values()))


async def _stream(base: str, text: str, seed: int, max_tokens: int) -> tuple[int, float]:
    host, port = base.removeprefix("http://").split(":")
    body = {
        "model": "tiny",
        "prompt": text,
        "max_tokens": max_tokens,
        "temperature": 1.0,
        "seed": seed,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = 0.0
    tokens = 0
    payload = json.dumps(body).encode()
    async for data in stream_post(host, int(port), "/v1/completions", payload, ADMIN_KEY):
        if not data.startswith(b"{"):
            continue
        chunk = json.loads(data)
        if chunk["choices"] and not first:
            first = time.perf_counter() - started
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
    return tokens, first


async def stack_round(base: str, concurrency: int, max_tokens: int, round_: int) -> Run:
    """One round of ``concurrency`` streaming requests through the whole stack."""
    started = time.perf_counter()
    results = await asyncio.gather(
        *(_stream(base, text, seed, max_tokens) for text, seed in prompts(concurrency, round_))
    )
    return Run(sum(t for t, _ in results), time.perf_counter() - started, [f for _, f in results])


def measure(
    engine: Engine, base: str, concurrency: int, max_tokens: int, rounds: int
) -> tuple[Run, Run]:
    """Alternate engine and stack rounds (after one warm-up each), so a noisy stretch of the
    machine hits both columns alike."""
    local, remote = Run(0, 0.0, []), Run(0, 0.0, [])
    for r in range(rounds + 1):
        a = engine_round(engine, concurrency, max_tokens, r)
        b = asyncio.run(stack_round(base, concurrency, max_tokens, r))
        if r:
            local.add(a)
            remote.add(b)
    return local, remote


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--engine", default="torch", choices=["torch", "exllamav2"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model-dir", type=Path, default=None, help="default: a fresh tiny model")
    args = parser.parse_args()
    slots = max(args.concurrency)

    def rounds(concurrency: int) -> int:
        """Enough rounds for at least 32 requests per row, so percentiles mean something."""
        return max(args.rounds, -(-32 // concurrency))

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir or make_tiny(Path(tmp) / "tiny", seed=0)
        server = start_redis(Path(tmp) / "redis", appendonly=True)
        stack = Stack(redis_url=server.url, log_dir=Path(tmp))
        rows = []
        try:
            extra = ("--engine", args.engine, "--device", args.device)
            stack.start_worker("tiny", model_dir, slots=slots, extra=extra)
            _, base = stack.start_api()
            if not args.device.startswith("cuda"):
                limit_cpu_threads(0)  # the same threads the worker process uses
            engine = create_engine(args.engine, args.device, max_batch=slots, max_seq_len=2048)
            engine.load(model_dir)
            for c in args.concurrency:
                local, remote = measure(engine, base, c, args.max_tokens, rounds(c))
                rows.append((c, local, remote))
            engine.unload()
        finally:
            stack.stop()
            server.stop()
    print_table(rows, args)


def print_table(rows: list[tuple[int, Run, Run]], args: argparse.Namespace) -> None:
    machine = f"{platform.node()} ({os.cpu_count()} cores, Python {platform.python_version()})"
    print(f"# bench/stack.py on {machine}")
    print(
        f"# max_tokens={args.max_tokens}, rounds={args.rounds} (at least 32 requests a row), "
        "temperature 1.0, seeded; "
        f"engine {args.engine} on {args.device}, model {args.model_dir or 'tiny'}\n"
    )
    print(
        "| streams | in-process tok/s | stack tok/s | stack ÷ in-process "
        "| TTFT p50 in-proc / stack (ms) | TTFT p99 in-proc / stack (ms) "
        "| added TTFT p50 / p99 (ms) |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for c, local, remote in rows:
        p50, p99 = (local.pct(0.5), remote.pct(0.5)), (local.pct(0.99), remote.pct(0.99))
        print(
            f"| {c} | {local.tok_s:,.0f} | {remote.tok_s:,.0f} | {remote.tok_s / local.tok_s:.2f} "
            f"| {p50[0]:.1f} / {p50[1]:.1f} | {p99[0]:.1f} / {p99[1]:.1f} "
            f"| {p50[1] - p50[0]:+.1f} / {p99[1] - p99[0]:+.1f} |"
        )


if __name__ == "__main__":
    main()
