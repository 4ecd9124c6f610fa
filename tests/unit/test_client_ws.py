"""The WebSocket's pure parts: messages, the client's router, the server's outbox and close."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from api.controllers import ws as controller
from api.services.ws_frames import Outbox, Overflow, render
from api.services.ws_handshake import chosen_subprotocol, key_of, redact_query_key
from client._errors import JobError, NotFoundError, WebSocketClosedError
from client._ws import Router
from protocol import ws
from protocol.events import DoneEvent, StatusEvent, TokenEvent
from protocol.openai import ErrorInfo, Usage

USAGE = Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3)


def test_messages_round_trip() -> None:
    gen = ws.decode_client(b'{"type":"generate","body":{"model":"m","prompt":"p"},"ref":"a"}')
    assert isinstance(gen, ws.Generate) and msgspec.json.decode(bytes(gen.body))["prompt"] == "p"
    assert ws.decode_client('{"type":"subscribe","job_id":"j"}') == ws.Subscribe(job_id="j")
    with pytest.raises(msgspec.ValidationError):
        ws.decode_client('{"type":"shout"}')
    done = ws.Done(job_id="j", seq=3, finish_reason="stop", usage=USAGE)
    assert ws.decode_server(ws.encode(done)) == done


def test_router_files_messages_per_job_and_ref() -> None:
    router = Router()
    ref = router.ref()
    router.route(ws.JobAccepted(job_id="a", model="m", ref=ref))
    router.route(ws.Token(job_id="b", seq=2, text="x"))
    router.route(ws.Token(job_id="a", seq=2, text="y"))
    router.route(ws.Error(job_id="b", seq=3, error=ErrorInfo(message="boom", type="server_error")))
    accepted = router.answer(ref)
    assert isinstance(accepted, ws.JobAccepted) and accepted.job_id == "a"
    assert router.event("a") == ws.Token(job_id="a", seq=2, text="y")
    assert router.event("a") is None
    assert router.event("b") == ws.Token(job_id="b", seq=2, text="x")
    with pytest.raises(JobError):
        router.event("b")
    refused = ws.Error(ref="r9", status=404, error=ErrorInfo(message="no", type="x"))
    router.route(refused)
    with pytest.raises(NotFoundError):
        router.answer("r9")
    router.route(ws.Error(job_id="c", status=404, error=ErrorInfo(message="no", type="x")))
    with pytest.raises(NotFoundError):  # a refused subscribe reaches that job's reader
        router.event("c")
    router.closed = WebSocketClosedError(4008, "overflow")
    with pytest.raises(WebSocketClosedError):
        router.event("a")


def test_outbox_overflow_is_sticky() -> None:
    box = Outbox(size=2)
    box.put(ws.Pong())
    box.put(ws.Pong())
    with pytest.raises(Overflow):
        box.put(ws.Pong())
    assert box.overflowed.is_set()
    box.queue.get_nowait()
    with pytest.raises(Overflow):  # once overflowed, the socket is done
        box.put(ws.Pong())


def test_render_events() -> None:
    assert render("j", StatusEvent(seq=1, status="running")) is None  # type: ignore[arg-type]
    assert render("j", TokenEvent(seq=2, text="")) is None
    assert render("j", TokenEvent(seq=2, text="hi")) == ws.Token(job_id="j", seq=2, text="hi")
    done = render("j", DoneEvent(seq=3, finish_reason="stop", usage=USAGE))
    assert isinstance(done, ws.Done) and done.seq == 3


class FakeSocket:
    """Just what the handshake helpers read: headers, query parameters, the ASGI scope."""

    def __init__(
        self, headers: dict[str, str], query: dict[str, str], protocols: list[str]
    ) -> None:
        self.headers = headers
        self.query_params = query
        self.scope: dict[str, Any] = {"subprotocols": protocols}


def test_handshake_key_sources() -> None:
    assert key_of(FakeSocket({"authorization": "Bearer k1"}, {"api_key": "k2"}, [])) == "k1"
    by_query = FakeSocket({}, {"api_key": "k2"}, [])
    by_query.scope["query_string"] = b"a=1&api_key=k2"
    assert key_of(by_query) == "k2"
    assert by_query.scope["query_string"] == b"a=1&api_key=redacted"  # never logged
    scope = {"query_string": b"my_api_key=x&api_key=y&z=1"}
    redact_query_key(scope)
    assert scope["query_string"] == b"my_api_key=x&api_key=redacted&z=1"
    sock = FakeSocket({}, {}, ["uml.v1", "uml.key.k3"])
    assert key_of(sock) == "k3" and chosen_subprotocol(sock) == "uml.v1"
    with pytest.raises(Exception) as refused:
        key_of(FakeSocket({}, {}, ["uml.key."]))
    assert getattr(refused.value, "status", None) == 401


class StalledSocket:
    """A socket whose reader never reads: sends block; receives wait for ever."""

    def __init__(self) -> None:
        self.closed: tuple[int, str] | None = None

    async def receive_data(self, mode: str) -> str:
        await asyncio.Event().wait()
        return ""

    async def send_data(self, data: str) -> None:
        await asyncio.Event().wait()

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


class FloodSession:
    """A session whose jobs produce frames faster than the socket sends them."""

    def __init__(self) -> None:
        self.outbox = Outbox(size=4)
        self.closed = False

    async def handle(self, data: Any) -> None:  # pragma: no cover - never called
        pass

    async def flood(self) -> None:
        for seq in range(100):
            self.outbox.put(ws.Token(job_id="j", seq=seq, text="x"))
            await asyncio.sleep(0)

    def endings(self) -> list[Any]:
        return [self.outbox.overflowed.wait()]

    def close_code(self) -> tuple[int, str] | None:
        return (ws.CLOSE_OVERLOADED, "overflow") if self.outbox.overflowed.is_set() else None

    async def close(self) -> None:
        self.closed = True


async def test_a_slow_reader_is_closed_with_the_overload_code() -> None:
    sock, session = StalledSocket(), FloodSession()
    flood = asyncio.create_task(session.flood())
    await asyncio.wait_for(controller._run(sock, session), 10)  # type: ignore[arg-type]
    with pytest.raises(Overflow):
        await flood
    assert session.closed
    assert sock.closed is not None and sock.closed[0] == ws.CLOSE_OVERLOADED


def _session(store: Any) -> Any:
    from unittest.mock import AsyncMock, MagicMock

    from api.security.keys import Authenticator, Credential
    from api.security.limits import Limiter
    from api.security.revocation import KeyWatcher
    from api.services.ws import Session
    from api.state import Resources
    from protocol.auth import ApiKey
    from tests.unit.test_api_http import settings

    res = MagicMock(spec=Resources)
    res.settings = settings("redis://unused")
    res.limiter = MagicMock(spec=Limiter)
    res.limiter.policy.return_value = None
    res.watcher = MagicMock(spec=KeyWatcher)
    res.watcher.watch.return_value = None
    res.authenticator = MagicMock(spec=Authenticator)
    res.authenticator.recheck = AsyncMock(return_value="ok")
    res.store = store
    key = ApiKey(id="k1", name="t", scope="user", hash="h", created_at=0.0)
    return Session(res, Credential(key, "h"))


async def test_store_failures_become_error_frames() -> None:
    from unittest.mock import AsyncMock, MagicMock

    from redis.exceptions import ConnectionError as RedisConnectionError

    from api.services.job_store import JobStore

    store = MagicMock(spec=JobStore)
    store.cancel = AsyncMock(side_effect=RedisConnectionError("down"))
    store.read = AsyncMock(side_effect=RuntimeError("bug"))
    session = _session(store)
    await session.handle('{"type": "cancel", "job_id": "j1"}')
    await session.handle('{"type": "subscribe", "job_id": "j2"}')
    await session.handle('{"type": "ping", "ref": "p"}')
    frames = [ws.decode_server(session.outbox.queue.get_nowait()) for _ in range(3)]
    down, bug, pong = frames
    assert isinstance(down, ws.Error) and (down.status, down.job_id) == (503, "j1")
    assert isinstance(bug, ws.Error) and bug.status == 500 and "bug" not in bug.error.message
    assert pong == ws.Pong(ref="p")
