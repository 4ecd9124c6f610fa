"""``uml keys create|list|revoke|rotate``: manage API keys in Redis directly.

The command shares :class:`api.security.keys.KeyStore` and the pure logic of
:mod:`protocol.auth` with the API, so a key made here and one made over
``POST /admin/keys`` are the same thing. A plaintext key is printed once, on stdout,
and nowhere else.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import msgspec

from protocol import auth
from protocol.auth import ApiKey, KeyLimits
from protocol.settings import get_settings

if TYPE_CHECKING:
    from api.security.keys import KeyStore

T = TypeVar("T")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", help="create, list, revoke and rotate API keys")
    actions = keys.add_subparsers(metavar="ACTION")
    create = actions.add_parser("create", help="create a key and print it (shown this once)")
    create.add_argument("--name", required=True)
    create.add_argument("--scope", choices=["user", "admin"], default="user")
    for limit, what in [
        ("rpm", "requests per minute"),
        ("rph", "requests per hour"),
        ("burst", "requests in a short burst"),
        ("tpm", "prompt+completion tokens per minute"),
    ]:
        create.add_argument(f"--{limit}", type=_positive, default=None, help=what)
    create.add_argument("--expires", type=_duration, default=None, help="e.g. 30d, 12h, 1h30m")
    create.set_defaults(func=_create)
    listing = actions.add_parser("list", help="list keys (never their secrets)")
    listing.set_defaults(func=_list)
    revoke = actions.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("id")
    revoke.set_defaults(func=_revoke)
    rotate = actions.add_parser("rotate", help="new secret; the old one works for --grace")
    rotate.add_argument("id")
    rotate.add_argument("--grace", type=_duration, default=0.0, help="e.g. 1h (default: none)")
    rotate.set_defaults(func=_rotate)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _duration(text: str) -> float:
    try:
        return auth.parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _with_store(action: Callable[[KeyStore], Awaitable[T]]) -> T:
    import redis.asyncio as aioredis

    from api.security.keys import KeyStore

    async def run() -> T:
        settings = get_settings().redis
        redis = aioredis.Redis.from_url(settings.url, socket_timeout=settings.socket_timeout_s)
        try:
            return await action(KeyStore(redis))
        finally:
            await redis.aclose()

    return asyncio.run(run())


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


def _show(record: ApiKey) -> str:
    fields = msgspec.structs.asdict(record.limits)
    limits = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
    state = auth.state(record)  # active, expired or revoked
    return (
        f"{record.id}  {record.scope:5}  {state:7}  created {_when(record.created_at)}  "
        f"expires {_when(record.expires_at)}  {limits or 'default limits'}  {record.name}"
    )


def _create(args: argparse.Namespace) -> int:
    limits = KeyLimits(rpm=args.rpm, rph=args.rph, burst=args.burst, tpm=args.tpm)
    record, plaintext = auth.new_key(args.name, args.scope, limits, args.expires)
    _with_store(lambda store: store.add(record))
    print(f"created {record.id} ({record.scope}); the key is shown this once:", file=sys.stderr)
    print(plaintext)
    return 0


def _list(args: argparse.Namespace) -> int:
    records = _with_store(lambda store: store.all())
    for record in records:
        print(_show(record))
    if not records:
        print("no keys", file=sys.stderr)
    return 0


def _revoke(args: argparse.Namespace) -> int:
    record = _with_store(lambda store: store.revoke(args.id))
    if record is None:
        print(f"uml keys: no key with id {args.id}", file=sys.stderr)
        return 1
    print(f"revoked {record.id} ({record.name})")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    result = _with_store(lambda store: store.rotate(args.id, args.grace))
    if result is None:
        print(f"uml keys: no key with id {args.id}", file=sys.stderr)
        return 1
    record, plaintext = result
    grace = f"until {_when(record.grace_until)}" if record.grace_until else "no longer"
    print(f"rotated {record.id}; the old key works {grace}; the new key:", file=sys.stderr)
    print(plaintext)
    return 0
