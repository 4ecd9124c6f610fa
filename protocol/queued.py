"""The live count of a model's queued jobs: what the queue bounds and the key shares count.

kombu's lists are not that count: a cancelled or expired job's message stays in its list
until a worker pops it, and a message a worker has popped but not claimed (prefetched, or
given back by the interactive lane) is in no list for a moment, so ``LLEN`` both over- and
under-counts. Instead every job whose status is ``queued`` is a member of three sorted sets,
by priority and model:

- :func:`live_key`: the model's queued jobs of that priority (``ZCARD`` is the bound's count);
- :func:`key_live_key`: those of one API key (its share of the queue);
- :func:`keys_index_key`: the keys that have any (the workers look for a waiting key here).

Members are scored by when the job was (re)queued (Unix ms, Redis time). Membership is kept
by the scripts that move a job into or out of ``queued``, with the snippets of
:data:`QUEUED_LUA`: submission (:mod:`api.services.job_store`), the worker's claim, cancel,
expiry (both through ``finalize``, :data:`protocol.events.FINALIZE_LUA`), and the reaper's
re-queue and hand-back (:mod:`workers.reaper`). A set's membership is idempotent (adding a
job twice or removing it twice changes nothing), so the count cannot drift the way a
counter would; the reaper's orphan sweep re-asserts it for long-queued jobs.

A queued job whose record expired (queued longer than the retention, which no deadline
allows by default) would stay a member: each set expires a retention after its last
addition, and submission trims members older than the retention (a record expires at the
latest a retention after it was last queued).

The snippets derive the key names from the job's hash (``model``, ``priority``, ``owner``),
so no caller can pass the wrong ones; a script therefore touches keys it was not given,
which a single Redis (this service's deployment) allows.
"""

from __future__ import annotations

from protocol.keys import PREFIX
from protocol.states import Priority

# The prefixes of the three names below; protocol/scripts/includes/queued.lua builds the
# names from a job's hash with them (protocol.scripts.CONSTANTS).
LIVE_PREFIX = f"{PREFIX}:qlive:"
KEY_LIVE_PREFIX = f"{PREFIX}:qkey:"
KEYS_INDEX_PREFIX = f"{PREFIX}:qkeys:"


def live_key(priority: Priority | str, model: str) -> str:
    """``model``'s queued jobs of ``priority``: a sorted set of job ids by queue time."""
    return f"{LIVE_PREFIX}{Priority(priority).value}:{model}"


def key_live_key(priority: Priority | str, owner: str, model: str) -> str:
    """Of those, the jobs of API key ``owner`` (a key id: hex, no colon)."""
    return f"{KEY_LIVE_PREFIX}{Priority(priority).value}:{owner}:{model}"


def keys_index_key(priority: Priority | str, model: str) -> str:
    """The API keys with queued jobs of ``priority`` for ``model``, scored by since when."""
    return f"{KEYS_INDEX_PREFIX}{Priority(priority).value}:{model}"


def key_live_parts(priority: Priority | str, model: str) -> tuple[str, str]:
    """:func:`key_live_key` as ``prefix .. owner .. suffix``, for scripts that build it."""
    return f"{KEY_LIVE_PREFIX}{Priority(priority).value}:", f":{model}"


QUEUED_LUA = f"""
local function live_keys(job)
  local f = redis.call('HMGET', job, 'id', 'model', 'priority', 'owner')
  if not f[1] or not f[2] then return nil end
  local prio, owner = f[3] or 'batch', f[4] or ''
  return f[1], '{LIVE_PREFIX}' .. prio .. ':' .. f[2],
    '{KEY_LIVE_PREFIX}' .. prio .. ':' .. owner .. ':' .. f[2],
    '{KEYS_INDEX_PREFIX}' .. prio .. ':' .. f[2], owner
end
local function mark_queued(job, now_ms, ttl_ms)
  local id, all, mine, owners, owner = live_keys(job)
  if not id then return end
  redis.call('ZADD', all, 'NX', now_ms, id)
  redis.call('ZADD', mine, 'NX', now_ms, id)
  redis.call('ZADD', owners, 'NX', now_ms, owner)
  for _, k in ipairs({{all, mine, owners}}) do redis.call('PEXPIRE', k, ttl_ms) end
end
local function unmark_queued(job)
  local id, all, mine, owners, owner = live_keys(job)
  if not id then return end
  redis.call('ZREM', all, id)
  redis.call('ZREM', mine, id)
  if redis.call('EXISTS', mine) == 0 then redis.call('ZREM', owners, owner) end
end
"""
"""``mark_queued(job, now_ms, ttl_ms)`` and ``unmark_queued(job)``: a job's membership, from
its hash. Every script that sets a job's status to ``queued`` calls the first, every one that
moves it out of ``queued`` the second."""
