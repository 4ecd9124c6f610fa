-- Submit a job (api/services/job_store.py): one atomic round trip, so a job is recorded,
-- queued, counted and indexed together or not at all, and the bound is exact. It checks the
-- Idempotency-Key (same body: replay the job; another body: conflict), drops live queued
-- members older than the retention, checks the owner's share and the queue's bound (both per
-- priority, on the live queued sets of protocol/queued.py), then writes the job hash with the
-- Celery message in its msg field, pushes the message onto its priority's list, marks the job
-- queued, indexes it in the queued index and under its owner (trimming ids older than the
-- retention) and stores the idempotency key. The key count varies with the number of
-- priority lists of a queue (protocol.keys.CELERY_PRIORITY_STEPS).
--
-- KEYS[1]  the job's hash
-- KEYS[2]  the owner's jobs index (ids by lex order)
-- KEYS[3]  the idempotency key ('' for none)
-- KEYS[4]  the queued index (uml:queued)
-- KEYS[5]  the model's live queued jobs of the job's priority
-- KEYS[6]  the owner's share of them
-- KEYS[7..] the model's lists, one per priority step, in the order consumers pop them
-- ARGV[1]  retention (s)
-- ARGV[2]  the priority's bound
-- ARGV[3]  which of the lists (1-based) takes the message
-- ARGV[4]  the Celery message
-- ARGV[5]  the job's id
-- ARGV[6]  the body's hash (stored with the idempotency key)
-- ARGV[7]  the idempotency key's TTL (s)
-- ARGV[8]  the id below which the owner's index is trimmed (older than the retention)
-- ARGV[9]  the job key prefix (an idempotency key's job exists if prefix .. id does)
-- ARGV[10] the owner's share (0: none below the bound)
-- ARGV[11..] the hash fields, name and value
-- Returns {'queued', id, jobs ahead} | {'replay'|'conflict', id} | {'share'|'full', count}.
--- @include queued
local job, owner_index, idem, queued_index = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local live, share = KEYS[5], KEYS[6]
local retention, bound, target = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local msg, id, body_hash, idem_ttl = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local cutoff, job_prefix, share_cap = ARGV[8], ARGV[9], tonumber(ARGV[10])
if idem ~= '' then
  local prev = redis.call('GET', idem)
  if prev then
    local prev_id, hash = string.match(prev, '^(%S+) (%S+)$')
    if hash ~= body_hash then return {'conflict', prev_id} end
    if redis.call('EXISTS', job_prefix .. prev_id) == 1 then return {'replay', prev_id} end
  end
end
--- @include now_ms
local stale = '(' .. (now_ms - retention * 1000)
redis.call('ZREMRANGEBYSCORE', live, '-inf', stale)
redis.call('ZREMRANGEBYSCORE', share, '-inf', stale)
local mine = redis.call('ZCARD', share)
if share_cap > 0 and mine >= share_cap then return {'share', tostring(mine)} end
local queued = redis.call('ZCARD', live)
if queued >= bound then return {'full', tostring(queued)} end
local ahead = 0
for i = 7, 6 + target do ahead = ahead + redis.call('LLEN', KEYS[i]) end
redis.call('HSET', job, 'msg', msg, unpack(ARGV, 11))
redis.call('EXPIRE', job, retention)
mark_queued(job, now_ms, retention * 1000)
redis.call('LPUSH', KEYS[6 + target], msg)
redis.call('ZADD', queued_index, now_ms, id)
redis.call('ZADD', owner_index, 0, id)
redis.call('ZREMRANGEBYLEX', owner_index, '-', '(' .. cutoff)
redis.call('EXPIRE', owner_index, retention)
if idem ~= '' then redis.call('SET', idem, id .. ' ' .. body_hash, 'EX', idem_ttl) end
return {'queued', id, ahead}
