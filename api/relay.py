"""The stream relay: one reader task per API process serves every open job stream.

The reader holds one dedicated Redis connection and loops on a single ``XREAD BLOCK`` over
the event logs of every subscribed job plus this process's *wake stream*. Subscribing
registers ``(job_id, after_seq)`` and, unless a wake is already pending, ``XADD``\\s to the
wake stream so the blocked ``XREAD`` returns at once and the next one includes the new key.

Per log the reader reads from the minimum cursor of that key's subscribers and hands each
subscriber only the entries beyond its own cursor, so a late subscriber gets every event
from ``after_seq + 1`` on with no gap and no duplicate. Subscriber queues are bounded: a
full subscriber is *paused* (left out of the read set and its cursor frozen) and resumes
from the log when its consumer catches up, so a slow client never costs memory or stalls
the others. Redis errors are retried with capped backoff; if Redis stays down for
``fail_after_s`` every subscriber is failed with :class:`RelayUnavailable`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from protocol.events import Event, decode_event, is_final
from protocol.keys import EVENT_FIELD, PREFIX, entry_id, events_key, seq_of
from protocol.openai import ErrorInfo

log = logging.getLogger(__name__)

QUEUE_SIZE = 256
"""Events buffered per subscriber before it is paused."""
READ_COUNT = 512
"""Most entries read per stream per XREAD."""
_WAKE_TTL_S = 3600
_EVENT_FIELD = EVENT_FIELD.encode()


class StreamCut(Exception):
    """A stream ended by the server before its log did; ``info`` is what its reader is told."""

    def info(self) -> ErrorInfo:
        return ErrorInfo(message=str(self), type="service_unavailable")


class RelayUnavailable(StreamCut):
    """The relay could not read from Redis for too long; the stream is lost to this reader."""


class Subscription:
    """One consumer of one job's log; iterate it for events, close it when done."""

    def __init__(self, relay: Relay, job_id: str, after_seq: int) -> None:
        self.relay = relay
        self.job_id = job_id
        self.key = events_key(job_id).encode()
        self.cursor = after_seq
        self.paused = False
        self.closed = False
        self.cut_by: StreamCut | None = None
        self.queue: asyncio.Queue[Event | BaseException] = asyncio.Queue(QUEUE_SIZE)

    def offer(self, seq: int, event: Event) -> bool:
        """Queue ``event`` unless it is stale or the queue is full (then pause)."""
        if seq <= self.cursor or self.paused:
            return False
        if self.queue.full():
            self.paused = True
            return False
        self.queue.put_nowait(event)
        self.cursor = seq
        return True

    def cut(self, reason: StreamCut) -> None:
        """End the subscription: its reader raises ``reason`` at once, queued events or not."""
        self.cut_by = reason
        if not self.queue.full():
            self.queue.put_nowait(reason)  # wakes a reader waiting on an empty queue

    async def get(self, timeout: float | None = None) -> Event | None:
        """The next event, or ``None`` after ``timeout`` seconds with none."""
        if self.cut_by is not None:
            raise self.cut_by
        try:
            async with asyncio.timeout(timeout):
                item = await self.queue.get()
        except TimeoutError:
            return None
        if isinstance(item, BaseException):
            raise item
        if self.paused and self.queue.qsize() <= QUEUE_SIZE // 2:
            self.paused = False
            await self.relay.resume(self)
        return item

    async def events(self, idle_s: float | None = None) -> AsyncIterator[Event | None]:
        """Events until the final one; ``None`` after each ``idle_s`` without an event."""
        try:
            while True:
                event = await self.get(idle_s)
                yield event
                if event is not None and is_final(event):
                    return
        finally:
            self.close()

    def close(self) -> None:
        self.relay.unregister(self)


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def _field(fields: Any, name: bytes) -> bytes:
    """``name``'s value in a raw stream entry's flat ``[field, value, ...]`` list."""
    if isinstance(fields, dict):
        return bytes(fields[name])
    for i in range(0, len(fields) - 1, 2):
        if fields[i] == name:
            return bytes(fields[i + 1])
    raise KeyError(name)


class ReadSet:
    """The relay's ``XREAD``, kept packed between reads.

    redis-py packs a command argument by argument in Python: ~4 ms for the 4,000 arguments
    of an ``XREAD`` over 2,000 logs, on every read. Here each log's key and cursor are kept
    as ready RESP fragments, and only the logs marked since the last read (a cursor moved, a
    subscriber came, left, paused or resumed) are recomputed; a read joins the fragments.
    """

    def __init__(self) -> None:
        self._keys: dict[bytes, bytes] = {}
        """Log key → its fragment, for every log with a subscriber that is not paused."""
        self._ids: dict[bytes, bytes] = {}
        """Log key → the fragment of the id to read after (same order as ``_keys``)."""
        self._keys_blob: bytes | None = b""
        self._dirty: set[bytes] = set()

    def mark(self, key: bytes) -> None:
        self._dirty.add(key)

    def __len__(self) -> int:
        return len(self._keys)

    def _refresh(self, subs: dict[bytes, set[Subscription]]) -> None:
        for key in self._dirty:
            group = subs.get(key)
            cursors = [s.cursor for s in group if not s.paused] if group else []
            if cursors:
                if key not in self._keys:
                    self._keys[key] = _bulk(key)
                    self._keys_blob = None
                self._ids[key] = _bulk(entry_id(min(cursors)).encode())
            elif key in self._keys:
                del self._keys[key], self._ids[key]
                self._keys_blob = None
        self._dirty.clear()

    def command(
        self,
        subs: dict[bytes, set[Subscription]],
        wake_key: bytes,
        wake_cursor: bytes,
        count: int,
        block_ms: int,
    ) -> bytes:
        """``XREAD COUNT count BLOCK block_ms STREAMS wake key… wake_cursor id…`` in RESP."""
        self._refresh(subs)
        if self._keys_blob is None:
            self._keys_blob = b"".join(self._keys.values())
        head = b"*%d\r\n$5\r\nXREAD\r\n$5\r\nCOUNT\r\n%s$5\r\nBLOCK\r\n%s$7\r\nSTREAMS\r\n" % (
            6 + 2 * (len(self._keys) + 1),
            _bulk(b"%d" % count),
            _bulk(b"%d" % block_ms),
        )
        return b"".join(
            [head, _bulk(wake_key), self._keys_blob, _bulk(wake_cursor), *self._ids.values()]
        )


class Relay:
    """Multiplexes every open event log of this process over one blocking XREAD."""

    def __init__(
        self,
        url: str,
        *,
        block_ms: int = 2000,
        socket_timeout_s: float = 10.0,
        fail_after_s: float = 10.0,
    ) -> None:
        if block_ms / 1000 >= socket_timeout_s:
            raise ValueError(
                f"relay XREAD BLOCK ({block_ms} ms) must stay below the socket timeout "
                f"({socket_timeout_s} s)"
            )
        self.block_ms = block_ms
        self.fail_after_s = fail_after_s
        self.wake_key = f"{PREFIX}:relay:wake:{secrets.token_hex(8)}".encode()
        kwargs: dict[str, Any] = {
            "socket_timeout": socket_timeout_s,
            "socket_connect_timeout": socket_timeout_s,
            "socket_keepalive": True,
        }
        # only the reader task uses this pool, for one connection it keeps
        self._reader = aioredis.ConnectionPool.from_url(url, **kwargs)
        self._conn: Any = None
        self._waker = aioredis.Redis.from_url(url, **kwargs)
        self._subs: dict[bytes, set[Subscription]] = {}
        self._read_set = ReadSet()
        self._wake_cursor = b"0-0"
        self._wake_pending = False
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._backing_off = False
        self.reads = 0
        self.draining = False
        """Set when the process is shutting down: a stream cut now is not a client leaving,
        so its job is not cancelled (the client resumes it on another replica)."""

    # ---- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="uml-relay")

    async def stop(self) -> None:
        """Stop the reader: ask it to leave after its current XREAD (woken at once).

        Cancelling a task blocked in redis-py's XREAD can hang (seen with redis-py 8),
        so cancellation is only the fallback if the reader does not leave in time.
        """
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True
            self._wake_pending = False
            await self.wake()
            done: set[asyncio.Task[None]] = set()
            if not self._backing_off:  # cancelling a sleep is safe; an XREAD is not
                done, _ = await asyncio.wait([task], timeout=self.block_ms / 1000 + 1)
            if not done:
                task.cancel()
                await asyncio.wait([task], timeout=1)
        self._fail_all(RelayUnavailable("the API is shutting down"))
        try:
            await self._waker.delete(self.wake_key)
        except RedisError:
            pass
        await self._reader.aclose()
        await self._waker.aclose()

    # ---- subscribers ---------------------------------------------------------------------

    async def subscribe(self, job_id: str, after_seq: int = 0) -> Subscription:
        """Follow ``job_id``'s log from ``after_seq + 1``; close the subscription when done."""
        if self._task is None or self._task.done():
            raise RelayUnavailable("the stream relay is not running")
        sub = Subscription(self, job_id, after_seq)
        self._subs.setdefault(sub.key, set()).add(sub)
        self._read_set.mark(sub.key)
        await self.wake()
        return sub

    async def resume(self, sub: Subscription) -> None:
        """A paused subscriber has room again: read its log from its cursor."""
        self._read_set.mark(sub.key)
        await self.wake()

    def unregister(self, sub: Subscription) -> None:
        if sub.closed:
            return
        sub.closed = True
        subs = self._subs.get(sub.key)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.key]
            self._read_set.mark(sub.key)

    async def wake(self) -> None:
        """Make the blocked XREAD return now so the next one sees the current subscribers."""
        if self._wake_pending:
            return
        self._wake_pending = True
        try:
            async with self._waker.pipeline(transaction=False) as pipe:
                pipe.xadd(self.wake_key, {"w": "1"}, maxlen=1, approximate=False)
                pipe.expire(self.wake_key, _WAKE_TTL_S)
                await pipe.execute()
        except RedisError as exc:  # the reader notices Redis trouble on its own
            self._wake_pending = False
            log.debug("relay wake failed: %s", exc)

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subs.values())

    # ---- the reader ----------------------------------------------------------------------

    async def _xread(self) -> Any:
        """One ``XREAD`` over the read set, packed incrementally (see :class:`ReadSet`)."""
        command = self._read_set.command(
            self._subs, self.wake_key, self._wake_cursor, READ_COUNT, self.block_ms
        )
        if self._conn is None:
            self._conn = await self._reader.get_connection()  # type: ignore[no-untyped-call]
        try:
            await self._conn.send_packed_command(command, check_health=False)
            return await self._conn.read_response()
        except BaseException:
            conn, self._conn = self._conn, None
            await conn.disconnect()
            await self._reader.release(conn)
            raise

    async def _run(self) -> None:
        failing_since: float | None = None
        attempt = 0
        while not self._stopping:
            self._wake_pending = False
            try:
                reply = await self._xread()
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                now = time.monotonic()
                failing_since = failing_since or now
                attempt += 1
                log.warning("relay: redis read failed (attempt %d): %s", attempt, exc)
                if now - failing_since >= self.fail_after_s:
                    self._fail_all(
                        RelayUnavailable(
                            f"Redis unreachable for {now - failing_since:.0f} s: {exc}"
                        )
                    )
                self._backing_off = True
                await asyncio.sleep(min(0.05 * 2**attempt, 2.0))
                self._backing_off = False
                continue
            except Exception:
                log.exception("relay: unexpected error; retrying")
                await asyncio.sleep(0.5)
                continue
            failing_since, attempt = None, 0
            self.reads += 1
            if reply:
                self._dispatch(reply)

    def _dispatch(self, reply: Any) -> None:
        """A raw ``XREAD`` reply: ``{key: [[id, [field, value, ...]], ...]}`` in RESP3 (redis-py's
        default), ``[[key, [...]], ...]`` in RESP2."""
        items = reply.items() if isinstance(reply, dict) else reply
        for key, entries in items:
            if key == self.wake_key:
                self._wake_cursor = entries[-1][0]
                continue
            self._deliver(key, entries)

    def _deliver(self, key: bytes, entries: list[Any]) -> None:
        """Hand ``entries`` (raw ``[id, [field, value, ...]]``) to the key's subscribers."""
        subs = self._subs.get(key)
        if not subs:
            return
        self._read_set.mark(key)  # cursors move, or a subscriber pauses
        for raw_id, fields in entries:
            seq = seq_of(raw_id)
            try:
                event = decode_event(_field(fields, _EVENT_FIELD))
            except Exception as exc:  # a corrupt entry must not kill the reader
                log.error("relay: bad entry %r in %r: %s", raw_id, key, exc)
                continue
            for sub in list(subs):
                if sub.offer(seq, event) and is_final(event):
                    self.unregister(sub)

    def _fail_all(self, exc: BaseException) -> None:
        for subs in list(self._subs.values()):
            for sub in list(subs):
                self.unregister(sub)
                while sub.queue.full():
                    sub.queue.get_nowait()
                sub.queue.put_nowait(exc)
