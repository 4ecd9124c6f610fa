"""Pure guards of ``/ws``: the query key's redaction, the socket's message budget, and a
session whose key stopped opening."""

from __future__ import annotations

from typing import Any
from unittest.mock import AsyncMock

import pytest

from api.security.limits import MessageBudget
from api.security.redact import split_query
from protocol import ws

KEY = "uml_0123456789abcdef_" + "s" * 43


@pytest.mark.parametrize(
    ("raw", "accepted"),
    [
        (f"api_key={KEY}", KEY),
        (f"api%5Fkey={KEY}", KEY),  # percent-encoded name: Litestar accepts it
        (f"a=1&api_key={KEY}&api_key=second", KEY),  # the first one, as Litestar reads it
        (f"x=1;api_key={KEY}", None),  # `;` is no separator for the server...
        (f"token={KEY}", None),
        (f"{KEY}", None),
        (f"api_key=%75ml_0123456789abcdef_{'s' * 43}", KEY),
    ],
)
def test_every_spelling_of_a_key_is_blanked(raw: str, accepted: str | None) -> None:
    redacted, key = split_query(raw.encode())
    assert key == accepted
    assert b"ssssssss" not in redacted, redacted  # ...but its value is blanked all the same
    assert b"redacted" in redacted


def test_other_parameters_are_left_alone() -> None:
    raw = b"a=1&my_api_key=x&b=two%20words"
    assert split_query(raw) == (raw, None)


def test_message_budget_refills_at_its_rate() -> None:
    budget = MessageBudget(rate=10, burst=3, now=0.0)
    assert [budget.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert budget.take(0.05) is False  # half a message earned
    assert budget.take(0.1) is True
    assert [budget.take(100.0) for _ in range(4)] == [True, True, True, False]  # capped


async def test_a_session_whose_key_stopped_opening_refuses_and_ends() -> None:
    from tests.unit.test_client_ws import _session

    session: Any = _session(store=None)
    session.res.authenticator.recheck = AsyncMock(return_value="revoked")
    await session.handle('{"type": "subscribe", "job_id": "j1"}')
    frame = ws.decode_server(session.outbox.queue.get_nowait())
    assert isinstance(frame, ws.Error) and frame.status == 401
    assert frame.error.code == "invalid_api_key"


async def test_a_flooding_session_is_told_then_ended() -> None:
    from tests.unit.test_client_ws import _session

    session: Any = _session(store=None)
    burst = session.budget.burst
    for _ in range(3 * burst):
        await session.handle('{"type": "ping"}')
    frames = [ws.decode_server(session.outbox.queue.get_nowait()) for _ in range(2 * burst)]
    assert sum(isinstance(f, ws.Pong) for f in frames) >= burst
    assert any(isinstance(f, ws.Error) and f.status == 429 for f in frames)
    assert session.close_code() == (ws.CLOSE_POLICY, "too many messages")
