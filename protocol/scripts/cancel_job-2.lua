-- Cancel a job (api/services/job_store.py): a queued one ends now (cancelled, with its final
-- event), a running one is flagged for its worker (which reads the flag each iteration); a
-- queued job past its deadline is expired first. With an owner, another key's job is not
-- found; without (the API's own cancel of a call its client abandoned), whoever's it is.
--
-- KEYS[1]  the job's hash
-- KEYS[2]  the job's event log
-- ARGV[1]  now (Unix s)
-- ARGV[2]  retention (s)
-- ARGV[3]  the expired event's template (protocol.events.template)
-- ARGV[4]  the cancelled event's template
-- ARGV[5]  the owner's key id (optional)
-- Returns false (not found), or {status after the call, last seq}.
--- @include expire_if_due
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
if ARGV[5] and redis.call('HGET', KEYS[1], 'owner') ~= ARGV[5] then return false end
local retention = tonumber(ARGV[2])
expire_if_due(KEYS[1], KEYS[2], ARGV[1], ARGV[3], retention)
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'queued' then
  redis.call('HSET', KEYS[1], 'cancel', '1')
  finalize(KEYS[1], KEYS[2], 'cancelled', ARGV[1], ARGV[4], retention)
  status = 'cancelled'
elseif status == 'running' then
  redis.call('HSET', KEYS[1], 'cancel', '1')
end
return {status, last_seq(KEYS[2])}
