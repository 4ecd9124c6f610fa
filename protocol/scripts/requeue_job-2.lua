-- Give a queued job's message back to the head of its list (workers/requeue.py), unclaimed:
-- it reached a worker that cannot run it now. The new message (a fresh delivery tag) goes
-- into the list and into the job's msg field, so queue positions keep working; nothing moves
-- if the job is no longer queued or its message changed meanwhile.
--
-- KEYS[1]  the job's hash
-- KEYS[2]  the list (kombu pops from the right: RPUSH is the head)
-- ARGV[1]  the message as read
-- ARGV[2]  the new message
-- Returns 1 if moved, else 0.
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return 0 end
if redis.call('HGET', KEYS[1], 'msg') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'msg', ARGV[2])
redis.call('RPUSH', KEYS[2], ARGV[2])
return 1
