"""The WebSocket attacks of issue #14 against a real stack: what one key gets through ``/ws``.

    .venv/bin/python bench/ws_attack.py [--frames 40] [--frame-mib 15] [--only limits frames]

Redis, one worker (tiny model) and one API are real processes started here (the test
stack, ``UML_LIMIT_MAX_STREAMS=4``). Run it on two checkouts to compare them: it uses only
wire-level facts (HTTP statuses, close codes, frames), no names of this tree's code.

1. ``burst=2, rpm=5``: 10 handshakes; a minute later 500 pings on one socket, and a minute
   after that 300 subscribes on another, each sent as fast as the socket takes them.
2. A key with room to spare holds all its HTTP stream slots, then subscribes over ``/ws`` to
   as many running jobs as it can: how many more streams it got.
3. ``--frames`` frames of ``--frame-mib`` MiB, each on its own socket, all at once: the
   API's peak RSS, and the worst ``/health`` latency while they arrive.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.auth import AUTH  # noqa: E402
from tests.integration.stack import STREAM_CAP, Stack  # noqa: E402
from uml.redis_server import start_redis  # noqa: E402
from workers.tiny import make_tiny  # noqa: E402

MODEL = "tiny"


def new_key(http: httpx.Client, **limits: int) -> str:
    made = http.post("/admin/keys", json={"name": "attacker", **limits}, headers=AUTH)
    made.raise_for_status()
    return str(made.json()["key"])


async def drain(sock: ClientConnection, idle_s: float = 1.0) -> list[dict[str, Any]]:
    """Every frame until ``idle_s`` passes without one or the socket closes."""
    frames = []
    try:
        while True:
            frames.append(json.loads(await asyncio.wait_for(sock.recv(), idle_s)))
    except (TimeoutError, ConnectionClosed):
        return frames


async def flood(url: str, key: str, messages: list[str]) -> tuple[list[dict[str, Any]], Any]:
    """Send ``messages`` on a new socket as fast as it takes them; the frames answered and the
    close code (``None``: still open), or the handshake's refusal."""
    try:
        async with connect(url, additional_headers={"X-API-Key": key}) as sock:
            try:
                for message in messages:
                    await sock.send(message)
            except ConnectionClosed:
                pass
            return await drain(sock), sock.close_code
    except InvalidStatus as exc:
        return [], f"handshake refused {exc.response.status_code}"


async def limits_attack(url: str, key: str) -> dict[str, Any]:
    accepted = 0
    for _ in range(10):
        try:
            async with connect(url, additional_headers={"X-API-Key": key}):
                accepted += 1
        except InvalidStatus:
            pass
    out: dict[str, Any] = {"handshakes_accepted": f"{accepted}/10"}
    await asyncio.sleep(61)  # a fresh minute for each socket
    pings = [json.dumps({"type": "ping", "ref": str(i)}) for i in range(500)]
    frames, closed = await flood(url, key, pings)
    out["pings_answered"] = f"{sum(f['type'] == 'pong' for f in frames)}/500, closed {closed}"
    await asyncio.sleep(61)
    subs = [json.dumps({"type": "subscribe", "job_id": f"job-{i}"}) for i in range(300)]
    frames, closed = await flood(url, key, subs)
    answered = [f for f in frames if f.get("status") != 429]
    out["subscribes_answered"] = f"{len(answered)}/300 (not 429), closed {closed}"
    return out


async def streams_attack(url: str, api: str, key: str) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {key}"}
    body = {"model": MODEL, "prompt": "hold", "max_tokens": 2000}
    submit = {"type": "completion", "body": body, "priority": "batch"}
    with httpx.Client(base_url=api, timeout=30) as http:
        ids = [http.post("/v1/jobs", json=submit, headers=auth).json()["id"] for _ in range(104)]
        held = []
        async with httpx.AsyncClient(base_url=api, timeout=60) as aio:
            for job_id in ids[:STREAM_CAP]:
                response = await aio.send(
                    aio.build_request("GET", f"/v1/jobs/{job_id}/events", headers=auth),
                    stream=True,
                )
                held.append(response)
            over_http = [r.status_code for r in held].count(200)
            async with connect(url, additional_headers={"X-API-Key": key}) as sock:
                for job_id in ids[STREAM_CAP:]:
                    await sock.send(json.dumps({"type": "subscribe", "job_id": job_id}))
                frames = await drain(sock, 3.0)
            flowing = {f["job_id"] for f in frames if f["type"] in ("token", "done")}
            for response in held:
                await response.aclose()
        for job_id in ids:
            http.post(f"/v1/jobs/{job_id}/cancel", headers=auth)
    return {"http_streams_held": over_http, "more_streams_over_ws": f"{len(flowing)}/100"}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def frames_attack(url: str, api: str, pid: int, frames: int, mib: int) -> dict[str, Any]:
    peak, worst, stop = [rss_mib(pid)], [0.0], threading.Event()
    before = peak[0]

    def watch() -> None:
        with httpx.Client(base_url=api, timeout=30) as http:
            while not stop.is_set():
                t0 = time.monotonic()
                http.get("/health")
                worst[0] = max(worst[0], time.monotonic() - t0)
                peak[0] = max(peak[0], rss_mib(pid))
                time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    payload = json.dumps({"type": "ping", "pad": "x" * (mib << 20)})
    codes: dict[str, int] = {}

    async def one() -> None:
        try:
            async with connect(url, additional_headers=AUTH, max_size=None) as sock:
                await sock.send(payload)
                await asyncio.wait_for(sock.recv(), 60)
                codes["answered"] = codes.get("answered", 0) + 1
        except ConnectionClosed as exc:
            code = str(exc.rcvd.code if exc.rcvd else 1006)
            codes[code] = codes.get(code, 0) + 1

    t0 = time.monotonic()
    try:
        await asyncio.gather(*(one() for _ in range(frames)))
    finally:
        stop.set()
        watcher.join()
    return {
        "frames": f"{frames} x {mib} MiB in {time.monotonic() - t0:.1f} s",
        "outcomes": codes,
        "api_rss_mib": f"{before:.0f} -> peak {peak[0]:.0f}",
        "worst_health_s": round(worst[0], 3),
    }


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = start_redis(Path(tmp) / "redis", appendonly=False)
        stack = Stack(redis_url=server.url, log_dir=Path(tmp))
        try:
            stack.start_worker(MODEL, make_tiny(Path(tmp) / "tiny", seed=0), slots=8)
            proc, api = stack.start_api()
            url = api.replace("http://", "ws://") + "/ws"
            with httpx.Client(base_url=api, timeout=30) as http:
                tight, roomy = new_key(http, burst=2, rpm=5), new_key(http, burst=1000, rpm=100_000)
            report = {}
            if "limits" in args.only:
                report["limits (burst=2, rpm=5)"] = await limits_attack(url, tight)
            if "streams" in args.only:
                report["stream slots"] = await streams_attack(url, api, roomy)
            if "frames" in args.only:
                pid = proc.process.pid
                report["big frames"] = await frames_attack(
                    url, api, pid, args.frames, args.frame_mib
                )
            print(json.dumps(report, indent=2))
        finally:
            stack.stop()
            server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--frame-mib", type=int, default=15)
    parser.add_argument(
        "--only", nargs="+", default=["limits", "streams", "frames"], help="attacks to run"
    )
    asyncio.run(main(parser.parse_args()))
