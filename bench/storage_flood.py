"""One key floods ``/v1/files``: what is stored, and what Redis memory it takes.

    .venv/bin/python bench/storage_flood.py [--files 12] [--mib 48]

Starts its own Redis and API (no worker), makes a user key, and uploads ``--files`` files
of ``--mib`` MiB twice over: first *junk* (one line of ``x``, which the upload check of old
let through), then valid JSONL request lines. For each it prints how many were accepted,
the answers to the others, the wall time and Redis's ``used_memory`` before and after.
The quota and caps are the environment's (``UML_BATCH_QUOTA_BYTES`` and friends).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.auth import AUTH  # noqa: E402
from tests.integration.stack import Stack  # noqa: E402
from uml.redis_server import start_redis  # noqa: E402


def junk(size: int) -> bytes:
    return b"x" * (size - 1) + b"\n"


def requests(size: int) -> bytes:
    body = {"model": "tiny", "messages": [{"role": "user", "content": "x" * 900}]}
    lines, total, n = [], 0, 0
    while total < size - 2048:
        line = json.dumps(
            {"custom_id": f"r{n}", "method": "POST", "url": "/v1/chat/completions", "body": body}
        ).encode()
        lines.append(line)
        total += len(line) + 1
        n += 1
    return b"\n".join(lines) + b"\n"


def flood(url: str, key: str, store: redis.Redis, content: bytes, files: int) -> str:
    before = int(store.info("memory")["used_memory"])
    answers: Counter[str] = Counter()
    started = time.perf_counter()
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as c:
        for _ in range(files):
            r = c.post("/v1/files", files={"file": ("f.jsonl", content)}, data={"purpose": "batch"})
            code = "" if r.status_code == 200 else f" {r.json()['error'].get('code')}"
            answers[f"{r.status_code}{code}"] += 1
    took = time.perf_counter() - started
    after = int(store.info("memory")["used_memory"])
    return (
        f"{answers.get('200', 0)}/{files} accepted in {took:.1f} s, answers {dict(answers)}; "
        f"Redis used_memory {before / 2**20:.0f} -> {after / 2**20:.0f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=12)
    parser.add_argument("--mib", type=int, default=48)
    args = parser.parse_args()
    size = args.mib * 1024 * 1024
    with tempfile.TemporaryDirectory() as tmp:
        server = start_redis(Path(tmp) / "redis", appendonly=False)
        stack = Stack(redis_url=server.url, log_dir=Path(tmp))
        store = redis.Redis.from_url(server.url)
        try:
            _, url = stack.start_api()
            made = httpx.post(f"{url}/admin/keys", json={"name": "flood"}, headers=AUTH)
            key = made.json()["key"]
            for name, content in (("junk", junk(size)), ("jsonl", requests(size))):
                outcome = flood(url, key, store, content, args.files)
                print(f"{name:5} {args.files} x {args.mib} MiB: {outcome}")
        finally:
            store.close()
            stack.stop()
            server.stop()


if __name__ == "__main__":
    main()
