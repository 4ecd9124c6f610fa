"""``uml flower``: Flower, the Celery monitor, on this deployment's Redis, behind basic auth.

Flower runs as ``celery -A workers.app flower`` (it needs only the Celery app, not torch).
The credentials come from :class:`protocol.settings.FlowerSettings` and reach Flower in its
environment (``FLOWER_BASIC_AUTH``), never on its command line, where ``ps`` would show
them. Workers start with task events off; Flower turns them on at runtime (its
``enable_events`` option, on by default, re-sends ``enable_events`` every few seconds, so
workers that start later are covered too).
"""

from __future__ import annotations

import os
import sys

from protocol.settings import FlowerSettings


def flower_command(
    settings: FlowerSettings, port: int | None = None, address: str | None = None
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that run Flower; ValueError when no credentials are set."""
    env = dict(os.environ, FLOWER_BASIC_AUTH=settings.credentials())
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.app",
        "flower",
        f"--address={address or settings.address}",
        f"--port={port or settings.port}",
        "--enable_events=True",
    ]
    return argv, env


def run_flower(
    settings: FlowerSettings, port: int | None = None, address: str | None = None
) -> int:
    """Replace this process with Flower; returns only on a settings error (exit code 2)."""
    try:
        argv, env = flower_command(settings, port, address)
    except ValueError as exc:
        print(f"uml flower: {exc}", file=sys.stderr)
        return 2
    user = settings.user or settings.basic_auth.split(":", 1)[0]
    where = f"http://{address or settings.address}:{port or settings.port}"
    print(f"uml flower: {where} (basic auth, user {user!r})", file=sys.stderr, flush=True)
    os.execve(argv[0], argv, env)
    return 0  # not reached
