-- purge: delete up to N jobs of one non-active state and their data.
-- A purged job that had not finished (waiting or delayed) ends as cancelled in the status
-- table; a finished job's row keeps its final state.
-- KEYS[1] jobs  KEYS[2] payloads  KEYS[3] the state's ZSET  KEYS[4] outbox
-- ARGV[1] max jobs per call  ARGV[2] outbox cap
-- Returns the number of jobs deleted (call again until 0).
local ids = redis.call('ZRANGE', KEYS[3], 0, tonumber(ARGV[1]) - 1)
local now = nil
for _, id in ipairs(ids) do
  local rec = load_checked(KEYS[1], id)  -- one no script can read just goes
  if rec and (rec.state == 'waiting' or rec.state == 'delayed') then
    now = now or now_ms()
    rec.state = 'cancelled'
    rec.finished_at = now
    rec.due_at = nil
    unrun(rec)
    rec.error = 'purged by an operator before it ran'
    next_rev(rec)
    status_out(KEYS[4], ARGV[2], rec, 'f')
  end
  redis.call('HDEL', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
end
return #ids
