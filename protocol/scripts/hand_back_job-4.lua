-- Put a job a worker stopped (shutting down) back at the head of its queue
-- (workers/reaper.py): only the attempt that runs it may, and the hand-back does not count
-- towards the attempt cap (handbacks + 1).
--
-- KEYS[1]  the job's hash
-- KEYS[2]  the running jobs' leases (uml:leases)
-- KEYS[3]  the job's queue list (its priority's)
-- KEYS[4]  the queued index (uml:queued)
-- ARGV[1]  the job's id
-- ARGV[2]  the attempt handing it back
-- ARGV[3]  retention (s)
-- Returns 'handed_back', or why not: 'ended', 'fenced' (another attempt runs it), 'no-task'.
--- @include queued
--- @include now_ms
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 'ended' end
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[2] then return 'fenced' end
local task = redis.call('HGET', KEYS[1], 'task')
if not task then return 'no-task' end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[1], 'handbacks', 1)
redis.call('HSET', KEYS[1], 'status', 'queued', 'msg', task)
redis.call('HDEL', KEYS[1], 'worker')
mark_queued(KEYS[1], now_ms, tonumber(ARGV[3]) * 1000)
redis.call('RPUSH', KEYS[3], task)
redis.call('ZADD', KEYS[4], now_ms, ARGV[1])
return 'handed_back'
