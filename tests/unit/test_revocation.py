"""The key watch: which verdict a changed record gives an open connection, on a real Redis."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from api.relay import Relay, Subscription
from api.security.keys import Authenticator, Credential, KeyStore
from api.security.revocation import KeyRevoked, KeyWatcher
from protocol import auth


async def _credential(store: KeyStore, **kw: float) -> tuple[Credential, str]:
    record, plaintext = auth.new_key("w", "user", **kw)  # type: ignore[arg-type]
    await store.add(record)
    return await Authenticator(store, None).verify(plaintext), plaintext


@pytest.fixture
async def watcher(redis: aioredis.Redis) -> KeyWatcher:
    watcher = KeyWatcher(redis, recheck_s=3600)
    await watcher.start()
    await asyncio.wait_for(watcher.subscribed.wait(), 5)
    yield watcher  # type: ignore[misc]
    await watcher.stop()


async def test_a_revoke_fires_every_watch_of_the_key_and_only_those(
    redis: aioredis.Redis, watcher: KeyWatcher
) -> None:
    store = KeyStore(redis)
    mine, _ = await _credential(store)
    other, _ = await _credential(store)
    watches = [watcher.watch(mine), watcher.watch(mine), watcher.watch(other)]
    assert all(w is not None for w in watches)
    await store.revoke(mine.key.id)  # published on the change channel
    for w in watches[:2]:
        await asyncio.wait_for(w.fired.wait(), 5)  # type: ignore[union-attr]
        assert w.verdict == "revoked"  # type: ignore[union-attr]
    assert watches[2].verdict is None  # type: ignore[union-attr]


async def test_a_rotation_cuts_the_old_secret_at_grace_end_not_the_new(
    redis: aioredis.Redis, watcher: KeyWatcher
) -> None:
    store = KeyStore(redis)
    old, _ = await _credential(store)
    on_old = watcher.watch(old)
    rotated = await store.rotate(old.key.id, grace_s=1.0)
    assert rotated is not None and on_old is not None
    new = await Authenticator(store, None).verify(rotated[1])
    on_new = watcher.watch(new)
    assert on_new is not None
    await asyncio.wait_for(on_old.fired.wait(), 5)
    assert on_old.verdict == "wrong" and on_new.verdict is None


async def test_expiry_fires_by_the_clock(redis: aioredis.Redis, watcher: KeyWatcher) -> None:
    store = KeyStore(redis)
    credential, _ = await _credential(store, expires_in_s=0.5)
    watch = watcher.watch(credential)
    assert watch is not None
    t0 = time.monotonic()
    await asyncio.wait_for(watch.fired.wait(), 5)
    assert watch.verdict == "expired" and time.monotonic() - t0 < 3


async def test_a_missed_broadcast_is_caught_by_the_recheck(redis: aioredis.Redis) -> None:
    """A revoke written while no process listened (no publish) still lands on the sweep."""
    store = KeyStore(redis)
    credential, _ = await _credential(store)
    watcher = KeyWatcher(redis, recheck_s=3600)
    watch = watcher.watch(credential)
    assert watch is not None
    record = auth.revoked(credential.key)
    await redis.set(f"uml:apikey:{record.id}", auth.encode_record(record))  # no publish
    await watcher.recheck([record.id])
    assert watch.verdict == "revoked"


async def test_a_fired_watch_cuts_bound_subscriptions(redis: aioredis.Redis) -> None:
    store = KeyStore(redis)
    credential, _ = await _credential(store)
    watcher = KeyWatcher(redis, recheck_s=3600)
    watch = watcher.watch(credential)
    assert watch is not None
    sub = Subscription(Relay("redis://127.0.0.1:1"), "job-x", 0)  # never connects
    watch.bind(sub)
    waiting = asyncio.create_task(sub.get(timeout=30))
    await asyncio.sleep(0)
    watch.fire("revoked")
    with pytest.raises(KeyRevoked) as cut:
        await asyncio.wait_for(waiting, 5)
    assert cut.value.info().code == "invalid_api_key"


def test_the_bootstrap_key_is_never_watched() -> None:
    boot = auth.bootstrap_key("x" * 30)
    watcher = KeyWatcher(None, recheck_s=30)  # type: ignore[arg-type]
    assert watcher.watch(Credential(boot, boot.hash)) is None
