"""Cut what a key holds open once the key stops being valid, on every API replica.

A stream or a WebSocket is authenticated when it opens; the key can stop being valid while
it runs: an admin revokes it, it expires, or a rotation's grace ends for the old secret it
presented. Each open stream or socket keeps a :class:`Watch` on its
:class:`~api.security.keys.Credential`, and one task per API process (:class:`KeyWatcher`)
fires the watches whose key no longer opens:

* it listens on :data:`~protocol.keys.KEY_CHANGES_CHANNEL`, where every revoke and rotate is
  published, and re-reads the named key's record: one ``GET`` per change, never per frame;
* once a second it compares each watch's clock deadline (expiry, grace end) with the time,
  in memory;
* every ``recheck_s``, and whenever it (re)subscribes, it re-reads every watched key, so a
  change published while this process was cut off from Redis still lands.

A watch that fires cuts the relay subscriptions bound to it (their readers raise
:class:`KeyRevoked`, which a stream renders as its final error event) and sets ``fired``,
which a WebSocket session awaits to close with :data:`protocol.ws.CLOSE_KEY_REVOKED` or
:data:`protocol.ws.CLOSE_KEY_EXPIRED`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from api.relay import StreamCut, Subscription
from api.security.keys import Credential
from protocol import auth
from protocol.auth import Verdict
from protocol.keys import KEY_CHANGES_CHANNEL, apikey_key, reply_text
from protocol.openai import ErrorInfo

log = logging.getLogger(__name__)

_REASONS: dict[Verdict, str] = {
    "revoked": "The API key has been revoked",
    "expired": "The API key has expired",
    "wrong": "The API key's old secret is past its rotation grace",
}
TICK_S = 1.0
"""How often clock deadlines are compared with the time (and the longest pub/sub wait)."""


class KeyRevoked(StreamCut):
    """The stream's key no longer opens: revoked, expired or rotated out."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(_REASONS.get(verdict, _REASONS["revoked"]))
        self.verdict = verdict

    def info(self) -> ErrorInfo:
        return ErrorInfo(message=str(self), type="invalid_request_error", code="invalid_api_key")


class Watch:
    """One open connection's watch on its credential; fires once, with a verdict."""

    def __init__(self, watcher: KeyWatcher, credential: Credential) -> None:
        self._watcher = watcher
        self.credential = credential
        self.record = credential.key
        """The key's record as last read."""
        self.until = auth.valid_until(credential.key, credential.presented)
        self.verdict: Verdict | None = None
        self.fired = asyncio.Event()
        self._subs: list[Subscription] = []

    def bind(self, sub: Subscription) -> None:
        """Cut ``sub`` when the watch fires (at once if it has)."""
        if self.verdict is not None:
            sub.cut(KeyRevoked(self.verdict))
        else:
            self._subs.append(sub)

    def fire(self, verdict: Verdict) -> None:
        if self.verdict is not None:
            return
        self.verdict = verdict
        self.fired.set()
        for sub in self._subs:
            sub.cut(KeyRevoked(verdict))
        self._subs.clear()

    def judge(self, record: auth.ApiKey | None, now: float) -> None:
        """Fire unless ``record`` (the stored one; ``None``: deleted) still opens."""
        presented = self.credential.presented
        verdict: Verdict = "revoked" if record is None else auth.check_hash(record, presented, now)
        if verdict != "ok":
            self.fire(verdict)
        elif record is not None:
            self.record = record
            self.until = auth.valid_until(record, presented)

    def close(self) -> None:
        self._watcher.forget(self)
        self._subs.clear()


class KeyWatcher:
    """The per-process registry of watches, and the task that fires them."""

    def __init__(self, redis: aioredis.Redis, recheck_s: float) -> None:
        self._redis = redis
        self._recheck_s = recheck_s
        self._watches: dict[str, weakref.WeakSet[Watch]] = {}
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()
        """Set while the change channel is subscribed (tests wait on it)."""

    def watch(self, credential: Credential) -> Watch | None:
        """A watch on ``credential``; ``None`` for the bootstrap key, which cannot be revoked."""
        if not credential.revocable:
            return None
        watch = Watch(self, credential)
        self._watches.setdefault(credential.key.id, weakref.WeakSet()).add(watch)
        return watch

    def forget(self, watch: Watch) -> None:
        key_id = watch.credential.key.id
        group = self._watches.get(key_id)
        if group is not None:
            group.discard(watch)
            if not group:
                del self._watches[key_id]

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="uml-key-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=2)

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            try:
                await self._listen()
            except (RedisError, OSError) as exc:
                self.subscribed.clear()
                log.warning("key watcher: redis unavailable (%s); retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _listen(self) -> None:
        async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
            await pubsub.subscribe(KEY_CHANGES_CHANNEL)
            await self.recheck(list(self._watches))
            self.subscribed.set()
            full = time.monotonic()
            while True:
                message = await pubsub.get_message(timeout=TICK_S)
                if message is not None:
                    await self.recheck([reply_text(message["data"])])
                if time.monotonic() - full >= self._recheck_s:
                    await self.recheck(list(self._watches))
                    full = time.monotonic()
                self._expire(time.time())

    async def recheck(self, key_ids: list[str]) -> None:
        """Re-read the records of ``key_ids`` (one ``MGET``) and judge their watches."""
        key_ids = [k for k in key_ids if k in self._watches]
        if not key_ids:
            return
        raws: list[Any] = await self._redis.mget([apikey_key(k) for k in key_ids])
        now = time.time()
        for key_id, raw in zip(key_ids, raws, strict=True):
            record = None if raw is None else auth.decode_record(raw)
            for watch in list(self._watches.get(key_id, ())):
                watch.judge(record, now)

    def _expire(self, now: float) -> None:
        for group in list(self._watches.values()):
            for watch in list(group):
                if watch.until is not None and now >= watch.until:
                    watch.judge(watch.record, now)
