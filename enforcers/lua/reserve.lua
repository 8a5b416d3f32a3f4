-- Atomically: read the stream's decisions for the call's scope, then reserve the call's worst-case amount against
-- every live budget counter that matches it - all or nothing across budgets.
--
-- KEYS: nd decision keys, then per budget: reservations zset, reservation amounts hash, counter hash.
-- ARGV: now_ms, reservation_id, expiry_ms, nb, nd, then per budget: amount, limit, mode (1 block, 2 degrade),
--       window_start_ms (counter buckets that start earlier are outside the window and pruned).
-- Returns {'decisions', json...} | {'exhausted', budget_index, spent, open, limit} | {'ok', 'degraded,indexes'}.
local now = tonumber(ARGV[1])
local rid = ARGV[2]
local expiry = tonumber(ARGV[3])
local nb = tonumber(ARGV[4])
local nd = tonumber(ARGV[5])

if nd > 0 then
  local found = {'decisions'}
  for _, d in ipairs(redis.call('MGET', unpack(KEYS, 1, nd))) do
    if d then found[#found + 1] = d end
  end
  if #found > 1 then return found end
end

local k = nd + 1
local a = 6
local grants = {}
local degraded = {}
for b = 1, nb do
  local zkey, hkey, ckey = KEYS[k], KEYS[k + 1], KEYS[k + 2]
  local amount, limit = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local mode, window_start = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  -- Reservations of crashed callers stop counting once they expire. The hash keeps a running total in its
  -- '_total' field, so the cost of a call grows with the expired reservations it purges, not the open ones.
  local expired = redis.call('ZRANGEBYSCORE', zkey, '-inf', now)
  if #expired > 0 then
    local freed = 0
    for _, v in ipairs(redis.call('HMGET', hkey, unpack(expired))) do
      if v then freed = freed + tonumber(v) end
    end
    redis.call('HDEL', hkey, unpack(expired))
    redis.call('ZREMRANGEBYSCORE', zkey, '-inf', now)
    if freed > 0 then redis.call('HINCRBY', hkey, '_total', -freed) end
  end
  local open = tonumber(redis.call('HGET', hkey, '_total') or '0')
  local spent = 0
  local buckets = redis.call('HGETALL', ckey)
  for i = 1, #buckets, 2 do
    if tonumber(buckets[i]) < window_start then
      redis.call('HDEL', ckey, buckets[i])
    else
      spent = spent + tonumber(buckets[i + 1])
    end
  end
  if spent + open + amount > limit then
    if mode == 1 then
      return {'exhausted', b, string.format('%d', spent), string.format('%d', open), ARGV[a + 1]}
    end
    degraded[#degraded + 1] = b
  else
    grants[#grants + 1] = {zkey, hkey, ARGV[a], string.format('%d', open + amount)}
  end
  k = k + 3
  a = a + 4
end

local keep = expiry - now + 60000
for _, g in ipairs(grants) do
  redis.call('ZADD', g[1], expiry, rid)
  redis.call('HSET', g[2], rid, g[3], '_total', g[4])  -- open + amount, read above in this same script
  redis.call('PEXPIRE', g[1], keep)
  redis.call('PEXPIRE', g[2], keep)
end
return {'ok', table.concat(degraded, ',')}
