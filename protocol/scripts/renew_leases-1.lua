-- Renew the leases of the jobs a worker runs (workers/reaper.py, with each heartbeat): only
-- leases that still exist (XX), so a job that ended meanwhile gets none back.
--
-- KEYS[1]  the running jobs' leases (uml:leases): job id -> lease expiry (Unix ms)
-- ARGV[1]  the lease (ms)
-- ARGV[2..] the job ids
-- Returns the number of job ids given.
--- @include now_ms
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', now_ms + tonumber(ARGV[1]), ARGV[i]) end
return #ARGV - 1
