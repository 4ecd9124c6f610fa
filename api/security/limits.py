"""Per-key rate limits shared by every API replica: burst, per minute, per hour, tokens, streams.

Each window is a sliding-window counter (the algorithm of the ``limits`` library's
``SlidingWindowCounterRateLimiter``): a counter for the current aligned bucket and one for
the previous, and the count is ``previous * (part of the window still covering it) +
current``. It needs O(1) memory per key and window, where a moving window's log would
hold up to ``rph`` timestamps per key. Clocks are Redis's (``TIME``), so replicas agree::

    request ─► auth middleware ─► ApiKey ─► policy_for ─► Policy | None (unlimited)
                                                │
        admit_request.lua, one EVALSHA: roll buckets, test burst/rpm/rph (+ tpm on generation
        routes), charge all of them or none ─► Decision
                                                │
             429 + Retry-After + RateLimit-*  ◄─┴─►  handler; RateLimit-* on its response

Tokens are charged by the worker that ends a job (``protocol/meter.py``), and streams hold
a renewed lease in a sorted set (:meth:`Limiter.open_stream`). Why Lua and not ``limits`` itself:
its ``hit`` charges one window per round trip and answers only a bool, so three windows
would be three round trips (six with the stats the headers need) and a refusal by the
third would already have charged the first two; and it cannot charge a cost that may
overrun the limit, which a finished job's tokens must.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
import redis.asyncio as aioredis

from api.errors import APIError
from protocol import scripts
from protocol.auth import BOOTSTRAP_ID, ApiKey
from protocol.events import Event
from protocol.keys import ratelimit_key, sockets_key, streams_key
from protocol.meter import TOKEN_WINDOW_MS
from protocol.settings import LimitSettings

METERED = {"uml_metered": True}
"""Route ``opt`` of the generation routes: a spent token budget refuses them."""


@dataclass(frozen=True)
class Window:
    """``limit`` per ``period_ms``; ``name`` is the counter's and the message's."""

    name: str
    period_ms: int
    limit: int


@dataclass(frozen=True)
class Policy:
    """What one key may do: request windows, a token budget, caps on streams and sockets."""

    key_id: str
    requests: tuple[Window, ...]
    tokens: Window
    max_streams: int
    max_sockets: int
    lease_ms: int


_UNIT = {1000: "second", 60_000: "minute", 3_600_000: "hour"}


def policy_for(key: object, cfg: LimitSettings) -> Policy | None:
    """The key's limits (its own, else the defaults); ``None``: unlimited.

    The bootstrap admin key is unlimited: it is the break-glass key that must still work
    to revoke a runaway key, and it is not meant to carry traffic.
    """
    if not cfg.enabled or not isinstance(key, ApiKey) or key.id == BOOTSTRAP_ID:
        return None
    own = key.limits
    return Policy(
        key_id=key.id,
        requests=(
            Window("burst", 1000, own.burst or cfg.burst),
            Window("rpm", 60_000, own.rpm or cfg.rpm),
            Window("rph", 3_600_000, own.rph or cfg.rph),
        ),
        tokens=Window("tpm", TOKEN_WINDOW_MS, own.tpm or cfg.tpm),
        max_streams=cfg.max_streams,
        max_sockets=cfg.max_sockets,
        lease_ms=int(cfg.stream_lease_s * 1000),
    )


def _weighted(previous: int, period: int, elapsed: int) -> int:
    """The previous bucket's share of the window ``elapsed`` ms into the current bucket."""
    return previous * (period - elapsed) // period


def _decayed_by(previous: int, period: int, room: int) -> int:
    """The first ``elapsed`` at which ``previous``'s share is at most ``room`` (``room`` >= 0):
    ``previous * (period - elapsed) < (room + 1) * period``."""
    if previous == 0:
        return 0
    return max(0, period - ((room + 1) * period - 1) // previous)


@dataclass(frozen=True)
class Count:
    """One window's buckets as the admit script saw them, before any charge."""

    window: Window
    current: int
    previous: int
    now_ms: int

    @property
    def elapsed_ms(self) -> int:
        return self.now_ms % self.window.period_ms

    def used(self) -> int:
        return _weighted(self.previous, self.window.period_ms, self.elapsed_ms) + self.current

    def wait_ms(self, cost: int = 1, charged: int = 0) -> int:
        """Milliseconds until ``cost`` more fits after ``charged`` more were counted in this
        bucket, if nothing else is charged meanwhile: the least wait, to the millisecond, by
        the same integer arithmetic as the admit script. ``cost`` is at most the limit."""
        period, limit = self.window.period_ms, self.window.limit
        elapsed, cur, prev = self.elapsed_ms, self.current + charged, self.previous
        if _weighted(prev, period, elapsed) + cur + cost <= limit:
            return 0
        if cur + cost <= limit:  # the previous bucket's share must decay far enough
            at = _decayed_by(prev, period, limit - cur - cost)
            if at < period:
                return max(at, elapsed) - elapsed
        # this bucket must become the previous one, and its share decay far enough
        return period - elapsed + min(period, _decayed_by(cur, period, limit - cost))

    def remaining(self, charged: int) -> int:
        return max(0, self.window.limit - self.used() - charged)

    def reset_s(self, charged: int) -> int:
        """Seconds until room frees up: the retry time when none is left, else the bucket end."""
        if self.remaining(charged) == 0:
            return max(1, math.ceil(self.wait_ms(1, charged) / 1000))
        return max(1, math.ceil((self.window.period_ms - self.elapsed_ms) / 1000))


@dataclass(frozen=True)
class Decision:
    """The outcome of one admission: every window's count and which one refused, if any."""

    allowed: bool
    requests: tuple[Count, ...]
    tokens: Count | None

    @property
    def refused_by(self) -> Count | None:
        if self.allowed:
            return None
        for count in self.requests:
            if count.used() + 1 > count.window.limit:
                return count
        if self.tokens is not None and self.tokens.used() >= self.tokens.window.limit:
            return self.tokens
        return min(self.requests, key=lambda c: c.remaining(0))  # a race with the clock

    def headers(self) -> dict[str, str]:
        """IETF ``RateLimit-*`` for the request window closest to exhaustion (the refusing
        one on a 429), ``RateLimit-Policy`` for all, ``Retry-After`` on a refusal."""
        refused = self.refused_by
        charged = 1 if self.allowed else 0
        shown = refused or min(self.requests, key=lambda c: (c.remaining(1), -c.reset_s(1)))
        out = {
            "RateLimit-Limit": str(shown.window.limit),
            "RateLimit-Remaining": str(shown.remaining(charged)),
            "RateLimit-Reset": str(shown.reset_s(charged)),
            "RateLimit-Policy": ", ".join(
                f"{c.window.limit};w={c.window.period_ms // 1000}" for c in self.requests
            ),
        }
        if refused is not None:
            out["Retry-After"] = str(max(1, math.ceil(refused.wait_ms(1) / 1000)))
        return out


def decide(policy: Policy, raw: list[int], metered: bool) -> Decision:
    """Read the admit script's answer ``[ok, now_ms, cur, prev, ...]``."""
    now = int(raw[1])
    windows = [*policy.requests, *([policy.tokens] if metered else [])]
    counts = [
        Count(w, int(raw[2 + 2 * i]), int(raw[3 + 2 * i]), now) for i, w in enumerate(windows)
    ]
    n = len(policy.requests)
    return Decision(
        allowed=bool(raw[0]), requests=tuple(counts[:n]), tokens=counts[n] if metered else None
    )


def rate_limited(decision: Decision) -> APIError:
    """A 429 in OpenAI's shape: type ``requests`` or ``tokens``, code ``rate_limit_exceeded``."""
    count = decision.refused_by
    assert count is not None
    window = count.window
    per = _UNIT.get(window.period_ms, f"{window.period_ms} ms")
    kind = "tokens" if window.name == "tpm" else "requests"
    message = (
        f"Rate limit reached for this API key on {kind} per {per} ({window.name}): "
        f"Limit {window.limit}, Used {count.used()}. "
        f"Please try again in {decision.headers()['Retry-After']}s."
    )
    return APIError(429, message, type=kind, code="rate_limit_exceeded", headers=decision.headers())


def too_many_streams(policy: Policy, open_now: int) -> APIError:
    return _too_many("streams", policy.max_streams, open_now)


def too_many_sockets(policy: Policy, open_now: int) -> APIError:
    return _too_many("WebSockets", policy.max_sockets, open_now)


def _too_many(what: str, limit: int, open_now: int) -> APIError:
    return APIError(
        429,
        f"Too many open {what} for this API key: Limit {limit}, Open {open_now}. "
        "Close one or retry shortly.",
        type="requests",
        code="rate_limit_exceeded",
        headers={"Retry-After": "1"},
    )


class MessageBudget:
    """A token bucket for one WebSocket's messages, in memory: ``rate`` a second sustained,
    ``burst`` at once. No Redis: it guards the socket's own process from a flood before any
    message costs a Redis call (the key's limits still apply to what a message starts)."""

    def __init__(self, rate: float, burst: int, now: float | None = None) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = time.monotonic() if now is None else now

    def take(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class Limiter:
    """The Redis side: admit a request, charge tokens, hold stream leases."""

    def __init__(self, redis: aioredis.Redis, cfg: LimitSettings) -> None:
        self._redis = redis
        self._cfg = cfg
        self._admit = redis.register_script(scripts.load("admit_request"))
        self._lease = redis.register_script(scripts.load("slot_lease"))

    def policy(self, key: object) -> Policy | None:
        return policy_for(key, self._cfg)

    async def admit(self, policy: Policy, metered: bool) -> Decision:
        """Check every window and charge one request to each, or to none: one round trip."""
        windows = [*policy.requests, *([policy.tokens] if metered else [])]
        keys = [ratelimit_key(policy.key_id, w.name) for w in windows]
        args: list[int] = [len(policy.requests), int(metered)]
        for w in windows:
            args += [w.period_ms, w.limit]
        raw = await self._admit(keys=keys, args=args)
        return decide(policy, list(raw), metered)

    async def open_stream(self, policy: Policy | None) -> str | None:
        """Take a stream slot (a lease token) or raise 429; ``None`` when unlimited."""
        if policy is None:
            return None
        token, open_now = await self._take(streams_key(policy.key_id), policy.max_streams, policy)
        if token is None:
            raise too_many_streams(policy, open_now)
        return token

    async def close_stream(self, policy: Policy, token: str) -> None:
        """Give the slot back; survives the cancellation of a disconnected stream."""
        await self._give(streams_key(policy.key_id), token)

    async def open_socket(self, policy: Policy | None) -> str | None:
        """Take one of the key's WebSocket slots or raise 429; ``None`` when unlimited."""
        if policy is None:
            return None
        token, open_now = await self._take(sockets_key(policy.key_id), policy.max_sockets, policy)
        if token is None:
            raise too_many_sockets(policy, open_now)
        return token

    async def renew_socket(self, policy: Policy, token: str) -> None:
        """Extend a socket's slot lease; call every third of the lease while it is open."""
        await self._lease(keys=[sockets_key(policy.key_id)], args=[0, policy.lease_ms, token])

    async def close_socket(self, policy: Policy, token: str) -> None:
        await self._give(sockets_key(policy.key_id), token)

    async def _take(self, name: str, cap: int, policy: Policy) -> tuple[str | None, int]:
        token = secrets.token_hex(8)
        ok, open_now = await self._lease(keys=[name], args=[cap, policy.lease_ms, token])
        return (token if ok else None), int(open_now)

    async def _give(self, name: str, token: str) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            try:
                await self._redis.zrem(name, token)
            except Exception:  # best effort: the lease runs out by itself
                pass

    async def leased(
        self, events: AsyncIterator[Event | None], policy: Policy | None, token: str | None
    ) -> AsyncIterator[Event | None]:
        """``events``, renewing the stream's slot lease while they flow, freeing it at the end.
        (Tokens are not charged here: the worker charges a job's when it ends.)"""
        renewed = time.monotonic()
        try:
            async for event in events:
                if policy is not None and token is not None:
                    if (time.monotonic() - renewed) * 3000 > policy.lease_ms:
                        await self._lease(
                            keys=[streams_key(policy.key_id)], args=[0, policy.lease_ms, token]
                        )
                        renewed = time.monotonic()
                yield event
        finally:
            if policy is not None and token is not None:
                await self.close_stream(policy, token)
