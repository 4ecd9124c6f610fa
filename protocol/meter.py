"""Token metering shared by the API (admission) and the workers (charging a job's tokens).

Rate-limit windows are sliding-window counters in Redis hashes (see
``api/security/limits.py``); ``protocol/scripts/includes/sliding_window.lua`` rolls and
stores one. The API checks a key's token window when it admits a generation request; the
worker that writes a job's final event charges the job's tokens to the window named in the
job's ``meter`` field, in the same script (``flush_writes.lua``, through
``includes/charge.lua``), once. So every finished job is paid for, whether a client was
still reading it or not, and a background job (``POST /v1/jobs``) pays like a sync one.
"""

from __future__ import annotations

from protocol.keys import ratelimit_key

__all__ = ["TOKEN_WINDOW_MS", "token_meter"]

TOKEN_WINDOW_MS = 60_000
"""The token window's period: tokens per minute (``tpm``)."""


def token_meter(owner: str) -> str:
    """The token window a job submitted by key ``owner`` is charged to."""
    return ratelimit_key(owner, "tpm")
