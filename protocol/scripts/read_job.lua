-- Read a job as its owner sees it (api/services/job_store.py), expiring it first if it is
-- queued past its deadline. A job of another key is not found, as a missing one. The queue
-- position (jobs ahead of it) costs one LLEN per list and one LPOS over the job's own list,
-- and only for a queued job. The key count varies with the number of priority lists of a
-- queue (protocol.keys.CELERY_PRIORITY_STEPS).
--
-- KEYS[1]  the job's hash
-- KEYS[2]  the job's event log
-- KEYS[3..] the model's lists, in the order consumers pop them (kombu pops from the right)
-- ARGV[1]  the reader's key id
-- ARGV[2]  now (Unix s)
-- ARGV[3]  retention (s)
-- ARGV[4]  the expired event's template (protocol.events.template)
-- Returns false (not found), or {fields (no msg, no spec), queue position or -1, last seq}.
--- @include expire_if_due
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return false end
expire_if_due(KEYS[1], KEYS[2], ARGV[2], ARGV[4], tonumber(ARGV[3]))
local h = redis.call('HGETALL', KEYS[1])
local out, msg, status, prio = {}, false, nil, nil
for i = 1, #h, 2 do
  if h[i] == 'msg' then msg = h[i + 1]
  elseif h[i] ~= 'spec' then
    table.insert(out, h[i]); table.insert(out, h[i + 1])
    if h[i] == 'status' then status = h[i + 1] end
  end
end
local position = -1
if status == 'queued' and msg then
  position = 0
  for i = 3, #KEYS do
    local at = redis.call('LPOS', KEYS[i], msg)
    local n = redis.call('LLEN', KEYS[i])
    if at then position = position + n - 1 - at; break end
    position = position + n
  end
end
return {out, position, last_seq(KEYS[2])}
