-- heartbeat: record a daemon's heartbeat on the server's clock, and forget long-dead ones.
-- KEYS[1] workers (ZSET)  KEYS[2] worker:<id> (STRING)
-- ARGV[1] worker id  ARGV[2] ttl ms  ARGV[3] the daemon's JSON object, without `beat_at`
-- Returns the beat time in ms (the server's).
-- Expiry, beat time and trim all use TIME, so a daemon whose own clock is off is still
-- live for every reader, and cannot drop other daemons' entries from the index.
local now = now_ms()
local ttl = tonumber(ARGV[2])
-- `beat_at` (seconds, as older readers expect) is appended to the text rather than set
-- through cjson: a decode and re-encode would turn the daemon's empty lists into objects.
local body = string.sub(ARGV[3], 1, -2) .. ',"beat_at":' .. string.format('%.3f', now / 1000) .. '}'
redis.call('SET', KEYS[2], body, 'PX', ttl)
redis.call('ZADD', KEYS[1], fmt(now + ttl), ARGV[1])
-- Entries that expired over an hour ago go, so the index stays bounded.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', fmt(now - 3600000))
return now
