"""The client's public surface is exactly the intended names, and it needs no server code."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import client
import client.universal_client as uc

ROOT = Path(__file__).resolve().parents[2]

EXPECTED = {
    "UniversalClient",
    "SyncUniversalClient",
    "OpenAICompatibleClient",
    "SyncOpenAICompatibleClient",
    "AsyncStream",
    "Stream",
    "AsyncWebSocket",
    "SyncWebSocket",
    "Health",
    "UMLError",
    "APIError",
    "APIStatusError",
    "BadRequestError",
    "AuthenticationError",
    "PermissionDeniedError",
    "NotFoundError",
    "ConflictError",
    "UnprocessableEntityError",
    "RateLimitError",
    "InternalServerError",
    "ServiceUnavailableError",
    "APIConnectionError",
    "APITimeoutError",
    "WebSocketClosedError",
    "JobError",
}


def test_exported_names() -> None:
    assert set(uc.__all__) == EXPECTED
    assert set(client.__all__) == EXPECTED
    for name in EXPECTED:
        assert getattr(uc, name) is getattr(client, name)


def test_modules_are_private_and_typed() -> None:
    public = {p.stem for p in (ROOT / "client").glob("*.py") if not p.stem.startswith("_")}
    assert public <= {"universal_client", "cli"}
    assert (ROOT / "client" / "py.typed").exists()


def test_error_tree() -> None:
    assert issubclass(uc.ServiceUnavailableError, uc.InternalServerError)
    assert issubclass(uc.APITimeoutError, uc.APIConnectionError)
    assert issubclass(uc.WebSocketClosedError, uc.APIConnectionError)
    for name in EXPECTED - {"UMLError"}:
        obj = getattr(uc, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, uc.UMLError)


BLOCKER = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'litestar', 'celery', 'torch', 'redis', 'api', 'workers',
                                  'transformers', 'kombu', 'uvicorn'}:
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
from client.universal_client import UniversalClient, SyncUniversalClient, OpenAICompatibleClient
import client.cli
UniversalClient('http://x'); SyncUniversalClient('http://x').close()
OpenAICompatibleClient('http://x/v1')
print('ok')
"""


def test_client_imports_without_server_packages() -> None:
    out = subprocess.run(
        [sys.executable, "-c", BLOCKER], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_base_install_is_the_client() -> None:
    """``pip install universal-model-launcher`` is the client; the server is an extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = {d.split(">")[0].split("[")[0].split("=")[0].strip() for d in project["dependencies"]}
    assert base == {"msgspec", "httpx", "websockets"}
    server = " ".join(project["optional-dependencies"]["server"])
    for dep in ("litestar", "celery", "redis", "uvicorn"):
        assert dep in server
    for extra in ("worker", "dev"):
        assert "universal-model-launcher[server]" in project["optional-dependencies"][extra]
