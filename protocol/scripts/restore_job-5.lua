-- The orphan sweep's look at one long-queued job (workers/reaper.py). A queued job whose
-- message is neither in its list nor delivered to a worker lost it (kombu pops with BRPOP: a
-- reply lost in a Redis restart is a message gone); one delivered that long ago without a
-- claim was stranded (its worker died, or dropped it when its broker connection broke and
-- could not give it back). Either way it is pushed back (and the stranded delivery dropped);
-- a duplicate is harmless, the claim runs a job once. The sweep also re-asserts the job's
-- place in the live queued sets (protocol/queued.py): a member while queued, none after.
--
-- KEYS[1]  the job's hash
-- KEYS[2]  the queued index (uml:queued): job id -> when its message was last seen (Unix ms)
-- KEYS[3]  the job's queue list (its priority's)
-- KEYS[4]  kombu's unacked hash (delivery tag -> message)
-- KEYS[5]  kombu's unacked index (delivery tag -> delivery time, Unix s)
-- ARGV[1]  the job's id
-- ARGV[2]  the job's message as read (its msg field)
-- ARGV[3]  the message's delivery tag ('' if unknown)
-- ARGV[4]  after how long (s) a delivered message of a still-queued job counts as stranded
-- ARGV[5]  retention (s)
-- Returns 'ended' (no longer queued: it leaves the index), 'moved' (msg changed meanwhile),
-- 'queued' (in its list), 'delivered' (recently), 'stranded' or 'restored' (pushed back).
--- @include queued
--- @include now_ms
local job, queued, list, unacked, unacked_index = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id, msg, tag, stranded_s, retention = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if redis.call('HGET', job, 'status') ~= 'queued' then
  redis.call('ZREM', queued, id)
  unmark_queued(job)
  return 'ended'
end
mark_queued(job, now_ms, tonumber(retention) * 1000)
if redis.call('HGET', job, 'msg') ~= msg then
  redis.call('ZADD', queued, now_ms, id)
  return 'moved'
end
redis.call('ZADD', queued, now_ms, id)
if redis.call('LPOS', list, msg, 'RANK', -1) then return 'queued' end
if tag ~= '' and redis.call('HEXISTS', unacked, tag) == 1 then
  local at = tonumber(redis.call('ZSCORE', unacked_index, tag))
  if not at or now_ms / 1000 - at < tonumber(stranded_s) then return 'delivered' end
  redis.call('HDEL', unacked, tag)
  redis.call('ZREM', unacked_index, tag)
  redis.call('RPUSH', list, msg)
  return 'stranded'
end
redis.call('RPUSH', list, msg)
return 'restored'
