-- Reserve room for one file in an API key's storage quota (api/services/file_quota.py).
-- First drops the files whose expiry has passed (their hashes expired by TTL, or their
-- upload's reservation lapsed), so the usage summed here is exact without a sweeper.
--
-- KEYS[1]  the key's usage: sorted set, file id -> expiry (Unix s)
-- KEYS[2]  the key's sizes: hash, file id -> bytes
-- ARGV[1]  now (Unix s)
-- ARGV[2]  the file id to reserve for; '' only checks that the file would fit
-- ARGV[3]  the file's bytes
-- ARGV[4]  when the reservation lapses unless the file's write replaces it (Unix s)
-- ARGV[5]  most bytes (0: no limit)
-- ARGV[6]  most files (0: no limit)
-- ARGV[7]  TTL of KEYS[1] and KEYS[2] (s): the file retention
-- Returns {1 if reserved (or, when only checking, it fits) else 0, bytes used, files kept},
-- the usage before this file.
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for first = 1, #expired, 1000 do
  local chunk = {unpack(expired, first, math.min(first + 999, #expired))}
  redis.call('ZREM', KEYS[1], unpack(chunk))
  redis.call('HDEL', KEYS[2], unpack(chunk))
end
local files = redis.call('ZCARD', KEYS[1])
local used = 0
for _, size in ipairs(redis.call('HVALS', KEYS[2])) do used = used + tonumber(size) end
local bytes, max_bytes, max_files = tonumber(ARGV[3]), tonumber(ARGV[5]), tonumber(ARGV[6])
if (max_files > 0 and files + 1 > max_files) or (max_bytes > 0 and used + bytes > max_bytes) then
  return {0, used, files}
end
if ARGV[2] ~= '' then
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[2])
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
  redis.call('EXPIRE', KEYS[1], ARGV[7])
  redis.call('EXPIRE', KEYS[2], ARGV[7])
end
return {1, used, files}
