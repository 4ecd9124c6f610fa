"""``uml dev`` runs everything from nothing, serves a request, and SIGTERM leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.integration.stack import wait_for
from uml.redis_server import free_port

pytestmark = pytest.mark.timeout(240)


def _descendants(pid: int) -> set[int]:
    children: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            children.add(int(entry.name))
    for child in list(children):
        children |= _descendants(child)
    return children


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_uml_dev_starts_everything_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    unset = {"REDIS_URL", "UML_ADMIN_KEY", "UML_ADMIN_KEY_FILE"}
    env = {k: v for k, v in os.environ.items() if k not in unset}
    log = (tmp_path / "dev.log").open("wb")
    dev = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uml.cli",
            "dev",
            "--port",
            str(port),
            "--data",
            str(tmp_path / ".uml"),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: "Press Ctrl-C" in (tmp_path / "dev.log").read_text(), 180, "uml dev to start"
        )
        assert (tmp_path / ".uml" / "models" / "tiny" / "config.json").exists()
        assert (tmp_path / ".uml" / "redis").is_dir()
        key_file = tmp_path / ".uml" / "admin.key"
        assert key_file.stat().st_mode & 0o777 == 0o600
        admin_key = key_file.read_text().strip()
        assert admin_key in (tmp_path / "dev.log").read_text()  # the banner prints it
        body = {"model": "tiny", "prompt": "hi", "max_tokens": 4}
        url = f"{base}/v1/completions"
        assert httpx.post(url, json=body, timeout=30).status_code == 401
        headers = {"Authorization": f"Bearer {admin_key}"}
        response = httpx.post(url, json=body, headers=headers, timeout=30)
        assert response.status_code == 200, response.text
        children = _descendants(dev.pid)
        assert len(children) >= 3  # redis-server, worker, API
        dev.send_signal(signal.SIGTERM)
        assert dev.wait(timeout=60) == 0
        wait_for(lambda: not any(_alive(pid) for pid in children), 30, "every child to exit")
    finally:
        if dev.poll() is None:
            os.killpg(dev.pid, signal.SIGKILL)
        log.close()
