-- complete: a held job succeeded.
-- KEYS[1] jobs  KEYS[2] payloads  KEYS[3] active  KEYS[4] completed  KEYS[5] events
-- KEYS[6] outbox  KEYS[7] completed tenants
-- ARGV[1] id  ARGV[2] token  ARGV[3] result JSON ('' for none)  ARGV[4] keep completed ms
-- ARGV[5] events maxlen  ARGV[6] retention trim limit  ARGV[7] outbox cap
-- ARGV[8] the child's last progress message ('' for none)  ARGV[9] peak RSS bytes ('' if unknown)
-- ARGV[10] completed tenants kept (the newest)
-- Returns {1, rev} or {0, 0} when the lease is lost.
local rec = load(KEYS[1], ARGV[1])
if not held(rec, ARGV[2]) then
  return {0, 0}
end
local now = now_ms()
rec.state = 'completed'
rec.progress = 100
rec.finished_at = now
rec.token = nil
rec.lease_until = nil
rec.error = nil
if ARGV[3] ~= '' then
  rec.result = ARGV[3]
end
if ARGV[8] ~= '' then
  rec.message = ARGV[8]
end
rec.peak_rss = tonumber(ARGV[9])
redis.call('ZREM', KEYS[3], rec.id)
redis.call('ZADD', KEYS[4], fmt(now), rec.id)
save(KEYS[1], rec)
emit(KEYS[5], ARGV[5], 'completed', rec)
status_out(KEYS[6], ARGV[7], rec, 'f')
trim(KEYS[4], KEYS[1], KEYS[2], now - tonumber(ARGV[4]), tonumber(ARGV[6]))
-- Best effort (pcall): what the start-failure gate remembers never fails a completion.
if rec.tenant then
  redis.pcall('ZADD', KEYS[7], fmt(now), rec.tenant)
  redis.pcall('ZREMRANGEBYRANK', KEYS[7], 0, -tonumber(ARGV[10]) - 1)
end
return {1, rec.rev}
