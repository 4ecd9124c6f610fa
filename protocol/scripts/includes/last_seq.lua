-- Defines last_seq(events): the seq of the last entry of a job's event log (its id is
-- {seq}-1), 0 for an empty log.
local function last_seq(events)
  local last = redis.call('XREVRANGE', events, '+', '-', 'COUNT', 1)
  if last[1] then return tonumber(string.match(last[1][1], '^(%d+)')) end
  return 0
end
