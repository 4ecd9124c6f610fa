"""One key cannot starve the others: before and after, side by side in one run.

    .venv/bin/python bench/fairness.py [--before DIR] [--streams 30] [--keys 3] [--slots 16]
        [--long-tokens 1200] [--rounds 2] [--bound 1000]

``--before DIR`` names a checkout of an earlier tree (``git worktree add /tmp/before 8da9d2b``):
its processes are started from DIR first, then this tree's, each on a fresh Redis, one tiny
model worker (``--slots``) and one API; the load and the measurements are the same code.

(a) **Slots.** ``--streams`` long streaming completions (``max_tokens=--long-tokens``) from
``--keys`` keys, interleaved, fill the worker; once it is busy, one more key sends one
4-token streaming request: its time to first token and to its end, and how many long
streams had ended before its first token. ``--rounds`` times, each on a fresh load. The
tiny model's random weights draw its end-of-text token about once in 300 (so a "long"
stream runs ~300 tokens, a few seconds here): the worker turns over as streams end, and
the 4-token request waits, before, until every stream queued ahead of it has started.

(b) **Queue bounds** (``UML_MAX_QUEUED_PER_MODEL`` = ``UML_MAX_QUEUED_BATCH_PER_MODEL`` =
``--bound``). A hog key submits batch jobs through ``POST /v1/jobs`` until refused; then a
second key submits an interactive job and opens a streaming chat (the answers' statuses);
what the bound counts is sampled every 2 ms (before: messages in the model's lists; after:
live queued batch jobs). Then, while a third key keeps ``--slots`` + 8 streams open (the
worker busy, interactive work waiting), the hog fills the batch queue to its bound through
an API whose per-key share is the whole queue (``UML_QUEUE_SHARE_PER_KEY=1``), cancels
every job and submits again at once: how many are admitted (in the issue ~10k cancelled
messages held the bound for ~60 s, until workers had popped them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import msgspec
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.http1 import cancel_all, head, list_messages, read_response  # noqa: E402
from bench.sse_client import _body  # noqa: E402
from protocol.keys import (  # noqa: E402
    WORKERS_SET,
    job_key,
    worker_key,
)
from protocol.queued import live_key  # noqa: E402
from protocol.states import Priority  # noqa: E402
from protocol.workers import WorkerInfo  # noqa: E402
from tests.auth import AUTH  # noqa: E402
from tests.integration.stack import Stack, wait_for  # noqa: E402
from uml.redis_server import start_redis  # noqa: E402
from workers.tiny import make_tiny  # noqa: E402

MODEL = "tiny"
HOST = "127.0.0.1"
HERE = Path(__file__).resolve().parents[1]


@dataclass
class Probe:
    ttft: float
    total: float
    long_done_before: int
    """Long streams that had ended before the probe's first token."""


@dataclass
class Queue:
    admitted: int = 0
    refused_with: int = 0
    other_interactive: int = 0
    other_sync_chat: int = 0
    max_queued: int = 0
    bound: int = 0
    room_after_cancel: int = 0


@dataclass
class TreeReport:
    name: str
    idle: list[Probe] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    queue: Queue = field(default_factory=Queue)


# ---- a lean HTTP client (see bench/sse_client.py: httpx costs ~4 ms of CPU a request) ------


def completion(prompt: str, max_tokens: int, seed: int, stream: bool = True) -> bytes:
    body = {
        "model": MODEL,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 1.0,
        "seed": seed,
        "stream": stream,
    }
    return json.dumps(body).encode()


@dataclass
class Stream:
    """One streaming completion read to its end (or until cancelled)."""

    job_id: str = ""
    first: float = 0.0
    ended: float = 0.0
    started: float = field(default_factory=time.perf_counter)


async def stream(port: int, key: str, body: bytes, out: Stream) -> Stream:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(head("POST", "/v1/completions", HOST, port, body, True, key))
        status, headers = await read_response(reader)
        if status != 200:
            raise RuntimeError(f"streaming request answered {status}")
        out.job_id = headers.get("x-uml-job-id", "")
        chunked = "chunked" in headers.get("transfer-encoding", "")
        async for piece in _body(reader, chunked):
            if not out.first and b'"text":"' in piece and b'"text":""' not in piece:
                out.first = time.perf_counter()
        out.ended = time.perf_counter()
        return out
    finally:
        writer.close()


async def status_of(port: int, key: str, method: str, path: str, body: bytes) -> int:
    """The status of one request (a streaming answer is closed at its headers)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(head(method, path, HOST, port, body, True, key))
        status, _ = await read_response(reader)
        return status
    finally:
        writer.close()


async def submit_until_refused(
    port: int, key: str, connections: int, limit: int
) -> tuple[list[str], int]:
    """Batch jobs through ``POST /v1/jobs`` until the first refusal: their ids and its status."""
    ids: list[str] = []
    refused: list[int] = []

    async def one_connection(n: int) -> None:
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            i = n
            while not refused and len(ids) < limit:
                body = {
                    "type": "completion",
                    "body": json.loads(completion(f"batch {i}: the", 64, i, stream=False)),
                    "priority": "batch",
                }
                payload = json.dumps(body).encode()
                writer.write(head("POST", "/v1/jobs", HOST, port, payload, False, key))
                status, headers = await read_response(reader)
                answer = await reader.readexactly(int(headers["content-length"]))
                if status != 202:
                    refused.append(status)
                    return
                ids.append(json.loads(answer)["id"])
                i += connections
        finally:
            writer.close()

    await asyncio.gather(*(one_connection(n) for n in range(connections)))
    return ids, refused[0] if refused else 0


def statuses(client: redis.Redis, ids: list[str]) -> list[bytes | None]:
    pipe = client.pipeline(transaction=False)
    for job_id in ids:
        pipe.hget(job_key(job_id), "status")
    return list(pipe.execute())


def worker_active(client: redis.Redis) -> int:
    total = 0
    for raw in client.smembers(WORKERS_SET):
        info = client.get(worker_key(raw.decode()))
        if info:
            total += msgspec.json.decode(info, type=WorkerInfo).active
    return total


class Sampler:
    """Samples, every 2 ms, what the tree's bound on the hog's batch jobs counts: the messages
    in the model's lists (before), or its live queued batch jobs (after: protocol.queued)."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.client.close()

    def count(self) -> int:
        live = live_key(Priority.BATCH, MODEL)
        if self.client.exists(live):
            return int(self.client.zcard(live))
        return list_messages(self.client, MODEL)

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self.most = max(self.most, self.count())


# ---- the scenarios -------------------------------------------------------------------------


async def make_keys(base: str, n: int) -> list[str]:
    async with httpx.AsyncClient(base_url=base, headers=AUTH, timeout=30) as http:
        keys = []
        for i in range(n):
            limits = {"rpm": 1_000_000, "rph": 10_000_000, "burst": 100_000}
            made = await http.post("/admin/keys", json={"name": f"bench-{i}", **limits})
            made.raise_for_status()
            keys.append(made.json()["key"])
        return keys


async def probe(port: int, key: str, seed: int, longs: list[Stream]) -> Probe:
    got = await stream(port, key, completion(f"probe {seed}: hello", 4, seed), Stream())
    first = got.first or got.ended
    long_done = sum(1 for s in longs if s.ended and s.ended < first)
    return Probe(first - got.started, got.ended - got.started, long_done)


async def slots_round(
    port: int, url: str, keys: list[str], args: argparse.Namespace, seed: int
) -> Probe:
    client = redis.Redis.from_url(url)
    longs = [Stream() for _ in range(args.streams)]
    tasks = []
    for i, s in enumerate(longs):
        body = completion(f"long {seed}-{i}: once upon a time", args.long_tokens, seed + i)
        tasks.append(asyncio.create_task(stream(port, keys[i % args.keys], body, s)))
        await asyncio.sleep(0.005)  # the keys' requests arrive interleaved
    busy = args.slots - args.slots // 8  # what either tree fills before the probe

    def loaded() -> bool:
        ids = [s.job_id for s in longs if s.job_id]
        running = sum(1 for st in statuses(client, ids) if st == b"running")
        return len(ids) == len(longs) and running >= min(busy, len(longs))

    try:
        await asyncio.to_thread(wait_for, loaded, 120, "the long streams to start")
        result = await probe(port, keys[args.keys], seed, longs)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.to_thread(
            wait_for, lambda: worker_active(client) == 0, 120, "the worker to drain", 0.1
        )
        client.close()
    return result


async def queue_scenario(
    ports: tuple[int, int], url: str, keys: list[str], args: argparse.Namespace
) -> Queue:
    """(b): the hog fills; another key is admitted or not; cancelled jobs free room or not."""
    port, whole_share_port = ports
    hog, other = keys[0], keys[1]
    q = Queue(bound=args.bound)
    ids: list[str] = []
    with Sampler(url) as sampler:
        got, q.refused_with = await submit_until_refused(port, hog, 8, 10 * args.bound)
        ids += got
        q.admitted = len(got)
        job = {
            "type": "completion",
            "body": json.loads(completion("other: hi", 4, 1, stream=False)),
            "priority": "interactive",
        }
        q.other_interactive = await status_of(
            port, other, "POST", "/v1/jobs", json.dumps(job).encode()
        )
        chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        q.other_sync_chat = await status_of(
            port,
            other,
            "POST",
            "/v1/chat/completions",
            json.dumps({**chat, "stream": True}).encode(),
        )
        await asyncio.sleep(1.0)  # keep sampling while the worker cycles the backlog
        q.max_queued = sampler.most
        await cancel_all(HOST, port, ids, 8, hog)
    q.room_after_cancel = await readmission(whole_share_port, keys, args)
    return q


async def interactive_load(port: int, key: str, width: int, stop: asyncio.Event) -> None:
    """Keep ``width`` streaming completions of ``key`` open (a new one as each ends)."""

    async def lane(n: int) -> None:
        i = 0
        while not stop.is_set():
            body = completion(f"load {n}-{i}: once upon a time", 1200, 10_000 * n + i)
            with contextlib.suppress(RuntimeError, OSError):
                await stream(port, key, body, Stream())
            i += 1

    lanes = [asyncio.create_task(lane(n)) for n in range(width)]
    await stop.wait()
    for task in lanes:
        task.cancel()
    await asyncio.gather(*lanes, return_exceptions=True)


async def readmission(port: int, keys: list[str], args: argparse.Namespace) -> int:
    """With the worker busy with another key's streams (and more of them waiting), the hog
    fills the batch queue to its bound through an API whose per-key share is the whole
    queue, cancels every job, and submits again at once: how many are admitted."""
    hog, busy = keys[0], keys[2]
    stop = asyncio.Event()
    load = asyncio.create_task(interactive_load(port, busy, args.slots + 8, stop))
    try:
        await asyncio.sleep(2.0)  # the load fills the worker
        got, _ = await submit_until_refused(port, hog, 8, 10 * args.bound)
        await cancel_all(HOST, port, got, 8, hog)
        again, _ = await submit_until_refused(port, hog, 8, 10 * args.bound)
        await cancel_all(HOST, port, again, 8, hog)
        return len(again)
    finally:
        stop.set()
        await load


async def scenarios(
    ports: tuple[int, int], base: str, url: str, args: argparse.Namespace, name: str
) -> TreeReport:
    report = TreeReport(name)
    keys = await make_keys(base, args.keys + 1)
    for i in range(3):
        report.idle.append(await probe(ports[0], keys[args.keys], 100 + i, []))
    for r in range(args.rounds):
        report.probes.append(await slots_round(ports[0], url, keys, args, 1000 * (r + 1)))
    report.queue = await queue_scenario(ports, url, keys, args)
    return report


def run_tree(tree: Path, name: str, args: argparse.Namespace) -> TreeReport:
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_tiny(Path(tmp) / "tiny", seed=0)
        server = start_redis(Path(tmp) / "redis", appendonly=False)
        bound = str(args.bound)
        env = {
            "PYTHONPATH": str(tree),
            "UML_LIMIT_MAX_STREAMS": str(4 * args.streams),
            "UML_MAX_QUEUED_PER_MODEL": bound,
            "UML_MAX_QUEUED_BATCH_PER_MODEL": bound,
        }
        stack = Stack(redis_url=server.url, log_dir=Path(tmp), extra_env=env)
        here = os.getcwd()
        os.chdir(tree)  # ``python -m uml.cli`` imports from its working directory first
        try:
            stack.start_worker(MODEL, model_dir, slots=args.slots)
            _, base = stack.start_api()
            stack.extra_env["UML_QUEUE_SHARE_PER_KEY"] = "1"
            _, whole = stack.start_api()
            ports = (int(base.rsplit(":", 1)[1]), int(whole.rsplit(":", 1)[1]))
            return asyncio.run(scenarios(ports, base, server.url, args, name))
        finally:
            os.chdir(here)
            stack.stop()
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--before", type=Path, help="a checkout of the tree to compare with")
    parser.add_argument("--streams", type=int, default=30, help="long streams, all keys")
    parser.add_argument("--keys", type=int, default=3, help="keys the long streams come from")
    parser.add_argument("--slots", type=int, default=16, help="the worker's --slots")
    parser.add_argument("--long-tokens", type=int, default=1200, help="max_tokens of a long one")
    parser.add_argument("--rounds", type=int, default=2, help="probes, each on a fresh load")
    parser.add_argument("--bound", type=int, default=1000, help="queued jobs per model bound")
    args = parser.parse_args()
    reports = []
    if args.before:
        reports.append(run_tree(args.before.resolve(), "before", args))
    reports.append(run_tree(HERE, "after", args))
    print_report(reports, args)


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:,.0f}"


def print_report(reports: list[TreeReport], args: argparse.Namespace) -> None:
    machine = f"{platform.node()} ({os.cpu_count()} cores, Python {platform.python_version()})"
    print(f"# bench/fairness.py on {machine}")
    print(
        f"# (a) {args.streams} streams of max_tokens={args.long_tokens} from {args.keys} keys, "
        f"worker slots {args.slots}, {args.rounds} rounds; probe: a 4-token streaming "
        f"completion from another key. (b) bound {args.bound} queued jobs per model.\n"
    )
    print(
        "| tree | idle probe TTFT (ms) | loaded probe TTFT (ms) | loaded probe total (ms) "
        "| loaded ÷ idle TTFT | long streams ended before its first token |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in reports:
        idle = statistics.median(p.ttft for p in r.idle)
        loaded = statistics.median(p.ttft for p in r.probes)
        ended = statistics.median(p.long_done_before for p in r.probes)
        print(
            f"| {r.name} | {_ms([p.ttft for p in r.idle])} | {_ms([p.ttft for p in r.probes])} "
            f"| {_ms([p.total for p in r.probes])} | {loaded / idle:,.1f} "
            f"| {ended:g} |"
        )
    if len(reports) == 2:
        before, after = (statistics.median(p.ttft for p in r.probes) for r in reports)
        print(f"\nloaded probe TTFT, before ÷ after: {before / after:,.1f}")
    print(
        "\n| tree | hog admitted, then | other key: interactive job / streaming chat "
        "| most jobs queued (bound) | hog admitted again right after cancelling all |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in reports:
        q = r.queue
        print(
            f"| {r.name} | {q.admitted}, then {q.refused_with} | {q.other_interactive} / "
            f"{q.other_sync_chat} | {q.max_queued} ({q.bound}) | {q.room_after_cancel} |"
        )


if __name__ == "__main__":
    main()
