-- Take a free lock or renew our own (api/services/batches/runner.py: the batch runner's
-- lease, so one API replica drives the batches); unlock-1.lua releases it.
--
-- KEYS[1]  the lock
-- ARGV[1]  our holder name
-- ARGV[2]  its TTL (ms)
-- Returns 1 if we hold it now, else 0.
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
