-- Settle (or release, with zero amounts) one reservation: drop its record from every budget and add the actual
-- amount to each budget's current counter bucket and spent total. Idempotent: the record is the proof of an
-- unsettled reservation, so a second settle of the same reservation finds none and changes nothing.
--
-- KEYS: one counter hash per budget (layout: reserve.lua).
-- ARGV: reservation field, now_ms, actual nano-USD, actual tokens, nb, then per budget: unit (1 nano-USD,
--       2 tokens), counter_ttl_ms, bucket_start_ms.
-- Returns 1 when settled now, 0 when there was nothing to settle (settled before, or its key expired).
local field = ARGV[1]
local now = tonumber(ARGV[2])
local nb = tonumber(ARGV[5])
local SLACK = 300000
local settled = 0
local a = 6
for b = 1, nb do
  local key, amount, bucket = KEYS[b], ARGV[a] == '1' and ARGV[3] or ARGV[4], ARGV[a + 2]
  local got = redis.call('HMGET', key, field, '_o', '_s', '_w', '_x', bucket)
  if got[1] then
    settled = 1
    redis.call('HDEL', key, field)
    -- An expired reservation is a zero-amount tombstone: the open total no longer counts it.
    local o = (tonumber(got[2]) or 0) - tonumber(got[1])
    if o < 0 then o = 0 end
    local put = {key, '_o', o}
    if amount ~= '0' then
      local w = tonumber(got[4])
      put[4] = bucket
      put[5] = (tonumber(got[6]) or 0) + tonumber(amount)
      if w == nil then
        put[6] = '_n'; put[7] = 1  -- no running state: have the next reserve rebuild it from the buckets
      elseif tonumber(bucket) >= w then
        put[6] = '_s'; put[7] = tonumber(got[3]) + tonumber(amount)
      end  -- else the window has left this bucket: it no longer counts, and the next walk drops it
    end
    local ttl = tonumber(ARGV[a + 1])
    if now + ttl > (tonumber(got[5]) or 0) then
      redis.call('PEXPIRE', key, ttl + SLACK)
      put[#put + 1] = '_x'; put[#put + 1] = now + ttl + SLACK
    end
    redis.call('HSET', unpack(put))
  end
  a = a + 3
end
return settled
