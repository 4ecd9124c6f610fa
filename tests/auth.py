"""The admin key every test stack is started with, and the headers that carry it."""

from __future__ import annotations

from protocol.auth import new_bootstrap_secret

ADMIN_KEY = new_bootstrap_secret()
"""Given to API processes as ``UML_ADMIN_KEY``; fresh per test session."""

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
