"""The pure key logic of ``protocol.auth``: format, parsing, durations, verdicts, rotation."""

from __future__ import annotations

import hashlib
import hmac

import msgspec
import pytest

from protocol import auth
from protocol.auth import KeyLimits


def test_key_format_and_stored_hash() -> None:
    record, plaintext = auth.new_key("ci", "user", KeyLimits(rpm=5), expires_in_s=60, now=100.0)
    key_id, secret = auth.parse_key(plaintext) or ("", "")
    assert plaintext == f"uml_{record.id}_{secret}" and key_id == record.id
    assert record.hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in auth.encode_record(record).decode()
    assert record.expires_at == 160.0 and record.limits.rpm == 5
    assert "hash" not in auth.view(record).__struct_fields__


@pytest.mark.parametrize(
    "text",
    [
        "",
        "uml_",
        "sk-abc",
        "uml_0123456789abcdef",
        "uml_0123456789ABCDEF_" + "a" * 43,  # id must be lower-case hex
        "uml_0123456789abcdef_short",
        "uml_0123456789abcdef_" + "a" * 42 + "!",
        "uml_0123456789abcdef_" + "a" * 300,
    ],
)
def test_malformed_keys_do_not_parse(text: str) -> None:
    assert auth.parse_key(text) is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("12h", 43200), ("30d", 2592000), ("1h30m", 5400)],
)
def test_durations(text: str, seconds: float) -> None:
    assert auth.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "1y", "-5m", "1h 30m", "m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        auth.parse_duration(text)


def test_verdicts() -> None:
    record, plaintext = auth.new_key("k", "user", expires_in_s=10, now=0.0)
    _, secret = auth.parse_key(plaintext) or ("", "")
    assert auth.check(record, secret, now=5) == "ok"
    assert auth.check(record, secret + "x", now=5) == "wrong"
    assert auth.check(record, secret, now=10) == "expired"
    assert auth.check(auth.revoked(record, now=6), secret, now=7) == "revoked"
    assert auth.check(auth.revoked(record, now=6), "nope", now=7) == "wrong"


def test_rotation_keeps_the_old_secret_for_the_grace_only() -> None:
    record, old = auth.new_key("k", "admin", now=0.0)
    rotated, new = auth.rotated(record, grace_s=60, now=100.0)
    old_secret, new_secret = (auth.parse_key(k)[1] for k in (old, new))  # type: ignore[index]
    assert rotated.id == record.id and new != old
    assert auth.check(rotated, new_secret, now=101) == "ok"
    assert auth.check(rotated, old_secret, now=159) == "ok"
    assert auth.check(rotated, old_secret, now=160) == "wrong"
    no_grace, _ = auth.rotated(record, grace_s=0, now=100.0)
    assert auth.check(no_grace, old_secret, now=100) == "wrong"


def test_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    record, plaintext = auth.new_key("k", "user")
    assert auth.check(record, auth.parse_key(plaintext)[1]) == "ok"  # type: ignore[index]
    assert auth.check(auth.bootstrap_key("x" * 24), "x" * 24) == "ok"
    assert any(record.hash in pair for pair in calls) and len(calls) >= 2


@pytest.mark.parametrize("bad", ["short", "x" * 23, "has space " * 3, "é" * 30, "x" * 257])
def test_bootstrap_key_must_be_long_printable_ascii(bad: str) -> None:
    with pytest.raises(ValueError):
        auth.bootstrap_key(bad)


def test_bootstrap_key_is_admin_and_stores_only_a_hash() -> None:
    key = auth.new_bootstrap_secret()
    record = auth.bootstrap_key(key)
    assert record.scope == "admin" and record.id == auth.BOOTSTRAP_ID
    assert key not in auth.encode_record(record).decode()


def test_settings_repr_hides_the_admin_key() -> None:
    from protocol.settings import SecuritySettings, Settings, get_settings

    secret = "s" * 32
    security = SecuritySettings(admin_key=secret)
    whole = Settings(**{**msgspec.structs.asdict(get_settings()), "security": security})
    assert secret not in repr(security) and secret not in repr(whole) and secret not in str(whole)
