"""API keys: the stored record, the wire shapes of the admin API, and the pure logic.

A key's plaintext is ``uml_<id>_<secret>``: ``id`` is 16 hex digits (public, names the
record ``uml:apikey:{id}``), ``secret`` is ``secrets.token_urlsafe(32)``. Only
SHA-256(secret) is stored. Everything here is pure (no I/O) so the async API and the
``uml keys`` command share one implementation of hashing, parsing, expiry and rotation::

    presented ──parse_key──► (id, secret) ──fetch uml:apikey:{id}──► ApiKey
                                                                      │
                          check(record, secret, now) ◄────────────────┘
                          ok | wrong | expired | revoked
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

Scope = Literal["user", "admin"]
Verdict = Literal["ok", "wrong", "expired", "revoked"]
State = Literal["active", "expired", "revoked"]

KEY_PREFIX = "uml"
BOOTSTRAP_ID = "bootstrap"
"""The id of the admin key given by ``UML_ADMIN_KEY`` / ``UML_ADMIN_KEY_FILE`` (not stored)."""
MIN_BOOTSTRAP_LEN = 24
MAX_KEY_LEN = 256

_KEY_RE = re.compile(r"uml_([0-9a-f]{16})_([A-Za-z0-9_-]{32,128})")
_DURATION_RE = re.compile(r"(\d+)([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

Limit = Annotated[int, Meta(ge=1, le=10**9)] | None
Name = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")]
Duration = Annotated[str, Meta(pattern=r"^(\d+[smhdw])+$", max_length=32)]


class KeyLimits(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Per-key limits; ``None`` means the settings default (enforced by the rate limiter)."""

    rpm: Limit = None
    rph: Limit = None
    burst: Limit = None
    tpm: Limit = None


class ApiKey(Struct, frozen=True, kw_only=True):
    """The stored record of one key (JSON at ``uml:apikey:{id}``); never sent to a client.

    A rotation moves ``hash`` to ``previous_hash``, valid until ``grace_until``.
    Times are Unix seconds.
    """

    id: str
    name: str
    scope: Scope
    hash: str
    created_at: float
    limits: KeyLimits = msgspec.field(default_factory=KeyLimits)
    expires_at: float | None = None
    revoked_at: float | None = None
    rotated_at: float | None = None
    previous_hash: str | None = None
    grace_until: float | None = None


class KeyView(Struct, frozen=True, kw_only=True):
    """What the admin API and ``uml keys list`` show of a key: no hash, no secret."""

    id: str
    name: str
    scope: Scope
    limits: KeyLimits
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    rotated_at: float | None
    grace_until: float | None


class CreateKeyRequest(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /admin/keys``; ``expires`` is a duration such as ``30d`` or ``12h``."""

    name: Name
    scope: Scope = "user"
    rpm: Limit = None
    rph: Limit = None
    burst: Limit = None
    tpm: Limit = None
    expires: Duration | None = None


class RotateKeyRequest(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /admin/keys/{id}/rotate``: the old secret keeps working for ``grace`` (``1h``)."""

    grace: Duration | None = None


class CreatedKey(Struct, frozen=True, kw_only=True):
    """The answer to a create or rotate: the plaintext ``key`` is shown this once."""

    key: str
    info: KeyView


class KeyList(Struct, frozen=True, kw_only=True):
    data: list[KeyView]


def hash_secret(secret: str) -> str:
    """SHA-256 of the secret, hex; the only form in which a key is stored."""
    return hashlib.sha256(secret.encode()).hexdigest()


def format_key(key_id: str, secret: str) -> str:
    return f"{KEY_PREFIX}_{key_id}_{secret}"


def parse_key(text: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed key, else ``None``."""
    match = _KEY_RE.fullmatch(text) if len(text) <= MAX_KEY_LEN else None
    return (match.group(1), match.group(2)) if match else None


def new_key_id() -> str:
    return secrets.token_hex(8)


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def parse_duration(text: str) -> float:
    """Seconds in ``90s``, ``15m``, ``12h``, ``30d``, ``2w`` or a sum like ``1h30m``."""
    text = text.strip().lower()
    if not text or _DURATION_RE.sub("", text):
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 15m, 12h, 30d, 1h30m)")
    return float(sum(int(n) * _UNIT_S[u] for n, u in _DURATION_RE.findall(text)))


def new_key(
    name: str,
    scope: Scope,
    limits: KeyLimits | None = None,
    expires_in_s: float | None = None,
    now: float | None = None,
) -> tuple[ApiKey, str]:
    """A fresh record and its plaintext (which is not kept anywhere)."""
    now = time.time() if now is None else now
    key_id, secret = new_key_id(), new_secret()
    record = ApiKey(
        id=key_id,
        name=name,
        scope=scope,
        hash=hash_secret(secret),
        created_at=now,
        limits=limits or KeyLimits(),
        expires_at=None if expires_in_s is None else now + expires_in_s,
    )
    return record, format_key(key_id, secret)


def from_request(req: CreateKeyRequest, now: float | None = None) -> tuple[ApiKey, str]:
    limits = KeyLimits(rpm=req.rpm, rph=req.rph, burst=req.burst, tpm=req.tpm)
    expires = None if req.expires is None else parse_duration(req.expires)
    return new_key(req.name, req.scope, limits, expires, now)


def rotated(record: ApiKey, grace_s: float, now: float | None = None) -> tuple[ApiKey, str]:
    """A new secret for ``record``; the old one stays valid for ``grace_s`` seconds."""
    now = time.time() if now is None else now
    secret = new_secret()
    record = msgspec.structs.replace(
        record,
        hash=hash_secret(secret),
        previous_hash=record.hash if grace_s > 0 else None,
        grace_until=now + grace_s if grace_s > 0 else None,
        rotated_at=now,
    )
    return record, format_key(record.id, secret)


def revoked(record: ApiKey, now: float | None = None) -> ApiKey:
    if record.revoked_at is not None:
        return record
    return msgspec.structs.replace(record, revoked_at=time.time() if now is None else now)


def check(record: ApiKey, secret: str, now: float | None = None) -> Verdict:
    """Does ``secret`` open ``record`` now? Hashes are compared in constant time."""
    return check_hash(record, hash_secret(secret), now)


def check_hash(record: ApiKey, presented: str, now: float | None = None) -> Verdict:
    """:func:`check` for a secret known by its hash (what an open connection keeps)."""
    now = time.time() if now is None else now
    current = hmac.compare_digest(presented, record.hash)
    in_grace = record.grace_until is not None and now < record.grace_until
    previous = hmac.compare_digest(presented, record.previous_hash or "")
    if not (current or (previous and in_grace)):
        return "wrong"
    current_state = state(record, now)
    return "ok" if current_state == "active" else current_state


def state(record: ApiKey, now: float | None = None) -> State:
    """What a listing shows of a key: ``revoked`` wins over ``expired`` (past ``expires_at``)."""
    now = time.time() if now is None else now
    if record.revoked_at is not None:
        return "revoked"
    if record.expires_at is not None and now >= record.expires_at:
        return "expired"
    return "active"


def valid_until(record: ApiKey, presented: str) -> float | None:
    """When the secret hashed ``presented`` stops opening ``record`` by the clock alone (its
    expiry, or its rotation grace for an old secret); ``None``: not by the clock."""
    ends = [record.expires_at]
    if not hmac.compare_digest(presented, record.hash):
        ends.append(record.grace_until)
    times = [t for t in ends if t is not None]
    return min(times) if times else None


def bootstrap_key(plaintext: str) -> ApiKey:
    """The admin record of ``UML_ADMIN_KEY``: any string of 24+ printable characters."""
    if len(plaintext) < MIN_BOOTSTRAP_LEN or len(plaintext) > MAX_KEY_LEN:
        raise ValueError(f"the admin key must be {MIN_BOOTSTRAP_LEN}-{MAX_KEY_LEN} characters")
    if not plaintext.isascii() or not plaintext.isprintable() or " " in plaintext:
        raise ValueError("the admin key must be printable ASCII without spaces")
    return ApiKey(
        id=BOOTSTRAP_ID,
        name="bootstrap admin (UML_ADMIN_KEY)",
        scope="admin",
        hash=hash_secret(plaintext),
        created_at=0.0,
    )


def new_bootstrap_secret() -> str:
    """A fresh admin key for ``uml dev``: ``uml_admin_<secret>``."""
    return f"{KEY_PREFIX}_admin_{new_secret()}"


def view(record: ApiKey) -> KeyView:
    return KeyView(
        id=record.id,
        name=record.name,
        scope=record.scope,
        limits=record.limits,
        created_at=record.created_at,
        expires_at=record.expires_at,
        revoked_at=record.revoked_at,
        rotated_at=record.rotated_at,
        grace_until=record.grace_until,
    )


def encode_record(record: ApiKey) -> bytes:
    return msgspec.json.encode(record)


def decode_record(raw: bytes | str) -> ApiKey:
    return msgspec.json.decode(raw, type=ApiKey)
