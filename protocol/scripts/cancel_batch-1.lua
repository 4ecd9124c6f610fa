-- Cancel a batch (api/services/batches/store.py): a validating or in-progress batch of this
-- owner becomes cancelling (the runner then cancels its jobs and finalizes it); any other is
-- left as it is.
--
-- KEYS[1]  the batch's hash
-- ARGV[1]  the owner's key id
-- ARGV[2]  now (Unix s)
-- Returns false (no such batch of this owner), 'cancelling', or the batch's status.
local status = redis.call('HGET', KEYS[1], 'status')
if not status or redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return false end
if status == 'validating' or status == 'in_progress' then
  redis.call('HSET', KEYS[1], 'status', 'cancelling', 'cancelling_at', ARGV[2],
             'stop_reason', 'cancelled')
  return 'cancelling'
end
return status
