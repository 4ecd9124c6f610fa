-- Defines charge(key, tokens): add tokens to a token window (protocol/meter.py), even past its
-- limit (a finished job's tokens are spent); returns the window's bucket count after.
--- @include sliding_window
--- @include now_ms
local function charge(key, tokens)
  local idx, c, p = roll(key, ${TOKEN_WINDOW_MS}, now_ms)
  store(key, idx, c + tokens, p, ${TOKEN_WINDOW_MS})
  return c + tokens
end
