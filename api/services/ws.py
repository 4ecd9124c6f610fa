"""One ``/ws`` socket's session: authenticate the handshake, run jobs, forward their logs.

The session reads client messages (``protocol.ws``) and answers them; each job it follows
gets a forwarder task reading the job's log through the process's relay (one ``XREAD`` for
every stream of the process) and putting frames into the socket's :class:`Outbox`. A single
sender task drains the outbox into the socket.

* **Several jobs per socket**: one forwarder per job, all writing to the one outbox.
* **Closing cancels what the socket started**: jobs from ``generate`` follow
  :func:`api.services.jobs.follow`, which cancels a job abandoned before its end (shielded);
  jobs it only ``subscribe``\\d to are left running.
* **A slow reader stalls nobody**: the outbox is bounded (:data:`OUTBOX_SIZE` frames). When
  it is full the socket is closed with :data:`protocol.ws.CLOSE_OVERLOADED` (its jobs are
  cancelled as on any close); the relay pauses a full subscriber on its own, so neither
  Redis reads nor other sockets wait for this one.

Authentication (:func:`key_of`) uses the same check as every HTTP route
(:mod:`api.security.middleware`): the key from ``Authorization: Bearer`` or ``X-API-Key``,
else ``?api_key=`` or an offered subprotocol ``uml.key.<key>`` (browsers cannot set
headers on a WebSocket); a key read from the query is blanked in the scope at once, so the
server's handshake log line never shows it. A refused handshake answers a plain HTTP 401
with OpenAI's error body; the socket is never accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import anyio
import msgspec
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from api import validation
from api.errors import APIError, invalid_request, unavailable
from api.relay import RelayUnavailable
from api.security.limits import rate_limited
from api.security.middleware import presented_key
from api.services import jobs
from api.state import Resources
from protocol import ws
from protocol.auth import ApiKey
from protocol.events import DoneEvent, ErrorEvent, Event, TokenEvent
from protocol.jobs import JobSpec
from protocol.openai import ErrorInfo
from protocol.states import TERMINAL, Priority

log = logging.getLogger(__name__)

_QUERY_KEY = re.compile(rb"((?:^|&)api_key=)[^&]*")
OUTBOX_SIZE = 1024
"""Frames buffered per socket before a slow reader's socket is closed."""
IDLE_S = 15.0


class Overflow(Exception):
    """The socket's outbox is full: its reader is too slow."""


class Outbox:
    """The bounded queue of frames a socket has yet to send."""

    def __init__(self, size: int = OUTBOX_SIZE) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(size)
        self.overflowed = asyncio.Event()

    def put(self, message: ws.ServerMessage) -> None:
        """Queue ``message``; a full outbox raises :class:`Overflow` (and stays overflowed)."""
        if self.overflowed.is_set():
            raise Overflow
        try:
            self.queue.put_nowait(ws.encode(message))
        except asyncio.QueueFull:
            self.overflowed.set()
            raise Overflow from None


def key_of(socket: Any) -> str:
    """The key a handshake carries: headers first (as for HTTP), then query, subprotocol."""
    headers = socket.headers
    if headers.get("authorization") is not None or headers.get("x-api-key") is not None:
        return presented_key(socket)
    query = socket.query_params.get("api_key")
    if query:
        redact_query_key(socket.scope)
        return str(query)
    for proto in socket.scope.get("subprotocols") or ():
        if proto.startswith(ws.KEY_SUBPROTOCOL_PREFIX) and len(proto) > len(
            ws.KEY_SUBPROTOCOL_PREFIX
        ):
            return str(proto[len(ws.KEY_SUBPROTOCOL_PREFIX) :])
    return presented_key(socket)  # raises the same 401 as HTTP


def redact_query_key(scope: Any) -> None:
    """Blank ``api_key`` in the scope's query string, in place: the server's own log line for
    the handshake (uvicorn prints the path with its query) must never carry the key."""
    raw = scope.get("query_string") or b""
    scope["query_string"] = _QUERY_KEY.sub(b"\\1redacted", raw)


def chosen_subprotocol(socket: Any) -> str | None:
    """``uml.v1`` when offered (a browser that offers protocols needs one chosen back)."""
    offered = socket.scope.get("subprotocols") or ()
    return ws.SUBPROTOCOL if ws.SUBPROTOCOL in offered else None


def _error(exc: APIError, ref: str | None = None, job_id: str | None = None) -> ws.Error:
    return ws.Error(error=exc.info, ref=ref, job_id=job_id, status=exc.status)


def render(job_id: str, event: Event) -> ws.ServerMessage | None:
    """The frame of one log event; ``None`` for events the socket does not show."""
    if isinstance(event, TokenEvent):
        return ws.Token(job_id=job_id, seq=event.seq, text=event.text) if event.text else None
    if isinstance(event, DoneEvent):
        return ws.Done(
            job_id=job_id, seq=event.seq, finish_reason=event.finish_reason, usage=event.usage
        )
    if isinstance(event, ErrorEvent):
        return ws.Error(job_id=job_id, seq=event.seq, error=event.error)
    return None


def parse_generate(msg: ws.Generate, res: Resources) -> JobSpec:
    """The generate body as a job spec, by the same rules as the HTTP endpoints."""
    raw = bytes(msg.body)
    kind = msg.kind
    if kind is None:
        try:
            decoded = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            raise invalid_request("body is not valid JSON", param="body") from None
        kind = "chat" if isinstance(decoded, dict) and "messages" in decoded else "completion"
    cfg = res.settings.server
    try:
        return (validation.chat(raw, cfg) if kind == "chat" else validation.completion(raw, cfg))[1]
    except APIError as exc:
        if exc.info.param:
            exc.info.param = f"body.{exc.info.param}"
        raise


class Session:
    """One authenticated socket's jobs and frames."""

    def __init__(self, res: Resources, user: ApiKey, outbox: Outbox | None = None) -> None:
        self.res = res
        self.user = user
        self.owner = user.id
        self.outbox = outbox or Outbox()
        self.policy = res.limiter.policy(user)
        self.forwarders: dict[str, asyncio.Task[None]] = {}

    async def handle(self, data: str | bytes) -> None:
        """Answer one client frame; errors become ``error`` frames, never a closed socket."""
        try:
            msg = ws.decode_client(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.outbox.put(_error(invalid_request(f"Bad message: {exc}")))
            return
        ref = getattr(msg, "ref", None)
        try:
            if isinstance(msg, ws.Generate):
                await self.generate(msg)
            elif isinstance(msg, ws.Subscribe):
                await self.subscribe(msg.job_id, msg.after)
            elif isinstance(msg, ws.Cancel):
                await self.cancel(msg.job_id)
            else:
                self.outbox.put(ws.Pong(ref=msg.ref))
        except APIError as exc:
            self.outbox.put(_error(exc, ref=ref, job_id=getattr(msg, "job_id", None)))
        except (RedisConnectionError, RedisTimeoutError) as exc:
            log.warning("ws: redis unavailable: %s", exc)
            down = unavailable("The job store is unavailable; retry shortly")
            self.outbox.put(_error(down, ref=ref, job_id=getattr(msg, "job_id", None)))
        except Overflow:
            raise
        except Exception:
            log.exception("ws: unhandled error answering %s", type(msg).__name__)
            failed = APIError(500, "Internal server error", type="server_error")
            self.outbox.put(_error(failed, ref=ref, job_id=getattr(msg, "job_id", None)))

    async def generate(self, msg: ws.Generate) -> None:
        spec = parse_generate(msg, self.res)
        await self.res.models.require(spec.model)
        if self.policy is not None:
            decision = await self.res.limiter.admit(self.policy, True)
            if not decision.allowed:
                raise rate_limited(decision)
        slot = await self.res.limiter.open_stream(self.policy)
        try:
            job_id = await jobs.submit(self.res.store, spec, self.owner, Priority.INTERACTIVE)
        except BaseException:
            if self.policy is not None and slot is not None:
                await self.res.limiter.close_stream(self.policy, slot)
            raise
        self.outbox.put(ws.JobAccepted(job_id=job_id, model=spec.model, ref=msg.ref))
        res = self.res
        events = jobs.follow(res.relay, res.redis, job_id, res.settings.redis.retention_s, IDLE_S)
        self._forward(job_id, res.limiter.leased(events, self.policy, slot))

    async def subscribe(self, job_id: str, after: int) -> None:
        """Follow a job from ``after``; past the end of a finished job's log, nothing comes."""
        snap = await self.res.store.read(job_id, self.owner)
        if snap is None:
            raise APIError(404, f"No job with id `{job_id}`", param="job_id", code="job_not_found")
        if snap.record.status in TERMINAL and after >= snap.last_seq:
            return
        if job_id in self.forwarders and not self.forwarders[job_id].done():
            raise invalid_request(f"Already following job `{job_id}` on this socket")
        try:
            sub = await self.res.relay.subscribe(job_id, after)
        except RelayUnavailable as exc:
            raise APIError(503, str(exc), type="service_unavailable") from exc
        self._forward(job_id, sub.events(IDLE_S))

    async def cancel(self, job_id: str) -> None:
        """A queued job ends now; a running one ends within an iteration (its ``done``
        frame, ``finish_reason: cancelled``, reaches every socket that follows it)."""
        if await self.res.store.cancel(job_id, self.owner) is None:
            raise APIError(404, f"No job with id `{job_id}`", param="job_id", code="job_not_found")

    def _forward(self, job_id: str, events: AsyncIterator[Event | None]) -> None:
        task = asyncio.create_task(self._pump(job_id, events), name=f"ws-{job_id}")
        self.forwarders[job_id] = task

    async def _pump(self, job_id: str, events: AsyncIterator[Event | None]) -> None:
        try:
            async for event in events:
                frame = None if event is None else render(job_id, event)
                if frame is not None:
                    self.outbox.put(frame)
        except RelayUnavailable as exc:
            info = ErrorInfo(message=str(exc), type="service_unavailable")
            with contextlib.suppress(Overflow):
                self.outbox.put(ws.Error(job_id=job_id, error=info, status=503))
        except Overflow:
            pass
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()

    async def close(self) -> None:
        """Stop every forwarder; jobs this socket started are cancelled by their follow()."""
        tasks = [t for t in self.forwarders.values() if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=10)
