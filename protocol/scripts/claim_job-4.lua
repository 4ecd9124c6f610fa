-- Claim a job for a worker (workers/claim.py): only a queued job (not cancelled, deadline not
-- passed) becomes running, once. A job past its deadline is expired here, with its final
-- event; a cancelled one ends cancelled. The claimed message moves from msg to task (the
-- reaper re-sends it if this worker dies) and the job's lease starts (Redis time). Whatever
-- the outcome the job is no longer queued: it leaves the queued index and the live queued
-- sets (protocol/queued.py).
--
-- KEYS[1]  the job's hash
-- KEYS[2]  the job's event log
-- KEYS[3]  the running jobs' leases (uml:leases)
-- KEYS[4]  the queued index (uml:queued)
-- ARGV[1]  the worker's id
-- ARGV[2]  now (Unix s): started_at, or finished_at of a job that ends here
-- ARGV[3]  the expired event's template (protocol.events.template)
-- ARGV[4]  retention (s)
-- ARGV[5]  the lease (ms)
-- ARGV[6]  the job's id
-- Returns {outcome, attempt, last seq, spec, meter}: outcome 'claimed' (with the new attempt,
-- the job's spec and its token window), else 'missing', 'skip:<status>', 'cancelled' or
-- 'expired' (attempt 0, spec false).
--- @include finalize
local job, events, leases, queued = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local worker, now, expired, retention = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local lease_ms, id = tonumber(ARGV[5]), ARGV[6]
redis.call('ZREM', queued, id)
unmark_queued(job)
local status = redis.call('HGET', job, 'status')
if not status then return {'missing', 0, 0, false} end
local seq = last_seq(events)
if status ~= 'queued' then return {'skip:' .. status, 0, seq, false} end
if redis.call('HGET', job, 'cancel') == '1' then
  redis.call('HSET', job, 'status', 'cancelled', 'finished_at', now)
  redis.call('HDEL', job, 'msg')
  return {'cancelled', 0, seq, false}
end
local deadline = redis.call('HGET', job, 'deadline')
if deadline and tonumber(deadline) <= tonumber(now) then
  seq = finalize(job, events, 'expired', now, expired, retention)
  return {'expired', 0, seq, false}
end
local attempt = redis.call('HINCRBY', job, 'attempt', 1)
redis.call('HSET', job, 'status', 'running', 'worker', worker, 'started_at', now)
local msg = redis.call('HGET', job, 'msg')
if msg then redis.call('HSET', job, 'task', msg) end
redis.call('HDEL', job, 'msg')
--- @include now_ms
redis.call('ZADD', leases, now_ms + lease_ms, id)
return {'claimed', attempt, seq, redis.call('HGET', job, 'spec'), redis.call('HGET', job, 'meter')}
