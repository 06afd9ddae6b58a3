-- release: give a held job back to the front of its band without spending an attempt. A
-- job whose cancel was requested is not given back: it ends cancelled now.
-- KEYS[1] jobs  KEYS[2] active  KEYS[3] waiting  KEYS[4] seq  KEYS[5] wake  KEYS[6] events
-- KEYS[7] outbox  KEYS[8] cancelled
-- ARGV[1] id  ARGV[2] token  ARGV[3] events maxlen  ARGV[4] outbox cap
-- Returns {'released', rev}, {'cancelled', rev}, or {'', 0} when the lease is lost.
local rec = load(KEYS[1], ARGV[1])
if not held(rec, ARGV[2]) then
  return {'', 0}
end
if rec.cancel_requested then
  -- Given back unspent, as below: it ends as a job cancelled while it waited, with no run.
  rec.attempt = math.max(0, rec.attempt - 1)
  rec.worker = nil
  unrun(rec)
  redis.call('ZREM', KEYS[2], rec.id)
  end_cancelled(rec, now_ms(), KEYS[8], KEYS[1], KEYS[6], ARGV[3], KEYS[7], ARGV[4])
  return {'cancelled', rec.rev}
end
rec.state = 'waiting'
rec.attempt = math.max(0, rec.attempt - 1)
rec.token = nil
rec.lease_until = nil
rec.worker = nil
rec.ready_at = now_ms()  -- ready again from now (for the oldest-waiting age)
redis.call('ZREM', KEYS[2], rec.id)
push_front(KEYS[3], KEYS[4], rec)
save(KEYS[1], rec)
emit(KEYS[6], ARGV[3], 'released', rec)
status_out(KEYS[7], ARGV[4], rec, 's')
wake(KEYS[5])
return {'released', rec.rev}
