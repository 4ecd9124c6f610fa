-- Admit a request under an API key's rate limits (api/security/limits.py): roll every
-- window (sliding-window counters, Redis time), test each, and charge one request to each
-- request window if all have room, or to none. The token window is only tested (a finished
-- job's tokens are charged by the worker, flush_writes.lua). The key count varies: the
-- request windows, then the token window on generation routes.
--
-- KEYS[1..n] the request windows (burst, rpm, rph)
-- KEYS[n+1]  the token window (tpm), if ARGV[2] is 1
-- ARGV[1]  n, the number of request windows
-- ARGV[2]  1 to test the token window too, else 0
-- ARGV[3..] period (ms) and limit of each key's window, in KEYS order
-- Returns {1 if admitted else 0, now (Unix ms), then each window's current and previous
-- bucket counts before any charge}.
--- @include sliding_window
--- @include now_ms
local n, check_tokens = tonumber(ARGV[1]), tonumber(ARGV[2])
local ok, out, state = 1, {0, now_ms}, {}
for i = 1, #KEYS do
  local period, limit = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  local idx, c, p = roll(KEYS[i], period, now_ms)
  if weighted(c, p, period, now_ms) + 1 > limit then ok = 0 end
  state[i] = {idx, c, p, period}
  out[#out + 1] = c
  out[#out + 1] = p
end
if ok == 1 then
  for i = 1, n do
    local s = state[i]
    store(KEYS[i], s[1], s[2] + 1, s[3], s[4])
  end
end
out[1] = ok
return out
