"""API keys across real processes: two API replicas, the ``uml keys`` command, the logs.

A revoke made through one API process holds on the other within 1 s; a rotated key's old
secret works until its grace ends and then gets 401; no process log holds key material.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest
import redis

from protocol import auth
from protocol.keys import apikey_key
from tests.auth import ADMIN_KEY, AUTH
from tests.integration.stack import Stack, wait_for

pytestmark = pytest.mark.timeout(120)


def uml_keys(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, REDIS_URL=stack.redis_url)
    return subprocess.run(
        [sys.executable, "-m", "uml.cli", "keys", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def status(client: httpx.Client, key: str) -> int:
    return client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code


def test_revoke_through_one_api_holds_on_the_other_within_1s(
    clients: list[httpx.Client],
) -> None:
    a, b = clients
    made = a.post("/admin/keys", json={"name": "replicas"}, headers=AUTH)
    assert made.status_code == 201, made.text
    key, key_id = made.json()["key"], made.json()["info"]["id"]
    assert status(a, key) == 200 and status(b, key) == 200
    assert a.delete(f"/admin/keys/{key_id}", headers=AUTH).status_code == 200
    revoked_at = time.monotonic()
    wait_for(lambda: status(b, key) == 401, 1.0, "the other API to refuse the revoked key")
    assert time.monotonic() - revoked_at < 1.0
    assert status(a, key) == 401


def test_cli_create_list_rotate_with_grace(stack: Stack, clients: list[httpx.Client]) -> None:
    a, b = clients
    made = uml_keys(stack, "create", "--name", "cli", "--scope", "user", "--rpm", "700")
    assert made.returncode == 0, made.stderr
    old = made.stdout.strip()
    key_id, _ = auth.parse_key(old) or pytest.fail(f"not a key: {old!r}")
    assert status(a, old) == 200 and status(b, old) == 200

    listed = uml_keys(stack, "list")
    assert listed.returncode == 0 and key_id in listed.stdout and "rpm=700" in listed.stdout
    assert old not in listed.stdout + listed.stderr

    rotated = uml_keys(stack, "rotate", key_id, "--grace", "5s")
    assert rotated.returncode == 0, rotated.stderr
    new = rotated.stdout.strip()
    client = redis.Redis.from_url(stack.redis_url)
    record = auth.decode_record(client.get(apikey_key(key_id)) or b"")
    client.close()
    assert new != old and record.grace_until is not None
    assert status(b, new) == 200 and status(a, new) == 200
    assert time.time() < record.grace_until - 1  # still inside the grace: the old key works
    assert status(a, old) == 200 and status(b, old) == 200
    wait_for(lambda: status(b, old) == 401, 15, "the old key to stop working after the grace")
    assert time.time() >= record.grace_until
    assert status(a, old) == 401 and status(b, new) == 200

    revoked = uml_keys(stack, "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    wait_for(lambda: status(a, new) == 401, 1.0, "the revoked key to be refused")
    assert uml_keys(stack, "revoke", "0000000000000000").returncode == 1


def test_cli_rejects_bad_arguments(stack: Stack) -> None:
    bad = uml_keys(stack, "create", "--name", "x", "--expires", "soon")
    assert bad.returncode == 2 and "duration" in bad.stderr
    assert uml_keys(stack, "create", "--name", "x", "--rpm", "0").returncode == 2


def test_no_process_log_holds_key_material(stack: Stack, clients: list[httpx.Client]) -> None:
    a, _ = clients
    made = a.post("/admin/keys", json={"name": "logs", "scope": "admin"}, headers=AUTH).json()
    key = made["key"]
    assert status(a, key) == 200
    assert status(a, key + "x") == 401
    assert a.get("/admin/keys", headers={"X-API-Key": key}).status_code == 200
    secret = (auth.parse_key(key) or ("", ""))[1]
    logs = "".join(proc.log() for proc in stack.procs)
    assert logs  # the processes do log something
    for material in [ADMIN_KEY, key, secret, auth.hash_secret(secret)]:
        assert material not in logs


def test_cli_list_shows_each_keys_state(stack: Stack) -> None:
    """``uml keys list`` on the stack's Redis: active, expired (past ``expires_at``), revoked."""
    ids = {}
    for name, extra in [("st-active", ()), ("st-expired", ("--expires", "1s")), ("st-revoked", ())]:
        made = uml_keys(stack, "create", "--name", name, *extra)
        assert made.returncode == 0, made.stderr
        ids[name] = (auth.parse_key(made.stdout.strip()) or ("", ""))[0]
    assert uml_keys(stack, "revoke", ids["st-revoked"]).returncode == 0
    client = redis.Redis.from_url(stack.redis_url)
    record = auth.decode_record(client.get(apikey_key(ids["st-expired"])) or b"")
    client.close()
    assert record.expires_at is not None
    wait_for(lambda: time.time() > record.expires_at + 0.1, 5, "the key's expiry")  # type: ignore[operator]
    listed = uml_keys(stack, "list")
    assert listed.returncode == 0, listed.stderr
    states = {line.split()[-1]: line.split()[2] for line in listed.stdout.splitlines()}
    assert states["st-active"] == "active"
    assert states["st-expired"] == "expired"
    assert states["st-revoked"] == "revoked"


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"UML_ADMIN_KEY": "short"}, "UML_ADMIN_KEY: the admin key must be 24-256 characters"),
        ({"UML_ADMIN_KEY": "x" * 20 + " y" * 10}, "UML_ADMIN_KEY: the admin key must be printable"),
        ({"UML_ADMIN_KEY_FILE": "/nonexistent/admin.key"}, "UML_ADMIN_KEY_FILE"),
    ],
)
def test_serve_with_a_bad_admin_key_says_one_sentence_and_exits_2(
    stack: Stack, env: dict[str, str], says: str
) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("UML_ADMIN_KEY")}
    done = subprocess.run(
        [sys.executable, "-m", "uml.cli", "serve", "--port", "0"],
        env={**base, "REDIS_URL": stack.redis_url, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"uml serve: {says}"), done.stderr
    assert "Traceback" not in done.stderr and "short" not in done.stderr
