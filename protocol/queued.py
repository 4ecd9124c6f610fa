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
``protocol/scripts/includes/queued.lua``: submission (:mod:`api.services.job_store`), the
worker's claim, cancel, expiry (both through ``includes/finalize.lua``), and the reaper's
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
