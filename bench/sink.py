"""The worker sink's cost per flush, and what logging token ids beside each event adds.

    .venv/bin/python bench/sink.py [--jobs 32] [--flushes 400] [--rounds 6]

One real redis-server (started here, no AOF). Each flush writes one token event and one
field for each of ``--jobs`` running jobs and reads their cancel flags: what the worker's
writer thread does once per scheduler iteration. Rounds alternate between entries with
their token ids (as the worker writes them, for exact resume) and without, and it prints
the median flush time of each and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocol.events import TokenEvent  # noqa: E402
from protocol.keys import job_key  # noqa: E402
from uml.redis_server import start_redis  # noqa: E402
from workers import sink  # noqa: E402
from workers.sink import JobWrite, RedisSink  # noqa: E402


def flushes(writer: RedisSink, jobs: list[str], first_seq: int, count: int) -> list[float]:
    times = []
    for seq in range(first_seq, first_seq + count):
        writes = [
            JobWrite(
                j,
                [TokenEvent(seq=seq, text="x")],
                {"completion_tokens": seq},
                False,
                1,
                {seq: [1234]},
            )
            for j in jobs
        ]
        start = time.perf_counter()
        writer.flush(writes, jobs)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=32)
    parser.add_argument("--flushes", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    server = start_redis(Path(tempfile.mkdtemp()) / "redis", appendonly=False)
    client = redis.Redis.from_url(server.url)
    try:
        writer = RedisSink(client, retention_s=600)
        jobs = [f"bench-{i}" for i in range(args.jobs)]
        for job_id in jobs:
            client.hset(job_key(job_id), mapping={"attempt": 1, "status": "running"})
        with_ids = sink._ids_text
        medians: dict[bool, list[float]] = {True: [], False: []}
        seq = 1
        for _ in range(args.rounds):
            for ids in (False, True):
                sink._ids_text = with_ids if ids else (lambda _ids: "")  # type: ignore[assignment]
                medians[ids].append(statistics.median(flushes(writer, jobs, seq, args.flushes)))
                seq += args.flushes
        sink._ids_text = with_ids  # type: ignore[assignment]
        without, with_ = (statistics.median(medians[k]) * 1e6 for k in (False, True))
        print(f"flush of {args.jobs} jobs, median of {args.rounds} rounds x {args.flushes}:")
        print(f"  without token ids {without:.0f} us, with {with_:.0f} us: x{with_ / without:.3f}")
    finally:
        client.close()
        server.stop()


if __name__ == "__main__":
    main()
