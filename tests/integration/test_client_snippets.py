"""The two seed-document snippets run verbatim, inside an async function, key in UML_API_KEY.

They name ``http://localhost:8000`` and ``your-model``: a worker serves the tiny model under
that name, and a TCP forwarder on localhost:8000 leads to the session's API. Should port
8000 be taken on this machine, the URL alone is swapped for the API's (the only edit).
"""

from __future__ import annotations

import socket
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.auth import ADMIN_KEY
from tests.integration.stack import Stack

pytestmark = pytest.mark.timeout(180)

SNIPPET_HEALTH = """\
from client.universal_client import UniversalClient
client = UniversalClient(base_url="http://localhost:8000")
health = await client.health_check()
"""

SNIPPET_OPENAI = """\
from client.universal_client import OpenAICompatibleClient
openai_client = OpenAICompatibleClient(base_url="http://localhost:8000")
response = await openai_client.chat.completions.create(
    model="your-model",
    messages=[{"role": "user", "content": "Hello!"}]
)
"""


class Forwarder:
    """Accepts on 127.0.0.1:``port`` and pipes every connection to ``target``."""

    def __init__(self, listener: socket.socket, target: tuple[str, int]) -> None:
        self.listener = listener
        self.target = target
        self.sockets: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [conn, upstream]
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()
        for s in self.sockets:
            s.close()


@pytest.fixture(scope="module")
def your_model(stack: Stack, tiny_model: Path) -> Iterator[str]:
    proc = stack.start_worker("your-model", tiny_model, slots=2)
    yield "your-model"
    proc.stop()


@pytest.fixture
def localhost_8000(api_url: str) -> Iterator[str | None]:
    """None when localhost:8000 now leads to the API; else the URL to use instead."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("127.0.0.1", 8000))
    except OSError:
        listener.close()
        yield api_url
        return
    listener.listen(16)
    host, port = api_url.removeprefix("http://").split(":")
    forwarder = Forwarder(listener, (host, int(port)))
    yield None
    forwarder.close()


async def run(snippet: str, replacement: str | None) -> dict[str, object]:
    if replacement is not None:
        snippet = snippet.replace("http://localhost:8000", replacement)
    source = "async def main():\n" + textwrap.indent(snippet, "    ") + "    return locals()\n"
    scope: dict[str, object] = {}
    exec(compile(source, "<seed snippet>", "exec"), scope)
    result: dict[str, object] = await scope["main"]()  # type: ignore[operator]
    return result


async def test_seed_snippets_run_verbatim(
    monkeypatch: pytest.MonkeyPatch, your_model: str, localhost_8000: str | None
) -> None:
    monkeypatch.setenv("UML_API_KEY", ADMIN_KEY)
    scope = await run(SNIPPET_HEALTH, localhost_8000)
    health = scope["health"]
    assert health.status == "ok" and your_model in health.models  # type: ignore[attr-defined]
    await scope["client"].aclose()  # type: ignore[attr-defined]
    scope = await run(SNIPPET_OPENAI, localhost_8000)
    response = scope["response"]
    assert response.model == your_model  # type: ignore[attr-defined]
    assert response.choices[0].message.content  # type: ignore[attr-defined]
    assert response.choices[0].finish_reason in {"stop", "length"}  # type: ignore[attr-defined]
    await scope["openai_client"].close()  # type: ignore[attr-defined]
