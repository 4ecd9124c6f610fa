"""Token metering shared by the API (admission) and the workers (charging a job's tokens).

Rate-limit windows are sliding-window counters in Redis hashes (see
``api/security/limits.py``); the Lua below rolls and stores one. The API checks a key's
token window when it admits a generation request; the worker that writes a job's final
event charges the job's tokens to the window named in the job's ``meter`` field, in the
same script, once. So every finished job is paid for, whether a client was still
reading it or not, and a background job (``POST /v1/jobs``) pays like a sync one.
"""

from __future__ import annotations

from protocol.keys import ratelimit_key

__all__ = ["CHARGE_LUA", "ROLL_LUA", "TOKEN_WINDOW_MS", "token_meter"]

TOKEN_WINDOW_MS = 60_000
"""The token window's period: tokens per minute (``tpm``)."""


def token_meter(owner: str) -> str:
    """The token window a job submitted by key ``owner`` is charged to."""
    return ratelimit_key(owner, "tpm")


ROLL_LUA = """
local function roll(key, period, now)
  local idx = math.floor(now / period)
  local h = redis.call('HMGET', key, 'w', 'c', 'p')
  local w, c, p = tonumber(h[1]), tonumber(h[2]) or 0, tonumber(h[3]) or 0
  if w == idx - 1 then p, c = c, 0 elseif w ~= idx then p, c = 0, 0 end
  return idx, c, p
end
local function weighted(c, p, period, now)
  return math.floor(p * (period - now % period) / period) + c
end
local function store(key, idx, c, p, period)
  redis.call('HSET', key, 'w', idx, 'c', c, 'p', p)
  redis.call('PEXPIRE', key, 2 * period)
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
"""Sliding-window helpers, and ``now`` in Redis time (ms): the head of every limit script."""

CHARGE_LUA = (
    ROLL_LUA
    + f"""
-- Add tokens to a token window, even past its limit (a finished job's tokens are spent).
local function charge(key, tokens)
  local idx, c, p = roll(key, {TOKEN_WINDOW_MS}, now)
  store(key, idx, c + tokens, p, {TOKEN_WINDOW_MS})
  return c + tokens
end
"""
)
"""``ROLL_LUA`` plus ``charge(key, tokens)``: the head of a script that charges tokens."""
