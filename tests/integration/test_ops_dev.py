"""``uml dev`` with Flower credentials set runs Flower too, behind basic auth, logs as text,
and SIGTERM stops Flower with the rest."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.integration.stack import wait_for
from tests.integration.test_dev import _alive, _descendants
from uml.redis_server import free_port

pytestmark = pytest.mark.timeout(240)
PASSWORD = "dev-flower-password-91c2"


def test_uml_dev_runs_flower_when_its_credentials_are_set(tmp_path: Path) -> None:
    port, flower_port = free_port(), free_port()
    unset = {"REDIS_URL", "UML_ADMIN_KEY", "UML_ADMIN_KEY_FILE", "UML_LOG_FORMAT"}
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env |= {"UML_FLOWER_BASIC_AUTH": f"ops:{PASSWORD}", "UML_FLOWER_PORT": str(flower_port)}
    log_path = tmp_path / "dev.log"
    with log_path.open("wb") as log:
        dev = subprocess.Popen(
            [sys.executable, "-m", "uml.cli", "dev", "--port", str(port)]
            + ["--data", str(tmp_path / ".uml")],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    flower = f"http://127.0.0.1:{flower_port}"
    try:
        wait_for(lambda: "Press Ctrl-C" in log_path.read_text(), 180, "uml dev to start")
        assert f"Flower    {flower}" in log_path.read_text()

        def flower_up() -> bool:
            try:
                return httpx.get(f"{flower}/healthcheck", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(flower_up, 60, "Flower", interval=0.2)
        assert httpx.get(f"{flower}/api/workers", timeout=10).status_code == 401
        auth = httpx.BasicAuth("ops", PASSWORD)
        assert httpx.get(f"{flower}/api/workers", auth=auth, timeout=15).status_code == 200
        children = _descendants(dev.pid)
        dev.send_signal(signal.SIGTERM)
        assert dev.wait(timeout=60) == 0
        wait_for(lambda: not any(_alive(pid) for pid in children), 30, "every child to exit")
        text = log_path.read_text()
        assert PASSWORD not in text
        assert "INFO api" in text or "INFO uvicorn" in text  # the children log as text
    finally:
        if dev.poll() is None:
            os.killpg(dev.pid, signal.SIGKILL)
