-- Take or renew an API key's stream or WebSocket slot (api/security/limits.py): a sorted set
-- of lease tokens scored by expiry (Redis time, ms); lapsed leases are dropped first, so a
-- slot whose process died frees itself. With a cap, a new token is admitted below it; with
-- cap 0 only an existing token is renewed (XX).
--
-- KEYS[1]  the key's stream (or socket) leases
-- ARGV[1]  the cap (0: renew only)
-- ARGV[2]  the lease (ms)
-- ARGV[3]  the slot's token
-- Returns {1 if taken or renewed else 0, slots open}.
--- @include now_ms
local cap, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
if cap == 0 then
  redis.call('ZADD', KEYS[1], 'XX', now_ms + lease, ARGV[3])
else
  local open = redis.call('ZCARD', KEYS[1])
  if open >= cap then return {0, open} end
  redis.call('ZADD', KEYS[1], now_ms + lease, ARGV[3])
end
redis.call('PEXPIRE', KEYS[1], lease)
return {1, redis.call('ZCARD', KEYS[1])}
