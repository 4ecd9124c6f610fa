-- Record one finished job's result line in its batch, exactly once
-- (api/services/batches/runner.py): the job leaves the pending set, its line goes to the
-- output or the error lines, and the batch's counts and token usage grow.
--
-- KEYS[1]  the batch's hash
-- KEYS[2]  its pending jobs (set)
-- KEYS[3]  its output lines (list)
-- KEYS[4]  its error lines (list)
-- ARGV[1]  the job's id
-- ARGV[2]  'out' or 'err': where the line goes
-- ARGV[3]  the line
-- ARGV[4]  completed requests to add (0 or 1)
-- ARGV[5]  failed requests to add (0 or 1)
-- ARGV[6]  input tokens to add
-- ARGV[7]  output tokens to add
-- Returns 1 if recorded, 0 if the job was not pending (recorded already).
local batch, pending, out, err = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, target, line = ARGV[1], ARGV[2], ARGV[3]
if redis.call('SREM', pending, id) == 0 then return 0 end
if target == 'out' then redis.call('RPUSH', out, line)
else redis.call('RPUSH', err, line) end
redis.call('HINCRBY', batch, 'completed', ARGV[4])
redis.call('HINCRBY', batch, 'failed', ARGV[5])
redis.call('HINCRBY', batch, 'input_tokens', ARGV[6])
redis.call('HINCRBY', batch, 'output_tokens', ARGV[7])
return 1
