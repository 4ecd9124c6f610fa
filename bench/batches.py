"""What the batch runner costs: N requests as one batch against the same N as ``/v1/jobs``.

    .venv/bin/python bench/batches.py [--requests 400] [--max-tokens 16] [--rounds 3]

Redis, one worker (tiny model, made fresh) and one API are real processes started here.
Each round runs both ways, alternating which goes first, on the same stack:

- *jobs*: submit every request with ``POST /v1/jobs`` (``priority: batch``) over 8
  connections, then poll the listing until every job is terminal;
- *batch*: upload the same requests as a JSONL file, create a batch, poll it until it is
  ``completed`` and download the output file.

It prints the wall time of each (submission to last result) and their ratio per round and
overall: the batch's overhead is its validation, its ``inflight`` window and its runner
tick, against the same jobs submitted directly.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.auth import ADMIN_KEY  # noqa: E402
from tests.integration.stack import Stack  # noqa: E402
from uml.redis_server import start_redis  # noqa: E402
from workers.tiny import make_tiny  # noqa: E402

MODEL = "tiny"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


def body(i: int, max_tokens: int) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"request {i}"}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "seed": i,
    }


def run_jobs(base: str, n: int, max_tokens: int) -> float:
    start = time.perf_counter()
    with httpx.Client(base_url=base, headers=AUTH, timeout=60) as http:

        def submit(i: int) -> str:
            job = {"type": "chat", "body": body(i, max_tokens), "priority": "batch"}
            response = http.post("/v1/jobs", json=job)
            response.raise_for_status()
            return str(response.json()["id"])

        with ThreadPoolExecutor(8) as pool:
            ids = set(pool.map(submit, range(n)))
        while ids:
            for job_id in list(ids)[:200]:
                if http.get(f"/v1/jobs/{job_id}").json()["status"] in (
                    "succeeded",
                    "failed",
                    "cancelled",
                    "expired",
                ):
                    ids.discard(job_id)
            if ids:
                time.sleep(0.05)
    return time.perf_counter() - start


def run_batch(base: str, n: int, max_tokens: int) -> float:
    lines = [
        {
            "custom_id": f"r{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": body(i, max_tokens),
        }
        for i in range(n)
    ]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    start = time.perf_counter()
    with httpx.Client(base_url=base, headers=AUTH, timeout=60) as http:
        made = http.post(
            "/v1/files", files={"file": ("b.jsonl", io.BytesIO(data))}, data={"purpose": "batch"}
        ).json()
        batch = http.post(
            "/v1/batches",
            json={"input_file_id": made["id"], "endpoint": "/v1/chat/completions"},
        ).json()
        while batch["status"] not in ("completed", "failed", "cancelled", "expired"):
            time.sleep(0.05)
            batch = http.get(f"/v1/batches/{batch['id']}").json()
        assert batch["status"] == "completed", batch
        assert batch["request_counts"]["completed"] == n, batch
        http.get(f"/v1/files/{batch['output_file_id']}/content").raise_for_status()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--slots", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server = start_redis(root / "redis", appendonly=False)
        stack = Stack(redis_url=server.url, log_dir=root)
        try:
            stack.start_worker(MODEL, make_tiny(root / "tiny", seed=0), slots=args.slots)
            _, base = stack.start_api()
            run_jobs(base, 16, args.max_tokens)  # warm both paths
            run_batch(base, 16, args.max_tokens)
            ratios = []
            for r in range(args.rounds):
                order = ("jobs", "batch") if r % 2 == 0 else ("batch", "jobs")
                took: dict[str, float] = {}
                for way in order:
                    run = run_jobs if way == "jobs" else run_batch
                    took[way] = run(base, args.requests, args.max_tokens)
                ratios.append(took["batch"] / took["jobs"])
                print(
                    f"round {r + 1}: jobs {took['jobs']:.2f} s, batch {took['batch']:.2f} s, "
                    f"batch/jobs {ratios[-1]:.2f}",
                    flush=True,
                )
            print(
                f"{args.requests} requests x {args.max_tokens} tokens, {args.slots} slots: "
                f"batch/jobs wall time median {statistics.median(ratios):.2f}"
            )
        finally:
            stack.stop()
            server.stop()


if __name__ == "__main__":
    main()
