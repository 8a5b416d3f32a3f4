-- set_counter(key, bucket, amount, ttl_ms): set one counter bucket to the worker's authoritative total, keeping
-- the guard's running spent total in step. Open reservations are untouched; the key's TTL is only ever extended
-- (the guard relies on the expiry it set). Shared by reconcile.lua and the stream worker's window commit.
-- The counter hash's layout: reserve.lua.
local function set_counter(key, bucket, amount, ttl)
  local got = redis.call('HMGET', key, '_w', '_s', bucket)
  local w = tonumber(got[1])
  if w == nil then
    redis.call('HSET', key, bucket, amount)
  elseif tonumber(bucket) < w then
    -- The window has left this bucket: it no longer counts, so it is not kept.
    if got[3] then redis.call('HDEL', key, bucket) end
  else
    local s = tonumber(got[2]) + tonumber(amount) - (tonumber(got[3]) or 0)
    if s < 0 then s = 0 end
    redis.call('HSET', key, bucket, amount, '_s', s)
  end
  local left = redis.call('PTTL', key)
  if left >= -1 and left < ttl then redis.call('PEXPIRE', key, ttl) end
end
