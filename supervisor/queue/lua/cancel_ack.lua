-- cancel_ack: the holder stopped a job whose cancel was requested; mark it cancelled.
-- KEYS[1] jobs  KEYS[2] active  KEYS[3] cancelled  KEYS[4] events  KEYS[5] outbox
-- ARGV[1] id  ARGV[2] token  ARGV[3] events maxlen  ARGV[4] outbox cap
-- ARGV[5] peak RSS bytes ('' if unknown)
-- Returns {1, rev} or {0, 0} when the lease is lost.
local rec = load(KEYS[1], ARGV[1])
if not held(rec, ARGV[2]) then
  return {0, 0}
end
local now = now_ms()
rec.state = 'cancelled'
rec.finished_at = now
rec.token = nil
rec.lease_until = nil
rec.peak_rss = tonumber(ARGV[5])
redis.call('ZREM', KEYS[2], rec.id)
redis.call('ZADD', KEYS[3], fmt(now), rec.id)
save(KEYS[1], rec)
emit(KEYS[4], ARGV[3], 'cancelled', rec)
status_out(KEYS[5], ARGV[4], rec, 'f')
return {1, rec.rev}
