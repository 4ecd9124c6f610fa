"""``examples/`` run against the live stack, and the client commands of ``uml``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.auth import ADMIN_KEY
from tests.integration.conftest import MODEL

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(180)


def env(api_url: str) -> dict[str, str]:
    return {**os.environ, "UML_BASE_URL": api_url, "UML_API_KEY": ADMIN_KEY, "UML_MODEL": MODEL}


def run(args: list[str], api_url: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=ROOT, env=env(api_url), input=stdin, capture_output=True, text=True, timeout=150
    )


@pytest.mark.parametrize("name", ["async_client.py", "sync_client.py", "openai_sdk.py"])
def test_example_runs(name: str, api_url: str) -> None:
    out = run([sys.executable, f"examples/{name}"], api_url)
    assert out.returncode == 0, out.stderr
    assert ADMIN_KEY not in out.stdout + out.stderr


def test_examples_are_all_tested() -> None:
    assert {p.name for p in (ROOT / "examples").glob("*.py")} == {
        "async_client.py",
        "sync_client.py",
        "openai_sdk.py",
    }


def uml(*args: str) -> list[str]:
    return [sys.executable, "-m", "uml.cli", *args]


def test_uml_models_complete_chat(api_url: str) -> None:
    models = run(uml("models"), api_url)
    assert models.returncode == 0 and MODEL in models.stdout.split()
    done = run(uml("complete", MODEL, "Once", "--max-tokens", "8", "--seed", "1"), api_url)
    assert done.returncode == 0, done.stderr
    with httpx.Client(base_url=api_url, headers={"X-API-Key": ADMIN_KEY}) as http:
        body = {"model": MODEL, "prompt": "Once", "max_tokens": 8, "seed": 1}
        same = http.post("/v1/completions", json=body).json()["choices"][0]["text"]
    assert done.stdout == same + "\n"
    chat = run(
        uml("chat", MODEL, "--max-tokens", "4", "--seed", "2", "--url", api_url), api_url, "hi\n"
    )
    assert chat.returncode == 0, chat.stderr
    with httpx.Client(base_url=api_url, headers={"X-API-Key": ADMIN_KEY}) as http:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
        reply = http.post("/v1/chat/completions", json={**body, "max_tokens": 4, "seed": 2})
    assert chat.stdout == reply.json()["choices"][0]["message"]["content"] + "\n"
    missing = run(uml("complete", "no-such-model", "x"), api_url)
    assert missing.returncode == 1 and "does not exist" in missing.stderr


def test_uml_jobs_watch(api_url: str) -> None:
    with httpx.Client(base_url=api_url, headers={"X-API-Key": ADMIN_KEY}) as http:
        inner = {"model": MODEL, "prompt": "w", "max_tokens": 12, "seed": 3}
        body = {"type": "completion", "body": inner}
        job = http.post("/v1/jobs", json=body).json()
        watched = run(uml("jobs", "watch", job["id"]), api_url)
        assert watched.returncode == 0, watched.stderr
        text = http.get(f"/v1/jobs/{job['id']}").json()["text"]
    assert watched.stdout == text + "\n"
    assert "[done: " in watched.stderr


def test_uml_submit_batch(api_url: str, tmp_path: Path) -> None:
    lines = [
        {
            "custom_id": f"r{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": MODEL,
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 4,
            },
        }
        for i in range(3)
    ]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = run(uml("submit", str(path), "--poll", "0.2"), api_url)
    assert out.returncode == 0, out.stderr
    result = Path(out.stdout.strip())
    assert result == tmp_path / "in.output.jsonl"
    ids = {json.loads(line)["custom_id"] for line in result.read_text().splitlines()}
    assert ids == {"r0", "r1", "r2"} and "3/3" in out.stderr
