-- release: give a held job back without spending an attempt: to the front of its band,
-- or, with a delay, to the delayed set until then (its tenant's jobs are paused).
-- KEYS[1] jobs  KEYS[2] active  KEYS[3] waiting  KEYS[4] seq  KEYS[5] wake  KEYS[6] events
-- KEYS[7] outbox  KEYS[8] delayed
-- ARGV[1] id  ARGV[2] token  ARGV[3] events maxlen  ARGV[4] outbox cap  ARGV[5] delay ms
-- Returns {1, rev} or {0, 0} when the lease is lost.
local rec = load(KEYS[1], ARGV[1])
if not held(rec, ARGV[2]) then
  return {0, 0}
end
local delay = tonumber(ARGV[5])
rec.attempt = math.max(0, rec.attempt - 1)
rec.token = nil
rec.lease_until = nil
rec.worker = nil
redis.call('ZREM', KEYS[2], rec.id)
if delay > 0 then
  rec.state = 'delayed'
  rec.due_at = now_ms() + delay
  redis.call('ZADD', KEYS[8], fmt(rec.due_at), rec.id)
  save(KEYS[1], rec)
  emit(KEYS[6], ARGV[3], 'released', rec, {due_at = fmt(rec.due_at)})
else
  rec.state = 'waiting'
  push_front(KEYS[3], KEYS[4], rec)
  save(KEYS[1], rec)
  emit(KEYS[6], ARGV[3], 'released', rec)
end
status_out(KEYS[7], ARGV[4], rec, 's')
-- A claimer wakes to take it now, or to recompute how long to block.
redis.call('LPUSH', KEYS[5], '1')
return {1, rec.rev}
