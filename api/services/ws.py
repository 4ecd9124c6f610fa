"""One ``/ws`` socket's session: answer its messages, run jobs, forward their logs.

The session reads client messages (``protocol.ws``) and answers them; each job it follows
gets a forwarder task reading the job's log through the process's relay (one ``XREAD`` for
every stream of the process) and putting frames into the socket's outbox
(:class:`~api.services.ws_frames.Outbox`). A single sender task drains the outbox into the
socket.

* **Several jobs per socket**: one forwarder per job, all writing to the one outbox.
* **Closing cancels what the socket started**: jobs from ``generate`` follow
  :func:`api.services.generation.follow`, which cancels a job abandoned before its end
  (shielded); jobs it only ``subscribe``\\d to are left running.
* **A slow reader stalls nobody**: the outbox is bounded
  (:data:`~api.services.ws_frames.OUTBOX_SIZE` frames). When it is full the socket is
  closed with :data:`protocol.ws.CLOSE_OVERLOADED` (its jobs are cancelled as on any
  close); the relay pauses a full subscriber on its own, so neither Redis reads nor other
  sockets wait for this one.
* **Inside the key's limits**: the handshake is a request (charged, audited) and takes one of
  the key's socket slots; ``generate``, ``subscribe`` and ``cancel`` are each charged as the
  HTTP request they stand for, and a followed job holds a stream slot as over HTTP; every
  message first spends the socket's own :class:`~api.security.limits.MessageBudget`.
* **Only while the key opens**: the key is re-read before every ``generate`` and
  ``subscribe``, and the session's :class:`~api.security.revocation.Watch` ends the socket
  with :data:`protocol.ws.CLOSE_KEY_REVOKED` / :data:`~protocol.ws.CLOSE_KEY_EXPIRED` when
  the key is revoked, expires or is rotated out, on whichever replica holds the socket.

The handshake (which key, what admits it) is :mod:`api.services.ws_handshake`'s; the frames
(the outbox, rendering, parsing a ``generate``) are :mod:`api.services.ws_frames`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any

import anyio
import msgspec
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from api.errors import APIError, invalid_request, unavailable
from api.relay import RelayUnavailable
from api.security import audit
from api.security.keys import Credential, refusal
from api.security.limits import MessageBudget, Policy, rate_limited
from api.services import generation, jobs
from api.services.ws_frames import Outbox, Overflow, error_frame, parse_generate, render
from api.state import Resources
from protocol import ws
from protocol.events import DoneEvent, ErrorEvent, Event, is_final
from protocol.openai import ErrorInfo
from protocol.states import TERMINAL, Priority

log = logging.getLogger(__name__)

IDLE_S = 15.0
_AS_CLOSED = {"expired": "expired", "wrong": "rotated: the old secret's grace ended"}


@dataclass
class Op:
    """One audited operation a socket sent: when it came, and its record's request id."""

    name: str
    started: float = field(default_factory=time.time)
    t0: float = field(default_factory=time.perf_counter)
    request_id: str = field(default_factory=lambda: secrets.token_hex(12))


class Session:
    """One authenticated socket's jobs and frames, inside its key's limits and validity."""

    def __init__(
        self,
        res: Resources,
        credential: Credential,
        writer: audit.AuditWriter | None = None,
        socket_id: str = "",
        slot: str | None = None,
        outbox: Outbox | None = None,
    ) -> None:
        self.res = res
        self.writer = writer
        self.credential = credential
        self.user = credential.key
        self.owner = credential.key.id
        self.socket_id = socket_id
        self.slot = slot
        self.outbox = outbox or Outbox()
        self.policy = res.limiter.policy(self.user)
        self.watch = res.watcher.watch(credential)
        limits = res.settings.limits
        self.budget = MessageBudget(limits.ws_messages_per_s, limits.ws_message_burst)
        self.refused_in_row = 0
        self.ended: tuple[int, str] | None = None
        self.ending = asyncio.Event()
        self.forwarders: dict[str, asyncio.Task[None]] = {}

    async def handle(self, data: str | bytes) -> None:
        """Answer one client frame; errors become ``error`` frames, never a closed socket
        (but for a flood past the socket's message budget)."""
        if not self._within_budget():
            return
        try:
            msg = ws.decode_client(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.outbox.put(error_frame(invalid_request(f"Bad message: {exc}")))
            return
        except RecursionError:  # msgspec's guard against deep nesting
            self.outbox.put(error_frame(invalid_request("Bad message: nested too deeply")))
            return
        if isinstance(msg, ws.Ping):
            self.outbox.put(ws.Pong(ref=msg.ref))
            return
        await self._answer(msg, Op(str(msg.__struct_config__.tag)))

    async def _answer(self, msg: ws.Generate | ws.Subscribe | ws.Cancel, op: Op) -> None:
        ref = getattr(msg, "ref", None)
        job_id = getattr(msg, "job_id", None)
        try:
            if isinstance(msg, ws.Generate):
                await self.generate(msg, op)
            elif isinstance(msg, ws.Subscribe):
                await self.subscribe(msg.job_id, msg.after)
                self._audit(op, 200, job_id=job_id)
            else:
                await self.cancel(msg.job_id)
                self._audit(op, 200, job_id=job_id)
        except APIError as exc:
            self._refuse(op, exc, ref, job_id)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            log.warning("ws: redis unavailable: %s", exc)
            down = unavailable("The job store is unavailable; retry shortly")
            self._refuse(op, down, ref, job_id)
        except Overflow:
            raise
        except Exception:
            log.exception("ws: unhandled error answering %s", op.name)
            failed = APIError(500, "Internal server error", type="server_error")
            self._refuse(op, failed, ref, job_id)

    def _refuse(self, op: Op, exc: APIError, ref: str | None, job_id: str | None) -> None:
        self._audit(op, exc.status, job_id=job_id)
        self.outbox.put(error_frame(exc, ref=ref, job_id=job_id))

    def _within_budget(self) -> bool:
        """Spend one message of the socket's budget; past it, an error frame, and past it by
        a whole burst more, the end of the socket (1008)."""
        if self.budget.take():
            self.refused_in_row = 0
            return True
        self.refused_in_row += 1
        if self.refused_in_row > self.budget.burst:
            self.end(ws.CLOSE_POLICY, "too many messages")
            return False
        rate = self.budget.rate
        self.outbox.put(
            error_frame(
                APIError(
                    429,
                    f"Too many messages on this WebSocket: at most {rate:g} a second "
                    f"(bursts of {self.budget.burst}); this one was dropped",
                    type="requests",
                    code="rate_limit_exceeded",
                )
            )
        )
        return False

    async def _admit(self, metered: bool) -> None:
        """Charge one request to the key's windows, as HTTP does (429 when over)."""
        if self.policy is not None:
            decision = await self.res.limiter.admit(self.policy, metered)
            if not decision.allowed:
                raise rate_limited(decision)

    async def _recheck(self) -> None:
        """Re-read the key: one revoked, expired or rotated out ends the socket now."""
        verdict = await self.res.authenticator.recheck(self.credential)
        if verdict != "ok":
            if self.watch is not None:
                self.watch.fire(verdict)
            raise refusal(verdict)

    async def generate(self, msg: ws.Generate, op: Op) -> None:
        await self._recheck()
        spec = parse_generate(msg, self.res)
        await self.res.models.require(spec.model)
        await generation.check_context(self.res.models, spec, param="body.max_tokens")
        await self._admit(metered=True)
        slot = await self.res.limiter.open_stream(self.policy)
        try:
            job_id = await generation.submit(self.res.store, spec, self.owner, Priority.INTERACTIVE)
        except BaseException:
            if self.policy is not None and slot is not None:
                await self.res.limiter.close_stream(self.policy, slot)
            raise
        self.outbox.put(ws.JobAccepted(job_id=job_id, model=spec.model, ref=msg.ref))
        res = self.res
        events = generation.follow(res.relay, res.store, job_id, IDLE_S)
        self._forward(job_id, res.limiter.leased(events, self.policy, slot), op, spec.model)

    async def subscribe(self, job_id: str, after: int) -> None:
        """Follow a job from ``after``; past the end of a finished job's log, nothing comes."""
        await self._recheck()
        await self._admit(metered=False)
        snap = await self.res.store.read(job_id, self.owner)
        if snap is None:
            raise jobs.not_found(job_id)
        if snap.record.status in TERMINAL and after >= snap.last_seq:
            return
        if job_id in self.forwarders and not self.forwarders[job_id].done():
            raise invalid_request(f"Already following job `{job_id}` on this socket")
        slot = await self.res.limiter.open_stream(self.policy)
        try:
            sub = await self.res.relay.subscribe(job_id, after)
        except BaseException as exc:
            if self.policy is not None and slot is not None:
                await self.res.limiter.close_stream(self.policy, slot)
            if isinstance(exc, RelayUnavailable):
                raise APIError(503, str(exc), type="service_unavailable") from exc
            raise
        self._forward(job_id, self.res.limiter.leased(sub.events(IDLE_S), self.policy, slot))

    async def cancel(self, job_id: str) -> None:
        """A queued job ends now; a running one ends within an iteration (its ``done``
        frame, ``finish_reason: cancelled``, reaches every socket that follows it)."""
        await self._admit(metered=False)
        if await self.res.store.cancel(job_id, self.owner) is None:
            raise jobs.not_found(job_id)

    def _forward(
        self,
        job_id: str,
        events: AsyncIterator[Event | None],
        op: Op | None = None,
        model: str | None = None,
    ) -> None:
        pump = self._pump(job_id, events, op, model)
        self.forwarders[job_id] = asyncio.create_task(pump, name=f"ws-{job_id}")

    async def _pump(
        self, job_id: str, events: AsyncIterator[Event | None], op: Op | None, model: str | None
    ) -> None:
        """Frames of the job's events into the outbox; a ``generate`` is audited at its end,
        with its tokens (499 if the socket closed first and so cancelled it)."""
        last: Event | None = None
        try:
            async for event in events:
                last = event if event is not None else last
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
            if op is not None:
                self._audit_job(op, job_id, model, last)

    def _audit_job(self, op: Op, job_id: str, model: str | None, last: Event | None) -> None:
        fields: dict[str, Any] = {"job_id": job_id, "model": model}
        status = 499
        if isinstance(last, DoneEvent):
            status = 200
            fields.update(
                prompt_tokens=last.usage.prompt_tokens,
                completion_tokens=last.usage.completion_tokens,
            )
        elif isinstance(last, ErrorEvent) and is_final(last):
            status = generation.status_for_error(last.error)
        self._audit(op, status, **fields)

    def _audit(self, op: Op, status: int, **fields: Any) -> None:
        writer = self.writer
        if writer is None:
            return
        writer.submit(
            audit.socket_record(
                writer,
                self.user,
                path=f"/ws/{op.name}",
                status=status,
                started=op.started,
                t0=op.t0,
                request_id=op.request_id,
                socket=self.socket_id,
                **fields,
            )
        )

    def end(self, code: int, reason: str) -> None:
        """Close the socket with ``code`` (the first reason given wins)."""
        if self.ended is None:
            self.ended = (code, reason)
        self.ending.set()

    def endings(self) -> list[Awaitable[Any]]:
        """What ends the socket besides its client: an overflow, a flood, its key's watch."""
        waits: list[Awaitable[Any]] = [self.outbox.overflowed.wait(), self.ending.wait()]
        if self.watch is not None:
            waits.append(self.watch.fired.wait())
        if self.policy is not None and self.slot is not None:
            waits.append(self._keep_slot(self.policy, self.slot))
        return waits

    async def _keep_slot(self, policy: Policy, slot: str) -> None:
        while True:
            await asyncio.sleep(policy.lease_ms / 3000)
            with contextlib.suppress(RedisConnectionError, RedisTimeoutError):
                await self.res.limiter.renew_socket(policy, slot)

    def close_code(self) -> tuple[int, str] | None:
        """The code the server closes with; ``None`` when the client closed."""
        verdict = None if self.watch is None else self.watch.verdict
        if verdict == "revoked":
            return ws.CLOSE_KEY_REVOKED, "API key revoked"
        if verdict is not None:
            return ws.CLOSE_KEY_EXPIRED, f"API key {_AS_CLOSED.get(verdict, verdict)}"
        if self.outbox.overflowed.is_set():
            return ws.CLOSE_OVERLOADED, "send buffer overflow: reading too slowly"
        return self.ended

    async def close(self) -> None:
        """Stop every forwarder (jobs this socket started are cancelled by their follow()),
        give the socket's slot back and drop its watch."""
        tasks = [t for t in self.forwarders.values() if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        if self.watch is not None:
            self.watch.close()
        if self.policy is not None and self.slot is not None:
            await self.res.limiter.close_socket(self.policy, self.slot)
