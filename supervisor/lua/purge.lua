-- purge: delete up to N jobs of one non-active state and their data.
-- KEYS[1] jobs  KEYS[2] payloads  KEYS[3] the state's ZSET
-- ARGV[1] max jobs per call
-- Returns the number of jobs deleted (call again until 0).
local ids = redis.call('ZRANGE', KEYS[3], 0, tonumber(ARGV[1]) - 1)
for _, id in ipairs(ids) do
  redis.call('HDEL', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
end
return #ids
