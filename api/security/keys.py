"""API-key storage in Redis and verification of a presented key.

A record lives at ``uml:apikey:{id}`` (JSON, hash only) and its id in the set
``uml:apikeys``. Verifying a key costs one ``GET``; there is no in-process cache, so a
revoke or a rotation's grace end holds on every API replica at the next request.
A revoke or a rotation is also published on :data:`protocol.keys.KEY_CHANGES_CHANNEL`, so
connections already open with the key are re-checked at once (``api/security/revocation.py``).
The bootstrap admin key (``UML_ADMIN_KEY``) is checked in memory first and never stored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from api.errors import APIError
from protocol import auth
from protocol.auth import ApiKey, Verdict
from protocol.keys import APIKEYS_SET, KEY_CHANGES_CHANNEL, apikey_key
from protocol.settings import SecuritySettings

_Change = Callable[[ApiKey], tuple[ApiKey, str]]
"""A pure update of a record: the new record and a plaintext key, if it made one."""

_WWW_AUTHENTICATE = {"WWW-Authenticate": 'Bearer realm="uml"'}
_MESSAGES: dict[Verdict, str] = {
    "wrong": "Incorrect API key provided",
    "expired": "The API key has expired",
    "revoked": "The API key has been revoked",
}


def unauthorized(message: str) -> APIError:
    """401 in OpenAI's shape: type ``invalid_request_error``, code ``invalid_api_key``."""
    return APIError(401, message, code="invalid_api_key", headers=_WWW_AUTHENTICATE)


def forbidden(message: str) -> APIError:
    """403 in OpenAI's shape: type ``invalid_request_error``, code ``insufficient_permissions``."""
    return APIError(403, message, code="insufficient_permissions")


def load_bootstrap(settings: SecuritySettings) -> ApiKey | None:
    """The bootstrap admin record from ``UML_ADMIN_KEY`` or the file ``UML_ADMIN_KEY_FILE``.

    A key that is unusable raises :class:`ValueError` with one sentence naming the setting
    (never the key): :func:`api.app.create_app` calls this before the server starts, so
    ``uml serve`` prints it and exits 2.
    """
    source, plaintext = "UML_ADMIN_KEY", settings.admin_key
    if not plaintext and settings.admin_key_file:
        source = f"UML_ADMIN_KEY_FILE ({settings.admin_key_file})"
        try:
            plaintext = Path(settings.admin_key_file).read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ValueError(f"{source}: the file cannot be read ({reason}).") from None
        if not plaintext:
            raise ValueError(f"{source}: the file is empty.")
    if not plaintext:
        return None
    try:
        return auth.bootstrap_key(plaintext)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}.") from None


class KeyStore:
    """Create, read, list, revoke and rotate key records (the API and ``uml keys`` share it)."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    async def get(self, key_id: str) -> ApiKey | None:
        raw = await self._redis.get(apikey_key(key_id))
        return None if raw is None else auth.decode_record(raw)

    async def add(self, record: ApiKey) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(apikey_key(record.id), auth.encode_record(record))
            pipe.sadd(APIKEYS_SET, record.id)
            await pipe.execute()

    async def all(self) -> list[ApiKey]:
        members = await self._redis.smembers(APIKEYS_SET)
        ids = sorted(m.decode() if isinstance(m, bytes) else m for m in members)
        if not ids:
            return []
        raws = await self._redis.mget([apikey_key(i) for i in ids])
        records = [auth.decode_record(raw) for raw in raws if raw is not None]
        return sorted(records, key=lambda r: (r.created_at, r.id))

    async def revoke(self, key_id: str) -> ApiKey | None:
        """Mark the key revoked (idempotent); ``None`` if there is no such key."""
        result = await self._update(key_id, lambda r: (auth.revoked(r), ""))
        return None if result is None else result[0]

    async def rotate(self, key_id: str, grace_s: float) -> tuple[ApiKey, str] | None:
        """Give the key a new secret (returned once); the old one works ``grace_s`` more seconds."""
        return await self._update(key_id, lambda r: auth.rotated(r, grace_s))

    async def _update(self, key_id: str, change: _Change) -> tuple[ApiKey, str] | None:
        """Read-modify-write one record under WATCH, so a revoke is never lost to a rotate."""
        name = apikey_key(key_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(name)
                    raw = await pipe.get(name)
                    if raw is None:
                        return None
                    record, plaintext = change(auth.decode_record(raw))
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.set(name, auth.encode_record(record))
                    pipe.publish(KEY_CHANGES_CHANNEL, key_id)  # open connections re-check
                    await pipe.execute()
                    return record, plaintext
                except WatchError:
                    continue


@dataclass(frozen=True)
class Credential:
    """A verified key as a connection holds it: the record, and the hash of the secret it
    presented (an old secret during a rotation's grace differs from ``key.hash``), so an open
    stream or socket can be re-checked without keeping the secret."""

    key: ApiKey
    presented: str

    @property
    def revocable(self) -> bool:
        """The bootstrap key lives in the processes' settings, not in Redis: never revoked."""
        return self.key.id != auth.BOOTSTRAP_ID


class Authenticator:
    """Turns a presented key into its record, or raises a 401."""

    def __init__(self, store: KeyStore, bootstrap: ApiKey | None) -> None:
        self._store = store
        self._bootstrap = bootstrap

    async def verify(self, presented: str) -> Credential:
        if self._bootstrap is not None and auth.check(self._bootstrap, presented) == "ok":
            return Credential(self._bootstrap, self._bootstrap.hash)
        parsed = auth.parse_key(presented)
        if parsed is None:
            raise unauthorized(_MESSAGES["wrong"])
        key_id, secret = parsed
        record = await self._store.get(key_id)
        hashed = auth.hash_secret(secret)
        verdict: Verdict = "wrong" if record is None else auth.check_hash(record, hashed)
        if record is None or verdict != "ok":
            raise unauthorized(_MESSAGES[verdict])
        return Credential(record, hashed)

    async def recheck(self, credential: Credential) -> Verdict:
        """The credential's verdict now, from the stored record (one ``GET``)."""
        if not credential.revocable:
            return "ok"
        record = await self._store.get(credential.key.id)
        return "revoked" if record is None else auth.check_hash(record, credential.presented)


def refusal(verdict: Verdict) -> APIError:
    """The 401 for a credential that no longer opens its key."""
    return unauthorized(_MESSAGES.get(verdict, _MESSAGES["wrong"]))
