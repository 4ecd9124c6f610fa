-- Write every active job's new events and hash fields, and read the cancel flags of the
-- running ones, in one round trip (workers/sink.py: once per scheduler iteration). Each event
-- is XADDed under its explicit id {seq}-1 (Redis rejects a duplicate, so a retried flush is
-- idempotent); a final write sets the retention TTL, drops the job's lease and charges its
-- tokens to its token window once (the job's charged flag). A write whose attempt (when > 0)
-- is no longer the job's is fenced: skipped, and reported with the cancelled ones so its
-- (stale) worker drops the job. A full Redis (OOM, under maxmemory-policy noeviction) fails
-- the whole flush, which the caller retries. The key count varies with the jobs written.
--
-- KEYS     the job's hash and event log of each job, in pairs; then the token windows to
--          charge; last, the running jobs' leases (uml:leases)
-- ARGV[1]  retention (s)
-- ARGV[2]  the plan (JSON, workers.sink._Plan): {"writes": [write, ...], "watch": [job, ...]}
--          with each write {"job": job, "events": [[entry id, event json, ids], ...],
--          "fields": [name, value, ...], "final": bool, "attempt": n (0: unfenced),
--          "id": job id, "meter": 0 or the KEYS index of its token window}; a job is its
--          index (from 1) into the KEYS pairs; ids ("5,17,3", or "" for an event that is no
--          token) goes into the same stream entry as a second field: a resumed attempt
--          forces exactly these ids
-- ARGV[3]  the event field's name
-- ARGV[4]  the token ids field's name
-- Returns {cancelled or fenced job indexes, error messages}.
--- @include charge
local retention = tonumber(ARGV[1])
local plan = cjson.decode(ARGV[2])
local data_field, ids_field = ARGV[3], ARGV[4]
local errors, cancelled = {}, {}
for _, w in ipairs(plan.writes) do
  local jk, ek = KEYS[2 * w.job - 1], KEYS[2 * w.job]
  if w.attempt > 0 and redis.call('HGET', jk, 'attempt') ~= tostring(w.attempt) then
    table.insert(cancelled, w.job)
  else
    for _, ev in ipairs(w.events) do
      local id, data, ids = ev[1], ev[2], ev[3]
      local ok
      if ids ~= '' then
        ok = redis.pcall('XADD', ek, id, data_field, data, ids_field, ids)
      else
        ok = redis.pcall('XADD', ek, id, data_field, data)
      end
      if type(ok) == 'table' and ok.err then
        if string.sub(ok.err, 1, 3) == 'OOM' then return redis.error_reply(ok.err) end
        if not string.find(ok.err, 'equal or smaller') then table.insert(errors, ok.err) end
      end
    end
    if #w.fields > 0 then redis.call('HSET', jk, unpack(w.fields)) end
    if w.final then
      redis.call('EXPIRE', jk, retention)
      redis.call('EXPIRE', ek, retention)
      redis.call('ZREM', KEYS[#KEYS], w.id)
      if w.meter > 0 and redis.call('HSETNX', jk, 'charged', '1') == 1 then
        local used = redis.call('HMGET', jk, 'prompt_tokens', 'completion_tokens')
        local tokens = (tonumber(used[1]) or 0) + (tonumber(used[2]) or 0)
        if tokens > 0 then charge(KEYS[w.meter], tokens) end
      end
    end
  end
end
for _, i in ipairs(plan.watch) do
  if redis.call('HGET', KEYS[2 * i - 1], 'cancel') == '1' then table.insert(cancelled, i) end
end
return {cancelled, errors}
