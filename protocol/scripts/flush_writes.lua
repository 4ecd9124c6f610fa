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
-- ARGV[2]  the plan (JSON): {"w": [[job index, [[entry id, event json, ids], ...],
--          [field, value, ...], final, attempt, job id, meter], ...], "c": [job index, ...]}:
--          job indexes are 1-based into the KEYS pairs; meter is 0 or the KEYS index of the
--          token window; ids ("5,17,3", or "" for an event that is no token) goes into the
--          same stream entry as a second field: a resumed attempt forces exactly these ids
-- ARGV[3]  the event field's name
-- ARGV[4]  the token ids field's name
-- Returns {cancelled or fenced job indexes, error messages}.
--- @include charge
local retention = tonumber(ARGV[1])
local plan = cjson.decode(ARGV[2])
local errors, cancelled = {}, {}
for _, w in ipairs(plan.w) do
  local jk, ek = KEYS[2 * w[1] - 1], KEYS[2 * w[1]]
  if w[5] > 0 and redis.call('HGET', jk, 'attempt') ~= tostring(w[5]) then
    table.insert(cancelled, w[1])
  else
    for _, ev in ipairs(w[2]) do
      local ok
      if ev[3] ~= '' then
        ok = redis.pcall('XADD', ek, ev[1], ARGV[3], ev[2], ARGV[4], ev[3])
      else
        ok = redis.pcall('XADD', ek, ev[1], ARGV[3], ev[2])
      end
      if type(ok) == 'table' and ok.err then
        if string.sub(ok.err, 1, 3) == 'OOM' then return redis.error_reply(ok.err) end
        if not string.find(ok.err, 'equal or smaller') then table.insert(errors, ok.err) end
      end
    end
    if #w[3] > 0 then redis.call('HSET', jk, unpack(w[3])) end
    if w[4] then
      redis.call('EXPIRE', jk, retention)
      redis.call('EXPIRE', ek, retention)
      redis.call('ZREM', KEYS[#KEYS], w[6])
      if w[7] > 0 and redis.call('HSETNX', jk, 'charged', '1') == 1 then
        local used = redis.call('HMGET', jk, 'prompt_tokens', 'completion_tokens')
        local tokens = (tonumber(used[1]) or 0) + (tonumber(used[2]) or 0)
        if tokens > 0 then charge(KEYS[w[7]], tokens) end
      end
    end
  end
end
for _, i in ipairs(plan.c) do
  if redis.call('HGET', KEYS[2 * i - 1], 'cancel') == '1' then table.insert(cancelled, i) end
end
return {cancelled, errors}
