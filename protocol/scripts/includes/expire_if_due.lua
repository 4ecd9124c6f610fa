-- Defines expire_if_due(job, events, now, template, retention): a queued job whose deadline
-- (Unix s) is at or before now ends here as expired, through finalize (template: the expired
-- event). Whichever script sees such a job first expires it.
--- @include finalize
local function expire_if_due(job, events, now, template, retention)
  local f = redis.call('HMGET', job, 'status', 'deadline')
  if f[1] == 'queued' and f[2] and tonumber(f[2]) <= tonumber(now) then
    finalize(job, events, 'expired', now, template, retention)
  end
end
