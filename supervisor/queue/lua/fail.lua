-- fail: a held job's attempt failed; retry after a backoff or dead-letter it. A job whose
-- cancel was requested is not retried: it ends cancelled now (it fails if it cannot retry).
-- KEYS[1] jobs  KEYS[2] payloads  KEYS[3] active  KEYS[4] delayed  KEYS[5] failed
-- KEYS[6] wake  KEYS[7] events  KEYS[8] outbox  KEYS[9] cancelled
-- ARGV[1] id  ARGV[2] token  ARGV[3] error text  ARGV[4] retryable (1|0)  ARGV[5] backoff ms
-- ARGV[6] keep failed ms  ARGV[7] events maxlen  ARGV[8] retention trim limit
-- ARGV[9] outbox cap  ARGV[10] peak RSS bytes ('' if unknown)
-- Returns {'retry', rev, due ms} | {'failed', rev, 0} | {'cancelled', rev, 0} | {'lost', 0, 0}.
local rec = load(KEYS[1], ARGV[1])
if not held(rec, ARGV[2]) then
  return {'lost', 0, 0}
end
local now = now_ms()
rec.token = nil
rec.lease_until = nil
rec.error = ARGV[3]
rec.peak_rss = tonumber(ARGV[10])
redis.call('ZREM', KEYS[3], rec.id)
if ARGV[4] == '1' and rec.attempt < rec.max_attempts and rec.cancel_requested then
  end_cancelled(rec, now, KEYS[9], KEYS[1], KEYS[7], ARGV[7], KEYS[8], ARGV[9])
  return {'cancelled', rec.rev, 0}
end
if ARGV[4] == '1' and rec.attempt < rec.max_attempts then
  rec.state = 'delayed'
  rec.due_at = now + tonumber(ARGV[5])
  redis.call('ZADD', KEYS[4], fmt(rec.due_at), rec.id)
  save(KEYS[1], rec)
  emit(KEYS[7], ARGV[7], 'retried', rec, {due_at = fmt(rec.due_at), error = utf8_prefix(ARGV[3], 200)})
  status_out(KEYS[8], ARGV[9], rec, 's')
  -- Wake a claimer so it blocks only until this retry is due.
  wake(KEYS[6])
  return {'retry', rec.rev, fmt(rec.due_at)}
end
rec.state = 'failed'
rec.finished_at = now
redis.call('ZADD', KEYS[5], fmt(now), rec.id)
save(KEYS[1], rec)
emit(KEYS[7], ARGV[7], 'failed', rec, {error = utf8_prefix(ARGV[3], 200)})
status_out(KEYS[8], ARGV[9], rec, 'f')
trim(KEYS[5], KEYS[1], KEYS[2], now - tonumber(ARGV[6]), tonumber(ARGV[8]))
return {'failed', rec.rev, 0}
