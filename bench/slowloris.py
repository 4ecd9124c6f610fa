"""Slow clients against a real ``uml serve``: how long does the API keep their connections?

    .venv/bin/python bench/slowloris.py [--headers 150] [--bodies 20] [--idle 20]
                                        [--observe 60] [--trickle-s 2] [--url URL --key KEY]

Three kinds of connection are opened at once and each one trickles, never finishing:

- *headers*: ``POST /v1/chat/completions HTTP/1.1`` and one header line, then one more
  header line every ``--trickle-s`` seconds (the classic slowloris);
- *body*: complete headers with a valid key and ``Content-Length: 100000``, then one byte
  of the body every ``--trickle-s`` seconds (slow POST);
- *idle*: connects and sends nothing.

For each kind it prints how many the server closed within ``--observe`` seconds, the
seconds each stayed open (p50 / max) and the status lines the server answered with.
Without ``--url`` it starts its own Redis and API (no worker: nothing here reaches one),
with the settings of the environment (``UML_HEADER_TIMEOUT_S`` and friends).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.auth import ADMIN_KEY  # noqa: E402
from tests.integration.stack import Stack  # noqa: E402
from uml.redis_server import start_redis  # noqa: E402


@dataclass
class Outcome:
    open_s: float
    closed: bool
    status: str


@dataclass
class Kind:
    name: str
    outcomes: list[Outcome] = field(default_factory=list)

    def report(self, observe_s: float) -> str:
        if not self.outcomes:
            return f"{self.name:8} (none)"
        closed = [o.open_s for o in self.outcomes if o.closed]
        statuses = Counter(o.status or "-" for o in self.outcomes)
        p50 = f"{statistics.median(closed):6.1f}" if closed else "     -"
        longest = f"{max(closed):6.1f}" if closed else "     -"
        return (
            f"{self.name:8} {len(closed):4}/{len(self.outcomes):<4} closed within "
            f"{observe_s:.0f} s   open p50 {p50} s  max {longest} s   "
            f"answers {dict(statuses)}"
        )


async def _watch(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    trickle: bytes,
    every_s: float,
    started: float,
    observe_s: float,
) -> Outcome:
    """Trickle ``trickle`` every ``every_s`` until the server closes or time is up."""
    status = ""
    deadline = started + observe_s
    while time.monotonic() < deadline:
        try:
            data = await asyncio.wait_for(
                reader.read(4096), min(every_s, deadline - time.monotonic())
            )
        except TimeoutError:
            try:
                writer.write(trickle)
                await writer.drain()
            except (ConnectionError, OSError):
                return Outcome(time.monotonic() - started, True, status)
            continue
        except (ConnectionError, OSError):
            return Outcome(time.monotonic() - started, True, status)
        if not data:
            return Outcome(time.monotonic() - started, True, status)
        if not status and data.startswith(b"HTTP/"):
            status = data.split(b"\r\n", 1)[0].decode(errors="replace")[9:12]
    return Outcome(observe_s, False, status)


async def _one(
    host: str, port: int, opening: bytes, trickle: bytes, every_s: float, observe_s: float
) -> Outcome:
    started = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return Outcome(0.0, True, "refused")
    try:
        if opening:
            writer.write(opening)
            await writer.drain()
        return await _watch(reader, writer, trickle, every_s, started, observe_s)
    finally:
        writer.close()


async def attack(url: str, key: str, args: argparse.Namespace) -> list[Kind]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    headers = b"POST /v1/chat/completions HTTP/1.1\r\nHost: uml\r\n"
    body = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: uml\r\n"
        + f"Authorization: Bearer {key}\r\n".encode()
        + b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
    )
    plan = [
        (Kind("headers"), args.headers, headers, b"X-Slow: 1\r\n"),
        (Kind("body"), args.bodies, body, b" "),
        (Kind("idle"), args.idle, b"", b""),
    ]
    tasks = []
    for kind, count, opening, trickle in plan:
        for _ in range(count):
            call = _one(host, port, opening, trickle, args.trickle_s, args.observe)
            tasks.append((kind, asyncio.create_task(call)))
    for kind, task in tasks:
        kind.outcomes.append(await task)
    return [kind for kind, *_ in plan]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--headers", type=int, default=150)
    parser.add_argument("--bodies", type=int, default=20)
    parser.add_argument("--idle", type=int, default=20)
    parser.add_argument("--observe", type=float, default=60.0)
    parser.add_argument("--trickle-s", type=float, default=2.0)
    parser.add_argument("--url", help="an API already running (else one is started here)")
    parser.add_argument("--key", default=ADMIN_KEY, help="the key of --url's body attack")
    args = parser.parse_args()
    if args.url:
        kinds = asyncio.run(attack(args.url, args.key, args))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            server = start_redis(Path(tmp) / "redis", appendonly=False)
            stack = Stack(redis_url=server.url, log_dir=Path(tmp))
            try:
                _, url = stack.start_api()
                kinds = asyncio.run(attack(url, ADMIN_KEY, args))
            finally:
                stack.stop()
                server.stop()
    for kind in kinds:
        print(kind.report(args.observe))


if __name__ == "__main__":
    main()
