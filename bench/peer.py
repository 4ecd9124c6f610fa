"""Us against Hugging Face's ``transformers serve`` on the same model directory, in one run.

    .venv/bin/python bench/peer.py [--concurrency 1 8 32] [--max-tokens 64] [--rounds 3]

Needs ``pip install fastapi accelerate`` (the ``bench`` extra) for ``transformers serve``.

Servers, all started here on free ports from one freshly made tiny model directory:

- **uml**: Redis, one worker (``--slots 32``) and one API process: the whole stack.
- **hf**: ``transformers serve DIR`` (its default: one request's ``generate`` at a time).
- **hf-cb**: ``transformers serve DIR --continuous-batching`` (its paged continuous batching).

For each concurrency, each round sends the same ``N`` streaming ``/v1/chat/completions``
requests (same prompts, seeds, ``max_tokens``, temperature 1) to every server in turn, the
order rotating round by round so drift on this noisy machine falls on all of them. It
prints aggregate completion tokens/s (``usage`` of the last chunk, which all of them send)
and time to first content token p50/p99 per server, and our throughput as a multiple of
each peer's. Each server keeps its own defaults (the worker caps torch at cores − 1
threads; ``transformers serve`` uses torch's default), as a user would run them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.sse_client import stream_post  # noqa: E402
from tests.auth import ADMIN_KEY  # noqa: E402
from tests.integration.stack import Stack, wait_for  # noqa: E402
from uml.redis_server import free_port, start_redis  # noqa: E402
from workers.tiny import make_tiny  # noqa: E402


@dataclass
class Run:
    tokens: int = 0
    seconds: float = 0.0
    ttft: list[float] = field(default_factory=list)

    @property
    def tok_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        data = sorted(self.ttft)
        return data[min(len(data) - 1, int(round(q * (len(data) - 1))))] * 1000


@dataclass
class Server:
    name: str
    port: int
    model: str
    proc: subprocess.Popen[bytes] | None = None


async def one(server: Server, text: str, seed: int, max_tokens: int) -> tuple[int, float]:
    payload = json.dumps(
        {
            "model": server.model,
            "messages": [{"role": "user", "content": text}],
            "max_tokens": max_tokens,
            "temperature": 1.0,
            "seed": seed,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    ).encode()
    started = time.perf_counter()
    first: float | None = None
    tokens = chunks = 0
    path = "/v1/chat/completions"
    async for data in stream_post("127.0.0.1", server.port, path, payload, ADMIN_KEY):
        if data == b"[DONE]":
            break
        chunk = json.loads(data)
        for choice in chunk.get("choices") or []:
            if (choice.get("delta") or {}).get("content"):
                chunks += 1
                if first is None:
                    first = time.perf_counter() - started
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
    return tokens or chunks, first if first is not None else time.perf_counter() - started


async def round_(server: Server, n: int, max_tokens: int, r: int) -> Run:
    started = time.perf_counter()
    results = await asyncio.gather(
        *(
            one(server, f"request {r}-{i}: once upon a time", 1000 * r + i, max_tokens)
            for i in range(n)
        )
    )
    return Run(sum(t for t, _ in results), time.perf_counter() - started, [f for _, f in results])


def start_hf(model_dir: Path, name: str, extra: list[str], log_dir: Path) -> Server:
    port = free_port()
    binary = Path(sys.executable).with_name("transformers")
    log = (log_dir / f"{name}.log").open("wb")
    proc = subprocess.Popen(
        [str(binary), "serve", str(model_dir), "--port", str(port), "--device", "cpu", *extra],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = Server(name, port, str(model_dir), proc)

    def up() -> bool:
        assert proc.poll() is None, (log_dir / f"{name}.log").read_text()[-2000:]
        try:
            asyncio.run(one(server, "warm up", 0, 4))
            return True
        except OSError:
            return False

    wait_for(up, 180, f"{name} to answer", interval=0.5)
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip", nargs="*", default=[], help="servers to leave out: hf hf-cb")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir = make_tiny(root / "tiny", seed=0)
        redis = start_redis(root / "redis", appendonly=False)
        stack = Stack(redis_url=redis.url, log_dir=root)
        servers: list[Server] = []
        try:
            stack.start_worker("tiny", model_dir, slots=32)
            _, base = stack.start_api()
            servers.append(Server("uml", int(base.rsplit(":", 1)[1]), "tiny"))
            if "hf" not in args.skip:
                servers.append(start_hf(model_dir, "hf", [], root))
            if "hf-cb" not in args.skip:
                servers.append(start_hf(model_dir, "hf-cb", ["--continuous-batching"], root))
            for server in servers:  # warm every path once
                asyncio.run(round_(server, 4, 8, 0))
            rows: list[tuple[int, dict[str, Run]]] = []
            for n in args.concurrency:
                runs = {s.name: Run() for s in servers}
                for r in range(1, args.rounds + 1):
                    order = servers[r % len(servers) :] + servers[: r % len(servers)]
                    for server in order:
                        got = asyncio.run(round_(server, n, args.max_tokens, r))
                        total = runs[server.name]
                        total.tokens += got.tokens
                        total.seconds += got.seconds
                        total.ttft += got.ttft
                rows.append((n, runs))
                print_row(n, runs, flush=True)
            print_summary(rows, args)
        finally:
            for server in servers:
                if server.proc is not None and server.proc.poll() is None:
                    os.killpg(server.proc.pid, signal.SIGTERM)
                    try:
                        server.proc.wait(15)
                    except subprocess.TimeoutExpired:
                        os.killpg(server.proc.pid, signal.SIGKILL)
            stack.stop()
            redis.stop()


def print_row(n: int, runs: dict[str, Run], flush: bool = False) -> None:
    parts = [
        f"{name}: {run.tok_s:7.0f} tok/s, "
        f"TTFT p50 {run.pct(0.5):6.0f} ms p99 {run.pct(0.99):6.0f} ms"
        for name, run in runs.items()
    ]
    print(f"{n:3d} streams | " + " | ".join(parts), flush=flush)


def print_summary(rows: list[tuple[int, dict[str, Run]]], args: argparse.Namespace) -> None:
    machine = f"{platform.node()} ({os.cpu_count()} cores, Python {platform.python_version()})"
    print(f"\n{machine}; max_tokens {args.max_tokens}, {args.rounds} rounds per concurrency")
    print("| streams | server | tok/s | TTFT p50 ms | TTFT p99 ms | uml ÷ server tok/s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for n, runs in rows:
        ours = runs["uml"].tok_s
        for name, run in runs.items():
            ratio = "" if name == "uml" else f"{ours / run.tok_s:.2f}"
            print(
                f"| {n} | {name} | {run.tok_s:.0f} | {run.pct(0.5):.0f} | {run.pct(0.99):.0f} "
                f"| {ratio} |"
            )


if __name__ == "__main__":
    main()
