-- Atomically: read the stream's decisions for the call's scope, then reserve the call's worst-case amount against
-- every live budget counter that matches it - all or nothing across budgets.
--
-- One hash per budget member holds everything (docs/enforcement.md): counter buckets (field = bucket start ms),
-- open reservations (field 'r<expiry_ms>:<id>' = amount) and the running state '_s' (settled spend in the window
-- starting at '_w'), '_o' (open reservations' total), '_n' (a lower bound of the earliest open expiry, 0 = none)
-- and '_x' (when the key expires at the earliest). The common path is one HMGET and one HSET per budget, with
-- numbers handed to Redis as they are: string formatting and parsing cost more in Redis's Lua than the commands.
-- The whole hash is walked only when the window has moved past a bucket or an open reservation may have expired.
--
-- KEYS: nd decision keys, then one counter hash per budget.
-- ARGV: now_ms, reservation field, expiry_ms, worst case in nano-USD, worst case in tokens, nb, nd, then per
--       budget: unit (1 nano-USD, 2 tokens), limit, mode (1 block, 2 degrade), window_start_ms (counter buckets
--       that start earlier are outside the window and pruned). The call's values come first, so the client sends
--       everything after them as one pre-encoded block.
-- Returns {'decisions', json...} | {'exhausted', budget_index, spent, open, limit} | {'ok', 'degraded,indexes'}.
local now = tonumber(ARGV[1])
local field = ARGV[2]
local expiry = tonumber(ARGV[3])
local nb = tonumber(ARGV[6])
local nd = tonumber(ARGV[7])
local DAY = 86400000
local SLACK = 300000  -- a key's TTL is pushed this far past what it needs, so most calls never touch it

if nd > 0 then
  local found = {'decisions'}
  for _, d in ipairs(redis.call('MGET', unpack(KEYS, 1, nd))) do
    if d then found[#found + 1] = d end
  end
  if #found > 1 then return found end
end

-- Walk the whole hash once: the window's spent total from its buckets (older buckets dropped), the open total
-- and earliest expiry from the reservations. An expired reservation stays as a zero-amount tombstone for a day,
-- so a late settle still finds it and charges what the call really cost.
local function rescan(key, window_start)
  local all = redis.call('HGETALL', key)
  if #all == 0 then return 0, 0, 0 end  -- a fresh counter: nothing to save
  local s, o, n = 0, 0, 0
  local drop = {}
  local put = {key}
  for i = 1, #all, 2 do
    local f = all[i]
    local c = string.byte(f, 1)
    if c == 114 then  -- 'r': a reservation
      local exp, amt = tonumber(string.match(f, '^r(%d+):')), tonumber(all[i + 1])
      if exp > now then
        o = o + amt
        if amt > 0 and (n == 0 or exp < n) then n = exp end
      elseif amt > 0 then
        put[#put + 1] = f
        put[#put + 1] = 0
      elseif exp + DAY <= now then
        drop[#drop + 1] = f
      end
    elseif c ~= 95 then  -- not '_': a counter bucket
      local start = tonumber(f)
      if start == nil or start < window_start then drop[#drop + 1] = f else s = s + tonumber(all[i + 1]) end
    end
  end
  if #drop > 0 then redis.call('HDEL', key, unpack(drop)) end
  -- Saved now, not only with a grant: a refused call must not leave the next one the same walk.
  put[#put + 1] = '_s'; put[#put + 1] = s
  put[#put + 1] = '_w'; put[#put + 1] = window_start
  put[#put + 1] = '_o'; put[#put + 1] = o
  put[#put + 1] = '_n'; put[#put + 1] = n
  redis.call('HSET', unpack(put))
  return s, o, n
end

local opens, nexts, xs, amounts = {}, {}, {}, {}
local degraded = {}
local a = 8
for b = 1, nb do
  local key = KEYS[nd + b]
  local st = redis.call('HMGET', key, '_s', '_w', '_o', '_n', '_x')
  local s, w, o, n = tonumber(st[1]) or 0, tonumber(st[2]) or 0, tonumber(st[3]) or 0, tonumber(st[4]) or 0
  local window_start = tonumber(ARGV[a + 3])
  -- A caller whose clock is behind (window_start < w) keeps the newer window rather than widening it.
  if not st[2] or window_start > w or (n > 0 and n <= now) then
    if window_start > w then w = window_start end
    s, o, n = rescan(key, w)
  end
  local amount = ARGV[a] == '1' and ARGV[4] or ARGV[5]
  if s + o + tonumber(amount) > tonumber(ARGV[a + 1]) then
    if ARGV[a + 2] == '1' then
      return {'exhausted', b, s, o, ARGV[a + 1]}
    end
    degraded[#degraded + 1] = b
    amount = '0'  -- a degraded budget holds nothing, but keeps a record so the settle charges it
  end
  opens[b], nexts[b], xs[b], amounts[b] = o, n, tonumber(st[5]) or 0, amount
  a = a + 4
end

local need = expiry + 60000
for b = 1, nb do
  local key, amount, n, x = KEYS[nd + b], amounts[b], nexts[b], xs[b]
  local o = opens[b] + tonumber(amount)
  local later = n ~= 0 and n <= expiry  -- the earliest expiry stays where it is
  if x >= need and (later or amount == '0') then
    redis.call('HSET', key, field, amount, '_o', o)
  else
    local put = {key, field, amount, '_o', o}
    if not later and amount ~= '0' then put[6] = '_n'; put[7] = expiry end
    if x < need then
      redis.call('PEXPIRE', key, need - now + SLACK)
      put[#put + 1] = '_x'; put[#put + 1] = need + SLACK
    end
    redis.call('HSET', unpack(put))
  end
end
return {'ok', table.concat(degraded, ',')}
