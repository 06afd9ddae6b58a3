-- cancel: waiting/delayed jobs become cancelled at once; an active job is flagged and its
-- holder told on the cancel channel (it also learns at its next renewal).
-- KEYS[1] jobs  KEYS[2] waiting  KEYS[3] delayed  KEYS[4] active  KEYS[5] cancelled
-- KEYS[6] events  KEYS[7] outbox
-- ARGV[1] id  ARGV[2] cancel channel  ARGV[3] events maxlen  ARGV[4] outbox cap
-- ARGV[5] tenant acting ('' for all): another tenant's job is 'missing'
-- Returns {'cancelled'|'requested'|<final state>|'missing', rev}.
local rec = load_checked(KEYS[1], ARGV[1])  -- one no script can read: missing
if not rec or (ARGV[5] ~= '' and rec.tenant ~= ARGV[5]) then
  return {'missing', 0}
end
if rec.state == 'waiting' or rec.state == 'delayed' then
  redis.call('ZREM', KEYS[2], rec.id)
  redis.call('ZREM', KEYS[3], rec.id)
  rec.state = 'cancelled'
  rec.finished_at = now_ms()
  rec.due_at = nil
  unrun(rec)
  redis.call('ZADD', KEYS[5], fmt(rec.finished_at), rec.id)
  save(KEYS[1], rec)
  emit(KEYS[6], ARGV[3], 'cancelled', rec)
  status_out(KEYS[7], ARGV[4], rec, 'f')
  return {'cancelled', rec.rev}
end
if rec.state == 'active' then
  rec.cancel_requested = true
  save(KEYS[1], rec)
  emit(KEYS[6], ARGV[3], 'cancel_requested', rec)
  -- The row does not show the request, but the record's revision moved: keep them equal.
  status_out(KEYS[7], ARGV[4], rec, 's')
  redis.call('PUBLISH', ARGV[2], rec.id)
  return {'requested', rec.rev}
end
return {rec.state, rec.rev}
