-- Decide the fate of a running job whose lease lapsed (workers/reaper.py): its worker is
-- gone. A lease renewed meanwhile, or a job that already ended, is left alone; a cancelled
-- job ends cancelled; a job out of attempts (hand-backs at shutdown do not count), or with
-- no claimed message to re-send, fails with the worker_lost error; any other goes back to
-- queued with the message it was claimed with, at the head of its queue (kombu pops from
-- the right).
--
-- KEYS[1]  the job's hash
-- KEYS[2]  the job's event log
-- KEYS[3]  the running jobs' leases (uml:leases)
-- KEYS[4]  the job's queue list (its priority's)
-- KEYS[5]  the queued index (uml:queued)
-- ARGV[1]  the job's id
-- ARGV[2]  the most attempts
-- ARGV[3]  retention (s)
-- ARGV[4]  the failed event's template (protocol.events.template)
-- ARGV[5]  the error (JSON) for the job's error field
-- ARGV[6]  the cancelled event's template
-- Returns 'renewed', 'ended', 'cancelled', 'failed' or 'requeued'.
--- @include finalize
--- @include now_ms
local job, events, leases, list, queued = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id, max_attempts, retention = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local failed, error, cancelled = ARGV[4], ARGV[5], ARGV[6]
local score = redis.call('ZSCORE', leases, id)
if not score or tonumber(score) > now_ms then return 'renewed' end
redis.call('ZREM', leases, id)
if redis.call('HGET', job, 'status') ~= 'running' then return 'ended' end
local now = now_ms / 1000
if redis.call('HGET', job, 'cancel') == '1' then
  finalize(job, events, 'cancelled', now, cancelled, retention)
  return 'cancelled'
end
local attempt = tonumber(redis.call('HGET', job, 'attempt') or '0')
attempt = attempt - tonumber(redis.call('HGET', job, 'handbacks') or '0')
local task = redis.call('HGET', job, 'task')
if attempt >= max_attempts or not task then
  finalize(job, events, 'failed', now, failed, retention)
  redis.call('HSET', job, 'error', error)
  return 'failed'
end
redis.call('HSET', job, 'status', 'queued', 'msg', task)
redis.call('HDEL', job, 'worker')
mark_queued(job, now_ms, retention * 1000)
redis.call('RPUSH', list, task)
redis.call('ZADD', queued, now_ms, id)
return 'requeued'
