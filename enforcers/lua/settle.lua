-- Settle (or release, with zero amounts) one reservation: drop it from every budget and add the actual amount to
-- each budget's current counter. Idempotent: a marker key makes a second settle of the same id a no-op.
--
-- KEYS: settled marker, then per budget: reservations zset, reservation amounts hash, counter hash.
-- ARGV: reservation_id, marker_ttl_ms, nb, then per budget: actual_amount, counter_ttl_ms, bucket_start_ms.
-- Returns 1 when settled now, 0 when it had been settled before.
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[2]) then return 0 end
local nb = tonumber(ARGV[3])
local k = 2
local a = 4
for _ = 1, nb do
  -- Not in the zset: never held here (a degraded budget) or expired and purged with its amount already.
  if redis.call('ZREM', KEYS[k], ARGV[1]) == 1 then
    local held = redis.call('HGET', KEYS[k + 1], ARGV[1])
    if held then
      redis.call('HDEL', KEYS[k + 1], ARGV[1])
      redis.call('HINCRBY', KEYS[k + 1], '_total', -tonumber(held))
    end
  end
  local amount = tonumber(ARGV[a])
  if amount > 0 then
    redis.call('HINCRBY', KEYS[k + 2], ARGV[a + 2], amount)
    redis.call('PEXPIRE', KEYS[k + 2], ARGV[a + 1])
  end
  k = k + 3
  a = a + 3
end
return 1
