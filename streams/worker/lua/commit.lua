-- Commit one tenant's part of a stream batch atomically: check and advance the tenant's source-offset fence,
-- then apply the window, counter and decision writes. All keys are the tenant's (one hash slot).
--
-- KEYS[1]: the tenant's worker meta hash (fences 'o:<partition>', standing decisions 's:<state key>').
-- KEYS[2..]: the keys the ops name by index.
-- ARGV[1]: fence field ('' = no fence check), ARGV[2]: the fence the worker expects ('' = none yet),
-- ARGV[3]: the new fence ('' = unchanged), then ops, each a code and its operands:
--   S ki value ttl_ms        SET key value PX ttl
--   H ki field value ttl_ms  HSET key field value (and PEXPIRE when ttl_ms is not '')
--   D ki                     DEL key
--   X ki field               HDEL key field
--   R ki bucket amount ttl   set_counter(key, bucket, amount, ttl): a guard counter bucket to the exact total
-- (set_counter.lua of the guard is prepended to this source).
-- Returns {'ok'} or {'fenced', current}: another worker advanced the fence; nothing was written.
local meta = KEYS[1]
if ARGV[1] ~= '' then
  local current = redis.call('HGET', meta, ARGV[1]) or ''
  if current ~= ARGV[2] then return {'fenced', current} end
  if ARGV[3] ~= '' then redis.call('HSET', meta, ARGV[1], ARGV[3]) end
end
local i = 4
local n = #ARGV
while i <= n do
  local op = ARGV[i]
  local key = KEYS[tonumber(ARGV[i + 1])]
  if op == 'S' then
    redis.call('SET', key, ARGV[i + 2], 'PX', ARGV[i + 3])
    i = i + 4
  elseif op == 'H' then
    redis.call('HSET', key, ARGV[i + 2], ARGV[i + 3])
    if ARGV[i + 4] ~= '' then redis.call('PEXPIRE', key, ARGV[i + 4]) end
    i = i + 5
  elseif op == 'D' then
    redis.call('DEL', key)
    i = i + 2
  elseif op == 'X' then
    redis.call('HDEL', key, ARGV[i + 2])
    i = i + 3
  elseif op == 'R' then
    set_counter(key, ARGV[i + 2], ARGV[i + 3], tonumber(ARGV[i + 4]))
    i = i + 5
  else
    return redis.error_reply('unknown op ' .. tostring(op))
  end
end
return {'ok'}
