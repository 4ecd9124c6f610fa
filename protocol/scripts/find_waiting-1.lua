-- Find a queued job of a key short of its share of a model's slots (workers/fairness.py):
-- the oldest queued job of the longest-waiting key holding fewer slots than the limit. A key
-- whose queued set turns out empty leaves the index. O(keys examined).
--
-- KEYS[1]  the keys index of the model's priority (protocol.queued.keys_index_key)
-- ARGV[1]  a key's queued set name before the key (protocol.queued.key_live_parts)
-- ARGV[2]  and after it
-- ARGV[3]  the limit: a key holding this many slots or more is passed over
-- ARGV[4]  how many keys to examine, longest waiting first
-- ARGV[5..] (key, slots it holds) pairs
-- Returns {job id, key}, or false.
local held = {}
for i = 5, #ARGV, 2 do held[ARGV[i]] = tonumber(ARGV[i + 1]) end
local limit = tonumber(ARGV[3])
for _, owner in ipairs(redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[4]) - 1)) do
  if (held[owner] or 0) < limit then
    local first = redis.call('ZRANGE', ARGV[1] .. owner .. ARGV[2], 0, 0)
    if first[1] then return {first[1], owner} end
    redis.call('ZREM', KEYS[1], owner)
  end
end
return false
