-- Sliding-window counters (api/security/limits.py), each a hash {w: bucket index, c: count
-- in it, p: count in the one before}: roll(key, period, now) reads one as of now,
-- weighted(c, p, period, now) is its count, store(key, idx, c, p, period) writes it back.
local function roll(key, period, now)
  local idx = math.floor(now / period)
  local h = redis.call('HMGET', key, 'w', 'c', 'p')
  local w, c, p = tonumber(h[1]), tonumber(h[2]) or 0, tonumber(h[3]) or 0
  if w == idx - 1 then p, c = c, 0 elseif w ~= idx then p, c = 0, 0 end
  return idx, c, p
end
local function weighted(c, p, period, now)
  return math.floor(p * (period - now % period) / period) + c
end
local function store(key, idx, c, p, period)
  redis.call('HSET', key, 'w', idx, 'c', c, 'p', p)
  redis.call('PEXPIRE', key, 2 * period)
end
