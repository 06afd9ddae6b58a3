-- retry: put a failed or cancelled job back in the queue with fresh attempts; of a job
-- waiting with a cancel still pending (its holder gave it back before acknowledging),
-- take the cancel back, so that it runs.
-- KEYS[1] jobs  KEYS[2] failed  KEYS[3] cancelled  KEYS[4] waiting  KEYS[5] seq
-- KEYS[6] wake  KEYS[7] events  KEYS[8] outbox
-- ARGV[1] id  ARGV[2] events maxlen  ARGV[3] outbox cap
-- ARGV[4] tenant acting ('' for all): another tenant's job is 'missing'
-- Returns {'requeued', rev} or {<current state>|'missing', 0}.
local rec = load_checked(KEYS[1], ARGV[1])  -- one no script can read: missing
if not rec or (ARGV[4] ~= '' and rec.tenant ~= ARGV[4]) then
  return {'missing', 0}
end
if rec.cancel_requested and (rec.state == 'waiting' or rec.state == 'delayed') then
  rec.cancel_requested = nil
  save(KEYS[1], rec)
  emit(KEYS[7], ARGV[2], 'enqueued', rec, {retry = 1})
  status_out(KEYS[8], ARGV[3], rec, 's')
  wake(KEYS[6])
  return {'requeued', rec.rev}
end
if rec.state ~= 'failed' and rec.state ~= 'cancelled' then
  return {rec.state, 0}
end
redis.call('ZREM', KEYS[2], rec.id)
redis.call('ZREM', KEYS[3], rec.id)
rec.state = 'waiting'
-- A retry is a new run: the status table orders runs by their enqueue time.
-- Never at or before the previous run, even if the server clock stepped back.
rec.enqueued_at = math.max(now_ms(), (rec.enqueued_at or 0) + 1)
rec.attempt = 0
rec.stalls = 0
rec.error = nil
rec.result = nil
rec.finished_at = nil
rec.cancel_requested = nil
rec.progress = 0
rec.message = nil
rec.peak_rss = nil
rec.worker = nil
rec.started_at = nil
push_back(KEYS[4], KEYS[5], rec)
save(KEYS[1], rec)
emit(KEYS[7], ARGV[2], 'enqueued', rec, {retry = 1})
status_out(KEYS[8], ARGV[3], rec, 's')
wake(KEYS[6])
return {'requeued', rec.rev}
