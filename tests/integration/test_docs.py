"""The README's quick-start examples run as written against the live stack."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.auth import ADMIN_KEY

README = Path(__file__).resolve().parents[2] / "README.md"
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The examples read the key from ``UML_API_KEY``, as the README tells a reader to set it."""
    monkeypatch.setenv("UML_API_KEY", ADMIN_KEY)


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def _point_at(code: str, api_url: str) -> str:
    return code.replace("http://127.0.0.1:8000", api_url).replace("localhost:8000", api_url)


def test_python_examples_run(api_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    blocks = _blocks("python")
    assert blocks
    for code in blocks:
        exec(compile(_point_at(code, api_url), str(README), "exec"), {})
    assert capsys.readouterr().out


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_curl_examples_run(api_url: str) -> None:
    commands = [
        cmd
        for block in _blocks("bash")
        for cmd in re.split(r"\n\s*\n", block.strip())
        if cmd.strip().startswith("curl")
    ]
    assert commands
    for command in commands:
        result = subprocess.run(
            ["bash", "-c", _point_at(command, api_url) + " --fail-with-body"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert b"choices" in result.stdout
