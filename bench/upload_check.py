"""What the upload check of a batch input file costs: time and memory beyond the file.

    .venv/bin/python bench/upload_check.py [--lines 50000] [--mib 64]

Builds a file of ``--lines`` valid request lines filling ``--mib`` MiB (the default file
cap and line limit) and runs :func:`api.services.batches.parse.check_input_file` on it: the
median of 3 timed runs, then one run under tracemalloc for the peak memory it allocates
on top of the file it is given.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.services.batches.parse import check_input_file  # noqa: E402


def make_file(lines: int, mib: int) -> bytes:
    size = mib * 1024 * 1024 // lines
    base = {"custom_id": "", "method": "POST", "url": "/v1/chat/completions"}
    line = json.dumps({**base, "body": {"model": "tiny", "messages": []}}).encode()
    text = "x" * max(0, size - len(line) - 40)
    body = {"model": "tiny", "messages": [{"role": "user", "content": text}]}
    return b"".join(
        json.dumps({**base, "custom_id": f"r{i}", "body": body}).encode() + b"\n"
        for i in range(lines)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--mib", type=int, default=64)
    args = parser.parse_args()
    content = make_file(args.lines, args.mib)
    times = []
    for _ in range(3):
        started = time.perf_counter()
        check_input_file(content, args.lines)
        times.append(time.perf_counter() - started)
    tracemalloc.start()
    check_input_file(content, args.lines)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(
        f"file {len(content) / 2**20:.1f} MiB, {args.lines} lines: check "
        f"{statistics.median(times) * 1000:.0f} ms (median of 3), "
        f"memory beyond the file {peak / 2**20:.1f} MiB"
    )


if __name__ == "__main__":
    main()
