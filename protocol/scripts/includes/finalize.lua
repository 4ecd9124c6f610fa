-- Defines finalize(job, events, status, now, template, retention): end the log of a job no
-- worker runs (cancelled or expired while queued, or given up by the reaper). It appends
-- template (protocol.events.template: the final event with "seq":0) as the next event, sets
-- the final status, finished_at = now and the retention TTL (s) of the hash and the log, and
-- drops the job from the live queued sets. Returns the seq of the event it appended. The
-- API's cancel and read scripts, the claim and the reaper all end a log through it.
--- @include queued
--- @include last_seq
local function finalize(job, events, status, now, template, retention)
  unmark_queued(job)
  local seq = last_seq(events) + 1
  local event = string.gsub(template, '"seq":0', '"seq":' .. seq, 1)
  redis.call('XADD', events, seq .. '-1', 'data', event)
  redis.call('HSET', job, 'status', status, 'finished_at', now)
  redis.call('HDEL', job, 'msg')
  redis.call('EXPIRE', job, retention)
  redis.call('EXPIRE', events, retention)
  return seq
end
