-- sweep(key, state, now): rebuild a counter's state from its buckets and records (layout: docs/enforcement.md).
--
-- The state field '_<window_start>:<keep_until>:<limit>' holds spent + open - limit for that window (<= 0: room
-- left). Its name carries everything the state depends on, so a moved window, a changed limit or a new counter
-- simply finds no field, and the scripts come here. Of the state fields present (clocks differ between callers)
-- the newest window wins, the caller's own name on a tie. Buckets older than the window and state fields of
-- other windows are dropped; expired reservations become zero-amount 'z' records (kept a day, so a late settle
-- still charges what the call really cost). Also the migration path: the fields of the earlier layout ('_s',
-- '_w', '_o', '_n', '_x') are dropped, and its zero-amount 'r' records become 'z' records.
-- Returns the state field now in force, its value, and its limit.
local DAY = 86400000
local SLACK = 300000  -- a key's TTL is pushed this far past what it needs, so most sweeps never touch it

local function sweep(key, state, now)
  local all = redis.call('HGETALL', key)
  local chosen, w = state, tonumber(string.match(state, '^_(%d+):'))
  for i = 1, #all, 2 do
    local f = all[i]
    if string.byte(f, 1) == 95 then
      local fw = tonumber(string.match(f, '^_(%d+):%d+:%d+$'))
      if fw and fw > w then chosen, w = f, fw end
    end
  end
  local s, o = 0, 0
  local drop, put = {key}, {key}
  for i = 1, #all, 2 do
    local f = all[i]
    local c = string.byte(f, 1)
    if c == 114 then  -- 'r': a reservation
      local exp, amt = tonumber(string.match(f, '^r(%d+):')), tonumber(all[i + 1])
      if exp > now and amt > 0 then
        o = o + amt
      else
        drop[#drop + 1] = f
        if exp + DAY > now then put[#put + 1] = 'z' .. string.sub(f, 2); put[#put + 1] = '0' end
      end
    elseif c == 122 then  -- 'z': a record holding nothing
      if tonumber(string.match(f, '^z(%d+):')) + DAY <= now then drop[#drop + 1] = f end
    elseif c == 95 then  -- '_': the state, '_k', other windows' states, the earlier layout's fields
      if f ~= chosen and f ~= '_k' then drop[#drop + 1] = f end
    else  -- a counter bucket
      local start = tonumber(f)
      if start == nil or start < w then drop[#drop + 1] = f else s = s + tonumber(all[i + 1]) end
    end
  end
  local keep, limit = string.match(chosen, '^_%d+:(%d+):(%d+)$')
  keep, limit = tonumber(keep), tonumber(limit)
  local excess = s + o - limit
  if #drop > 1 then redis.call('HDEL', unpack(drop)) end
  put[#put + 1] = chosen; put[#put + 1] = excess
  put[#put + 1] = '_k'; put[#put + 1] = chosen
  redis.call('HSET', unpack(put))
  local left = redis.call('PTTL', key)
  if left == -1 or now + left < keep then redis.call('PEXPIRE', key, keep - now + SLACK) end
  return chosen, excess, limit
end
