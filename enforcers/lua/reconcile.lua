-- Set one counter bucket to the worker's authoritative total (set_counter.lua, prepended to this source).
--
-- KEYS: the counter hash (layout: reserve.lua).  ARGV: bucket_start_ms, authoritative, ttl_ms.
set_counter(KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]))
return 1
