-- set_counter(key, bucket, amount, ttl_ms): set one counter bucket to the worker's authoritative total, moving the
-- guard's state (spent + open - limit, in the field '_k' names) by the difference. Open reservations are
-- untouched; the key's TTL is only ever extended (the guard relies on the expiry it set). Shared by reconcile.lua
-- and the stream worker's window commit. The counter hash's layout: docs/enforcement.md, reserve.lua.
local function set_counter(key, bucket, amount, ttl)
  local got = redis.call('HMGET', key, '_k', bucket)
  local state = got[1]
  local w = state and tonumber(string.match(state, '^_(%d+):'))
  if w and tonumber(bucket) < w then
    -- The window has left this bucket: it no longer counts, so it is not kept.
    if got[2] then redis.call('HDEL', key, bucket) end
  else
    redis.call('HSET', key, bucket, amount)
    local move = tonumber(amount) - (tonumber(got[2]) or 0)
    -- No state (or none in force): the guard's next reserve sums the buckets anyway.
    if w and move ~= 0 and redis.call('HEXISTS', key, state) == 1 then redis.call('HINCRBY', key, state, move) end
  end
  local left = redis.call('PTTL', key)
  if left >= -1 and left < ttl then redis.call('PEXPIRE', key, ttl) end
end
