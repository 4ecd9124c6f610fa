-- A job's membership of the live queued sets (protocol/queued.py), derived from its hash
-- (model, priority, owner), so no caller can pass the wrong keys. mark_queued(job, now_ms,
-- ttl_ms) adds it: every script that sets a job's status to queued calls it. unmark_queued(job)
-- removes it: every script that moves a job out of queued calls it. Both are idempotent.
local function live_keys(job)
  local f = redis.call('HMGET', job, 'id', 'model', 'priority', 'owner')
  if not f[1] or not f[2] then return nil end
  local prio, owner = f[3] or 'batch', f[4] or ''
  return f[1], '${LIVE_PREFIX}' .. prio .. ':' .. f[2],
    '${KEY_LIVE_PREFIX}' .. prio .. ':' .. owner .. ':' .. f[2],
    '${KEYS_INDEX_PREFIX}' .. prio .. ':' .. f[2], owner
end
local function mark_queued(job, now_ms, ttl_ms)
  local id, all, mine, owners, owner = live_keys(job)
  if not id then return end
  redis.call('ZADD', all, 'NX', now_ms, id)
  redis.call('ZADD', mine, 'NX', now_ms, id)
  redis.call('ZADD', owners, 'NX', now_ms, owner)
  for _, k in ipairs({all, mine, owners}) do redis.call('PEXPIRE', k, ttl_ms) end
end
local function unmark_queued(job)
  local id, all, mine, owners, owner = live_keys(job)
  if not id then return end
  redis.call('ZREM', all, id)
  redis.call('ZREM', mine, id)
  if redis.call('EXISTS', mine) == 0 then redis.call('ZREM', owners, owner) end
end
