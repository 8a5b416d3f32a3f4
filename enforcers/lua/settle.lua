-- Settle (or release, with zero amounts) one reservation: drop its record from every budget, add the actual
-- amount to each budget's bucket and move the state by (actual - reserved). sweep.lua is prepended to this source.
-- Idempotent: the record is the proof of an unsettled reservation, so a second settle finds none and changes
-- nothing. An 'r' record still holds its amount (expired or not: it counts until a sweep turns it into a 'z'
-- record); a 'z' record holds nothing (a degraded budget's, or an expired reservation's), so only the actual moves.
--
-- KEYS: one counter hash per budget (layout: reserve.lua, docs/enforcement.md).
-- ARGV: reservation field, now_ms, actual nano-USD, actual tokens, actual - reserved nano-USD, actual - reserved
--       tokens, then per budget: code ('u' nano-USD, 't' tokens), state field, bucket_start_ms.
-- Returns 1 when settled now, 0 when there was nothing to settle (settled before, or its key expired).
local field = ARGV[1]
local settled = 0
local zero
for b = 1, #KEYS do
  local key, a = KEYS[b], 4 + 3 * b
  local usd = ARGV[a] == 'u'
  local actual, move = usd and ARGV[3] or ARGV[4], usd and ARGV[5] or ARGV[6]
  local held = redis.call('HDEL', key, field) == 1
  if not held then
    zero = zero or 'z' .. string.sub(field, 2)
    if redis.call('HDEL', key, zero) == 1 then move = actual else move = nil end
  end
  if move then
    settled = 1
    if actual ~= '0' then redis.call('HINCRBY', key, ARGV[a + 2], actual) end
    -- A reply equal to the move found no state for this window (it moved, or the counter is new): sweep.
    if move ~= '0' and redis.call('HINCRBY', key, ARGV[a + 1], move) == tonumber(move) then
      sweep(key, ARGV[a + 1], tonumber(ARGV[2]))
    end
  end
end
return settled
