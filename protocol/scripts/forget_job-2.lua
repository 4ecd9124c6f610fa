-- The orphan sweep's end of a job that is no longer queued (workers/reaper.py): it leaves
-- the queued index, and the live queued sets unless it is queued again.
--
-- KEYS[1]  the job's hash
-- KEYS[2]  the queued index (uml:queued)
-- ARGV[1]  the job's id
-- Returns nothing.
--- @include queued
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then unmark_queued(KEYS[1]) end
