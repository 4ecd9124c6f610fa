-- Compare-and-set a batch's status (api/services/batches/store.py): move it to a new status,
-- stamping that status's time field, only if it is in the expected one, so a step repeated
-- after a runner takeover moves nothing twice.
--
-- KEYS[1]  the batch's hash
-- ARGV[1]  the status it must be in
-- ARGV[2]  the status to move to
-- ARGV[3]  the time field to stamp (<status>_at)
-- ARGV[4]  now (Unix s)
-- Returns 1 if moved, else 0.
if redis.call('HGET', KEYS[1], 'status') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2], ARGV[3], ARGV[4])
return 1
