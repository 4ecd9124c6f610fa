"""Schemathesis, every check and every phase, over ``/schema/openapi.json`` of a live API.

The run is ``schemathesis run`` with every check on (its default; see
``schemathesis/schemathesis.toml``) and every phase: examples, coverage, fuzzing and
stateful, which the checks need (``OPTIONS`` and unsupported methods, schema-valid requests
accepted, schema-violating ones refused, documented statuses, content types, headers and
stream events, auth not ignored). It gets a stack of its own (Redis, a tiny worker, an
API): with the admin key it loads, unloads and rotates for real, which would pull the
session stack's model from under the other tests. ``schemathesis/hooks.py`` points
generated bodies at the tiny model, so generation runs for real, and clamps their
``max_tokens``. What the configuration relaxes, and why, is in ``schemathesis.toml``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.auth import ADMIN_KEY
from tests.integration.conftest import MODEL
from tests.integration.stack import Stack
from uml.redis_server import start_redis

pytestmark = pytest.mark.timeout(420)
HERE = Path(__file__).parent / "schemathesis"
ROOT = Path(__file__).parents[2]
EXAMPLES = 15


@pytest.fixture(scope="module")
def own_api(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = start_redis(tmp_path_factory.mktemp("st-redis"), appendonly=False)
    stack = Stack(
        redis_url=server.url,
        log_dir=tmp_path_factory.mktemp("st-logs"),
        extra_env={"UML_LOAD_WAIT_S": "5"},  # a load with ?wait=true answers within it
    )
    try:
        stack.start_worker(MODEL, tiny_model, slots=16)
        _, base = stack.start_api()
        yield base
    finally:
        stack.stop()
        server.stop()


def test_api_conforms_to_its_document_under_every_check(own_api: str, tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "run",
        f"{own_api}/schema/openapi.json",
        "--header",
        f"Authorization: Bearer {ADMIN_KEY}",
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        "1",
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--generation-database",
        "none",
        "--no-color",
    ]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.integration.schemathesis.hooks",
        "UML_ST_MODEL": MODEL,
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400, check=False
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-20000:]
    assert ADMIN_KEY not in out  # schemathesis filters the header in what it prints
