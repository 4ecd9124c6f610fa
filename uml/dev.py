"""``uml dev``: Redis (when REDIS_URL is unset), the tiny model, one worker and the API.
Flower joins them when its credentials are set (``UML_FLOWER_*``, docs/operations.md).

Everything runs in the foreground as children of this process; Ctrl-C or SIGTERM stops
every child, and nothing is left running. Unless ``UML_ADMIN_KEY`` or ``UML_ADMIN_KEY_FILE``
is set, an admin key is made once and kept in ``<data>/admin.key`` (mode 0600); the API
reads it through ``UML_ADMIN_KEY_FILE`` and the banner prints it.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import FrameType

from protocol.auth import new_bootstrap_secret
from uml.redis_server import RedisServer, start_redis


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signum)


def run_dev(data_dir: Path, port: int) -> int:
    data_dir = data_dir.resolve()
    env = dict(os.environ, PYTHONUNBUFFERED="1", UML_PORT=str(port))
    env.setdefault("UML_LOG_FORMAT", "text")
    redis_server: RedisServer | None = None
    children: list[subprocess.Popen[bytes]] = []
    signal.signal(signal.SIGTERM, _raise_stop)
    try:
        admin_key = _admin_key(data_dir, env)
        if not env.get("REDIS_URL"):
            redis_server = start_redis(data_dir / "redis")
            env["REDIS_URL"] = redis_server.url
        model_dir = data_dir / "models" / "tiny"
        if not (model_dir / "config.json").exists():
            _uml(["models", "make-tiny", str(model_dir)], env).check_returncode()
        children.append(_spawn(["worker", "--model", f"tiny={model_dir}"], env))
        children.append(_spawn(["serve", "--port", str(port)], env))
        flower = _flower(env, children)
        base = f"http://127.0.0.1:{port}"
        _wait_ready(f"{base}/health", children)
        print(
            f"\nUniversal Model Launcher is running\n"
            f"  API       {base}/v1  (model: tiny)\n"
            f"  docs      {base}/docs\n"
            f"  OpenAPI   {base}/schema/openapi.json\n"
            f"  Redis     {env['REDIS_URL']}\n"
            f"  Flower    {flower}\n"
            f"  admin key {admin_key}\n"
            f"            (export UML_API_KEY=... and send `Authorization: Bearer $UML_API_KEY`)\n"
            f"Press Ctrl-C to stop.\n",
            flush=True,
        )
        return _watch(children)
    except (KeyboardInterrupt, _Stop):
        return 0
    finally:
        _stop_all(children)
        if redis_server is not None:
            redis_server.stop()


def _admin_key(data_dir: Path, env: dict[str, str]) -> str:
    """The admin key the API will accept; made once under ``data_dir`` when none is given."""
    if env.get("UML_ADMIN_KEY"):
        return env["UML_ADMIN_KEY"]
    path = Path(env["UML_ADMIN_KEY_FILE"]) if env.get("UML_ADMIN_KEY_FILE") else None
    if path is None:
        path = data_dir / "admin.key"
        if not path.exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(new_bootstrap_secret() + "\n")
        env["UML_ADMIN_KEY_FILE"] = str(path)
    return path.read_text().strip()


def _flower(env: dict[str, str], children: list[subprocess.Popen[bytes]]) -> str:
    """Start Flower when its credentials are set (``UML_FLOWER_*``); say where, or why not."""
    if importlib.util.find_spec("flower") is None:
        return "off (pip install flower)"
    user_and_password = env.get("UML_FLOWER_USER") and env.get("UML_FLOWER_PASSWORD")
    if not (env.get("UML_FLOWER_BASIC_AUTH") or user_and_password):
        return "off (set UML_FLOWER_BASIC_AUTH=user:password to run it)"
    children.append(_spawn(["flower"], env))
    return f"http://127.0.0.1:{env.get('UML_FLOWER_PORT', '5555')}  (basic auth)"


def _uml(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "uml.cli", *args], env=env, check=False)


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "uml.cli", *args], env=env, start_new_session=True
    )


def _wait_ready(url: str, children: list[subprocess.Popen[bytes]], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in children:
            if child.poll() is not None:
                raise RuntimeError(f"{child.args!r} exited with {child.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if b'"ok"' in response.read():
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the service was not ready within {timeout:.0f}s")


def _watch(children: list[subprocess.Popen[bytes]]) -> int:
    while True:
        for child in children:
            code = child.poll()
            if code is not None:
                print(f"uml dev: {child.args!r} exited with {code}; stopping", file=sys.stderr)
                return code or 1
        time.sleep(0.5)


def _stop_all(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
