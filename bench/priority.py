"""Interactive time-to-first-token on an idle service and behind a batch backlog, in one run.

    .venv/bin/python bench/priority.py [--samples 20] [--batch-jobs 1000] [--slots 16]

Redis, one worker (tiny model, made fresh) and one API are real processes started here.
Phase (a) sends ``--samples`` sequential streaming ``/v1/completions`` requests (the sync
endpoints run at interactive priority) to the idle service. Phase (b) submits
``--batch-jobs`` jobs through ``POST /v1/jobs`` with ``"priority": "batch"`` over a bounded
number of connections, then sends the same interactive requests while they wait. It prints
TTFT p50/p99 of both phases, their ratio, the batch jobs still queued after the last
interactive request, and where the interactive TTFT went, read off the job records.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.http1 import cancel_all, head, list_messages, read_response  # noqa: E402
from bench.sse_client import _body  # noqa: E402
from protocol.keys import job_key  # noqa: E402
from tests.integration.stack import Stack  # noqa: E402
from uml.redis_server import start_redis  # noqa: E402
from workers.tiny import make_tiny  # noqa: E402

MODEL = "tiny"


@dataclass
class Sample:
    """One interactive request: its TTFT and its job's id (from ``x-uml-job-id``)."""

    ttft: float
    job_id: str
    sent_at: float


@dataclass
class Phase:
    samples: list[Sample] = field(default_factory=list)
    queued_before: int = 0
    queued_after: int = 0

    def pct(self, q: float) -> float:
        data = sorted(s.ttft for s in self.samples)
        return data[min(len(data) - 1, int(round(q * (len(data) - 1))))] * 1000


async def interactive(host: str, port: int, seed: int, max_tokens: int) -> Sample:
    """One streaming completion, read to its end; TTFT is time to the first text."""
    body = json.dumps(
        {
            "model": MODEL,
            "prompt": f"interactive {seed}: once upon a time",
            "max_tokens": max_tokens,
            "temperature": 1.0,
            "seed": seed,
            "stream": True,
        }
    ).encode()
    sent_at = time.time()
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(head("POST", "/v1/completions", host, port, body, close=True))
        status, headers = await read_response(reader)
        if status != 200:
            raise RuntimeError(f"interactive request answered {status}")
        chunked = "chunked" in headers.get("transfer-encoding", "")
        first = 0.0
        async for piece in _body(reader, chunked):
            if not first and b'"text":"' in piece and b'"text":""' not in piece:
                first = time.perf_counter() - started
        return Sample(first, headers["x-uml-job-id"], sent_at)
    finally:
        writer.close()


async def submit_batch(
    host: str, port: int, count: int, connections: int, max_tokens: int
) -> list[str]:
    """Submit ``count`` batch jobs over ``connections`` keep-alive connections; their ids."""
    ids: list[str] = []
    todo = iter(range(count))

    async def one_connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for i in todo:
                body = {
                    "type": "completion",
                    "body": {
                        "model": MODEL,
                        "prompt": f"batch {i}: the",
                        "max_tokens": max_tokens,
                        "temperature": 1.0,
                        "seed": i,
                    },
                    "priority": "batch",
                }
                writer.write(
                    head("POST", "/v1/jobs", host, port, json.dumps(body).encode(), False)
                )
                status, headers = await read_response(reader)
                payload = await reader.readexactly(int(headers["content-length"]))
                if status != 202:
                    raise RuntimeError(f"POST /v1/jobs answered {status}: {payload[:200]!r}")
                ids.append(json.loads(payload)["id"])
        finally:
            writer.close()

    await asyncio.gather(*(one_connection() for _ in range(connections)))
    return ids


def running(client: redis.Redis, ids: list[str]) -> int:
    pipe = client.pipeline()
    for job_id in ids:
        pipe.hget(job_key(job_id), "status")
    return sum(1 for s in pipe.execute() if s == b"running")


async def phase(
    host: str,
    port: int,
    samples: int,
    max_tokens: tuple[int, ...],
    client: redis.Redis,
    batch_ids: list[str],
) -> tuple[Phase, list[int]]:
    result, busy = Phase(queued_before=list_messages(client, MODEL)), []
    for i in range(samples):
        if batch_ids:
            busy.append(running(client, batch_ids))
        result.samples.append(
            await interactive(host, port, 10_000 + i, max_tokens[i % len(max_tokens)])
        )
    result.queued_after = list_messages(client, MODEL)
    return result, busy


def stages(client: redis.Redis, samples: list[Sample]) -> dict[str, float]:
    """Median ms of send → queued, queued → claimed, claimed → first token, read off the jobs."""
    parts: dict[str, list[float]] = {
        "send → queued": [],
        "queued → claimed": [],
        "claimed → first token": [],
    }
    for s in samples:
        raw = client.hmget(job_key(s.job_id), ["created_at", "started_at", "first_token_at"])
        created, started, first = (float(v or 0) for v in raw)
        parts["send → queued"].append(created - s.sent_at)
        parts["queued → claimed"].append(started - created)
        parts["claimed → first token"].append(first - started)
    return {k: statistics.median(v) * 1000 for k, v in parts.items()}


async def run(base: str, args: argparse.Namespace, client: redis.Redis) -> dict[str, object]:
    host, port_text = base.removeprefix("http://").split(":")
    port = int(port_text)
    mt = tuple(args.max_tokens)
    for i in range(3):  # warm-up: first forwards, connections, caches
        await interactive(host, port, i, mt[0])
    idle, _ = await phase(host, port, args.samples, mt, client, [])
    started = time.perf_counter()
    ids = await submit_batch(host, port, args.batch_jobs, args.connections, args.batch_max_tokens)
    submit_s = time.perf_counter() - started
    loaded, busy = await phase(host, port, args.samples, mt, client, ids)
    loaded_s = time.perf_counter() - started - submit_s
    report = {
        "idle": idle,
        "loaded": loaded,
        "submit_s": submit_s,
        "loaded_s": loaded_s,
        "busy": busy,
        "stages_idle": stages(client, idle.samples),
        "stages_loaded": stages(client, loaded.samples),
    }
    await cancel_all(host, port, ids, args.connections)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=20, help="interactive requests per phase")
    parser.add_argument(
        "--max-tokens", type=int, nargs="+", default=[16, 8], help="interactive max_tokens, cycled"
    )
    parser.add_argument("--batch-jobs", type=int, default=1000)
    parser.add_argument("--batch-max-tokens", type=int, default=8)
    parser.add_argument("--connections", type=int, default=16, help="for submitting batch jobs")
    parser.add_argument("--slots", type=int, default=16, help="the worker's --slots")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_tiny(Path(tmp) / "tiny", seed=0)
        server = start_redis(Path(tmp) / "redis", appendonly=True)
        stack = Stack(redis_url=server.url, log_dir=Path(tmp))
        client = redis.Redis.from_url(server.url)
        try:
            stack.start_worker(MODEL, model_dir, slots=args.slots)
            _, base = stack.start_api()
            report = asyncio.run(run(base, args, client))
        finally:
            client.close()
            stack.stop()
            server.stop()
    print_report(report, args)


def print_report(r: dict[str, object], args: argparse.Namespace) -> None:
    idle, loaded = r["idle"], r["loaded"]
    assert isinstance(idle, Phase) and isinstance(loaded, Phase)
    machine = f"{platform.node()} ({os.cpu_count()} cores, Python {platform.python_version()})"
    print(f"# bench/priority.py on {machine}")
    print(
        f"# {args.samples} sequential interactive streams per phase (max_tokens {args.max_tokens}"
        f" cycled); {args.batch_jobs} batch jobs of max_tokens={args.batch_max_tokens} submitted "
        f"over {args.connections} connections in {r['submit_s']:.1f} s; worker slots "
        f"{args.slots}; torch on CPU, model tiny\n"
    )
    print(
        "| idle TTFT p50 / p99 (ms) | loaded TTFT p50 / p99 (ms) | loaded ÷ idle p50 / p99 "
        "| batch queued at start / end of (b) |"
    )
    print("| ---: | ---: | ---: | ---: |")
    print(
        f"| {idle.pct(0.5):.1f} / {idle.pct(0.99):.1f} | {loaded.pct(0.5):.1f} / "
        f"{loaded.pct(0.99):.1f} | {loaded.pct(0.5) / idle.pct(0.5):.2f} / "
        f"{loaded.pct(0.99) / idle.pct(0.99):.2f} "
        f"| {loaded.queued_before} / {loaded.queued_after} |"
    )
    busy = r["busy"]
    assert isinstance(busy, list)
    print(
        f"\nphase (b) took {r['loaded_s']:.1f} s; batch jobs running when each interactive "
        f"request was sent: median {statistics.median(busy):.0f} of {args.slots} slots"
    )
    done = loaded.queued_before - loaded.queued_after
    loaded_s = r["loaded_s"]
    assert isinstance(loaded_s, float)
    tok_s = done * args.batch_max_tokens / loaded_s
    print(
        f"batch work during (b): ~{done / loaded_s:.0f} jobs/s, ~{tok_s:.0f} tok/s if each ran "
        f"to max_tokens, ~{1000 * args.slots / tok_s:.0f} ms per engine step at {args.slots} "
        "busy slots\n"
    )
    si, sl = r["stages_idle"], r["stages_loaded"]
    assert isinstance(si, dict) and isinstance(sl, dict)
    print("| interactive stage, median (ms) | idle | loaded |")
    print("| --- | ---: | ---: |")
    for name in si:
        print(f"| {name} | {si[name]:.1f} | {sl[name]:.1f} |")


if __name__ == "__main__":
    main()
