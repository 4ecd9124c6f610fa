"""Load on one API process: fire-and-forget submissions per second, then thousands of open
SSE streams fed at a steady event rate, with relay delay and memory per stream.

    .venv/bin/python bench/load.py [--streams 2000] [--submit 4000] [--rate 4000] [--seconds 10]

Redis and one API process (``uml serve``) are real processes started here; no worker runs.
The model is announced by a fake heartbeat, so the submitted jobs stay queued and their
event logs are written by this benchmark's *producer* process exactly as a worker's sink
writes them (``XADD uml:job:{id}:events {seq}-1 data <event JSON>``), each token's text
being the producer's clock at the append. That isolates what this bench measures: the path
append → Redis → the API's relay (one XREAD for every stream) → SSE → client.

1. **Submissions**: ``--submit`` ``POST /v1/jobs`` over 32 keep-alive connections (raw
   HTTP/1.1, so the client is not the bottleneck); jobs per second.
2. **Streams**: ``GET /v1/jobs/{id}/events`` on ``--streams`` of those jobs, all open at
   once; the API's RSS before and after, per stream.
3. **Relay delay**: the producer appends ``--rate`` token events per second spread over every
   stream for ``--seconds``, then a ``done`` event per job; each client records receive
   time − append time (one clock: same host). p50/p99/max, and events lost (must be 0).

Per-key limits are off (``UML_LIMIT_ENABLED=false``): this measures the API, not the limits.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocol.events import DoneEvent, TokenEvent, encode_event  # noqa: E402
from protocol.keys import EVENT_FIELD, entry_id, events_key  # noqa: E402
from protocol.openai import Usage  # noqa: E402
from tests.auth import ADMIN_KEY  # noqa: E402
from tests.integration.stack import Stack, announce_model  # noqa: E402
from uml.redis_server import start_redis  # noqa: E402

MODEL = "parked"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, int | None, bool]:
    status = int((await reader.readline()).split()[1])
    length, chunked = None, False
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    return status, length, chunked


async def submit_all(host: str, port: int, n: int, connections: int) -> tuple[list[str], float]:
    body = msgspec.json.encode(
        {"type": "completion", "body": {"model": MODEL, "prompt": "x", "max_tokens": 4}}
    )
    head = (
        f"POST /v1/jobs HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {ADMIN_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    ids: list[str] = []
    counter = iter(range(n))

    async def one() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for _ in counter:
                writer.write(head + body)
                status, length, _ = await _read_head(reader)
                payload = await reader.readexactly(length or 0)
                if status != 202:
                    raise RuntimeError(f"submission answered {status}: {payload[:200]!r}")
                ids.append(msgspec.json.decode(payload)["id"])
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(connections)))
    return ids, time.perf_counter() - start


class Follower:
    """One SSE stream: delays of token events, and whether it saw its ``done``."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.seqs: list[int] = []
        self.done = False
        self.connected = asyncio.Event()

    async def run(self, host: str, port: int, job_id: str) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(
                f"GET /v1/jobs/{job_id}/events HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: Bearer {ADMIN_KEY}\r\nAccept: text/event-stream\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            status, length, chunked = await _read_head(reader)
            if status != 200 or not chunked:
                detail = await reader.read(length or 4096)
                raise RuntimeError(f"events answered {status}: {detail[:300]!r}")
            self.connected.set()
            pending = b""
            while True:
                size = int((await reader.readline()).split(b";")[0], 16)
                if size == 0:
                    return
                pending += await reader.readexactly(size)
                await reader.readexactly(2)
                *events, pending = pending.split(b"\n\n")
                now = time.time_ns()
                for event in events:
                    for field in event.split(b"\n"):
                        if not field.startswith(b"data: "):
                            continue
                        data = msgspec.json.decode(field[6:])
                        self.seqs.append(data["seq"])
                        if data["type"] == "token":
                            self.delays.append((now - int(data["text"])) / 1e6)
                        elif data["type"] == "done":
                            self.done = True
                            return
        finally:
            writer.close()


def produce(url: str, job_ids: list[str], rate: int, seconds: float, ready: mp.Event) -> None:
    """Append token events round-robin at ``rate``/s for ``seconds``, then a done per job."""
    client = redis.Redis.from_url(url)
    ready.wait()
    seq = {job_id: 0 for job_id in job_ids}
    batch = max(1, rate // 100)  # one pipeline every 10 ms
    start = time.perf_counter()
    sent = 0
    index = 0
    while time.perf_counter() - start < seconds:
        with client.pipeline(transaction=False) as pipe:
            for _ in range(batch):
                job_id = job_ids[index % len(job_ids)]
                index += 1
                seq[job_id] += 1
                event = TokenEvent(seq=seq[job_id], text=str(time.time_ns()))
                pipe.xadd(
                    events_key(job_id), {EVENT_FIELD: encode_event(event)}, id=entry_id(seq[job_id])
                )
            pipe.execute()
        sent += batch
        ahead = sent / rate - (time.perf_counter() - start)
        if ahead > 0:
            time.sleep(ahead)
    usage = Usage(prompt_tokens=1, completion_tokens=1, total_tokens=2)
    with client.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            seq[job_id] += 1
            done = DoneEvent(seq=seq[job_id], finish_reason="stop", usage=usage)
            pipe.xadd(
                events_key(job_id), {EVENT_FIELD: encode_event(done)}, id=entry_id(seq[job_id])
            )
        pipe.execute()
    client.close()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(args: argparse.Namespace, stack: Stack, redis_url: str) -> None:
    proc, base = stack.start_api()
    host, port = "127.0.0.1", int(base.rsplit(":", 1)[1])
    pid = proc.process.pid
    client = redis.Redis.from_url(redis_url)
    announce_model(client, "bench-parked", MODEL, ttl_s=3600)

    await submit_all(host, port, 200, 8)  # warm up
    ids, took = await submit_all(host, port, args.submit, 32)
    print(f"submissions: {len(ids)} in {took:.2f} s = {len(ids) / took:,.0f}/s (32 connections)")

    streams = ids[: args.streams]
    rss_before = rss_kib(pid)
    followers = [Follower() for _ in streams]
    tasks = [
        asyncio.create_task(f.run(host, port, j)) for f, j in zip(followers, streams, strict=True)
    ]
    opened = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(f.connected.wait() for f in followers)), 120)
    await asyncio.sleep(1)
    rss_open = rss_kib(pid)
    per_stream = (rss_open - rss_before) / len(streams)
    print(
        f"streams: {len(streams)} open in {time.perf_counter() - opened:.1f} s; API RSS "
        f"{rss_before / 1024:.0f} -> {rss_open / 1024:.0f} MiB = {per_stream:.1f} KiB per stream"
    )

    ready = mp.Event()
    producer = mp.Process(
        target=produce, args=(redis_url, streams, args.rate, args.seconds, ready), daemon=True
    )
    producer.start()
    ready.set()
    await asyncio.wait_for(asyncio.gather(*tasks), args.seconds + 120)
    producer.join(10)
    delays = [d for f in followers for d in f.delays]
    lost = sum(1 for f in followers if f.seqs != list(range(1, len(f.seqs) + 1)) or not f.done)
    print(
        f"relay delay over {len(delays):,} token events ({args.rate:,}/s across "
        f"{len(streams)} streams for {args.seconds:.0f} s): "
        f"p50 {statistics.median(delays):.1f} ms, p99 {pct(delays, 0.99):.1f} ms, "
        f"max {max(delays):.1f} ms; streams with a gap or no end: {lost}"
    )
    print(f"API RSS at the end: {rss_kib(pid) / 1024:.0f} MiB; cpus: {os.cpu_count()}")
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--submit", type=int, default=4000)
    parser.add_argument("--rate", type=int, default=4000, help="token events per second, total")
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    args.submit = max(args.submit, args.streams)
    with tempfile.TemporaryDirectory() as tmp:
        server = start_redis(Path(tmp) / "redis", appendonly=False)
        env = {
            "UML_LIMIT_ENABLED": "false",
            "UML_MAX_QUEUED_PER_MODEL": str(args.submit + 1000),
            "UML_MODELS_CACHE_S": "60",
        }
        stack = Stack(redis_url=server.url, log_dir=Path(tmp), extra_env=env)
        try:
            asyncio.run(run(args, stack, server.url))
        finally:
            stack.stop()
            server.stop()


if __name__ == "__main__":
    main()
