-- renew: extend the lease of a job the caller still holds.
-- KEYS[1] jobs  KEYS[2] active
-- ARGV[1] id  ARGV[2] token  ARGV[3] lease ms
-- Returns {1, cancel requested (1|0), lease deadline ms} or {0, 0, 0} when the lease is lost.
local rec = load(KEYS[1], ARGV[1])
if not held(rec, ARGV[2]) then
  return {0, 0, 0}
end
local now = now_ms()
rec.lease_until = now + tonumber(ARGV[3])
redis.call('ZADD', KEYS[2], fmt(rec.lease_until), rec.id)
-- Not a state change: no rev bump, no event.
redis.call('HSET', KEYS[1], rec.id, cjson.encode(rec))
local cancel = 0
if rec.cancel_requested then
  cancel = 1
end
return {1, cancel, fmt(rec.lease_until)}
