-- Atomically: read the stream's decisions for the call's scope, then reserve the call's worst case against every
-- live budget counter that matches it - all or nothing across budgets. sweep.lua is prepended to this source.
--
-- One hash per budget member (docs/enforcement.md): counter buckets, the records 'r<expiry_ms>:<id>' = amount of
-- open reservations ('z...' = 0 for records that hold nothing), and one state field, named by its window, keep
-- time and limit, holding spent + open - limit. The common path per budget is one HINCRBY of the state (its
-- integer reply is the check: > 0 is over the limit) and one HSET of the record; nothing is parsed or formatted.
-- A reply <= 0 never over-admits: reservations that expired unswept only make the state larger. So the counter is
-- swept (sweep.lua) only when the reply says over, or no state: a moved window, a changed limit, a new counter.
--
-- KEYS: the decision keys, then one counter hash per budget.
-- ARGV: reservation field, now_ms, worst case in nano-USD, worst case in tokens, then per budget: code ('u' / 't':
--       a block budget counting nano-USD / tokens, 'U' / 'T': the same for a degrade budget) and state field.
-- Returns 0 (reserved everywhere) | a bit mask of the degraded budgets (budget b: 2^(b-1)) |
--         {'d', json...}: the stream's decisions | {'x', budget_index, held}: refused, nothing reserved.
local nb = (#ARGV - 4) / 2
local nd = #KEYS - nb
if nd > 0 then
  local found = {'d'}
  for _, d in ipairs(redis.call('MGET', unpack(KEYS, 1, nd))) do
    if d then found[#found + 1] = d end
  end
  if #found > 1 then return found end
end

local field = ARGV[1]
local took, amounts = {}, {}  -- per budget: the state field holding this call's amount (nil: degraded), amount
local mask = 0
for b = 1, nb do
  local key, code, state = KEYS[nd + b], ARGV[3 + 2 * b], ARGV[4 + 2 * b]
  local amount = (code == 'u' or code == 'U') and ARGV[3] or ARGV[4]
  if redis.call('HINCRBY', key, state, amount) >= 0 then  -- over the limit (or exactly at it), or no state
    local excess, limit
    state, excess, limit = sweep(key, state, tonumber(ARGV[2]))
    if excess + tonumber(amount) <= 0 then
      redis.call('HINCRBY', key, state, amount)
    elseif code == 'u' or code == 't' then
      for i = 1, b - 1 do
        if took[i] and amounts[i] ~= '0' then redis.call('HINCRBY', KEYS[nd + i], took[i], '-' .. amounts[i]) end
      end
      return {'x', b, excess + limit}
    else
      mask = mask + 2 ^ (b - 1)
      state = false  -- a degraded budget holds nothing, but keeps a record so the settle charges it
    end
  end
  took[b], amounts[b] = state, amount
end

local zero
for b = 1, nb do
  if took[b] then
    redis.call('HSET', KEYS[nd + b], field, amounts[b])
  else
    zero = zero or 'z' .. string.sub(field, 2)
    redis.call('HSET', KEYS[nd + b], zero, '0')
  end
end
return mask
