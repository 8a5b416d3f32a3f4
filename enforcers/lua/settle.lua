-- Settle (or release, with zero amounts) one reservation: drop it from every budget and add the actual amount to
-- each budget's current counter. Idempotent: a marker key makes a second settle of the same id a no-op.
--
-- KEYS: settled marker, then per budget: reservations zset, reservation amounts hash, current counter key.
-- ARGV: reservation_id, marker_ttl_ms, nb, then per budget: actual_amount, counter_ttl_ms.
-- Returns 1 when settled now, 0 when it had been settled before.
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[2]) then return 0 end
local nb = tonumber(ARGV[3])
local k = 2
local a = 4
for _ = 1, nb do
  redis.call('ZREM', KEYS[k], ARGV[1])
  redis.call('HDEL', KEYS[k + 1], ARGV[1])
  local amount = tonumber(ARGV[a])
  if amount > 0 then
    redis.call('INCRBY', KEYS[k + 2], amount)
    redis.call('PEXPIRE', KEYS[k + 2], ARGV[a + 1])
  end
  k = k + 3
  a = a + 2
end
return 1
