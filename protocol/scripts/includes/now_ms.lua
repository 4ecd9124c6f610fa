-- Defines now_ms: the time now in Redis's clock (TIME), Unix milliseconds. Every replica and
-- worker agrees on it, whatever the skew of their own clocks.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
