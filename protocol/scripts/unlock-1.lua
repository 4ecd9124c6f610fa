-- Release a lock (a string key holding its holder's name) only if we hold it: the reaper's
-- pass lock (workers/reaper.py) and the batch runner's lease (api/services/batches/runner.py).
--
-- KEYS[1]  the lock
-- ARGV[1]  our holder name
-- Returns 1 if released, else 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
