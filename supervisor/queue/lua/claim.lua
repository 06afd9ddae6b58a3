-- claim: promote due delayed jobs, then take the first waiting job under a new lease.
-- KEYS[1] jobs  KEYS[2] payloads  KEYS[3] waiting  KEYS[4] delayed  KEYS[5] active
-- KEYS[6] seq   KEYS[7] wake      KEYS[8] events    KEYS[9] cancelled  KEYS[10] outbox
-- KEYS[11] claim marker of this token  KEYS[12] failed
-- ARGV[1] worker id  ARGV[2] lease token  ARGV[3] lease ms  ARGV[4] events maxlen
-- ARGV[5] max delayed jobs promoted per call  ARGV[6] outbox cap
-- ARGV[7] max attempts for jobs that named none (the claiming daemon's setting)
-- Returns {id, payload JSON, record JSON} or {'', ms until the next delayed job is due | -1}.
-- A claim sent again with a token that already took a job (its reply was lost) returns that
-- job, leased anew from now, while this token still holds it, else {'', 0}; it never takes
-- a second one. A record no script can read is set aside in the failed set (retention
-- removes it in time): it never runs and never stops the claims behind it.
local now = now_ms()
local taken = redis.call('GET', KEYS[11])
if taken then
  local rec = load(KEYS[1], taken)
  if rec and rec.state == 'active' and rec.token == ARGV[2] then
    rec.lease_until = now + tonumber(ARGV[3])
    redis.call('ZADD', KEYS[5], fmt(rec.lease_until), taken)
    redis.call('HSET', KEYS[1], taken, cjson.encode(rec))  -- as renew: no new revision
    return {taken, redis.call('HGET', KEYS[2], taken) or '{}', cjson.encode(rec)}
  end
  return {'', 0}
end
local due = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', fmt(now), 'LIMIT', 0, tonumber(ARGV[5]))
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[4], id)
  local rec = load_checked(KEYS[1], id)
  if rec == false then
    redis.call('ZADD', KEYS[12], fmt(now), id)
  elseif rec and rec.state == 'delayed' then
    rec.state = 'waiting'
    rec.due_at = nil
    push_back(KEYS[3], KEYS[6], rec)
    save(KEYS[1], rec)
    status_out(KEYS[10], ARGV[6], rec, 's')
  end
end

while true do
  local popped = redis.call('ZPOPMIN', KEYS[3])
  if #popped == 0 then
    -- Nothing ready: stale wake tokens would only cause empty wake-ups.
    redis.call('DEL', KEYS[7])
    local nxt = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
    if #nxt == 0 then
      return {'', -1}
    end
    return {'', math.max(0, tonumber(nxt[2]) - now)}
  end
  local id = popped[1]
  local rec = load_checked(KEYS[1], id)
  if rec == false then
    redis.call('ZADD', KEYS[12], fmt(now), id)
  elseif rec and rec.state == 'waiting' and rec.cancel_requested then
    -- Cancelled while active, then released or failed into a retry before the holder
    -- acknowledged: honour the cancel instead of starting the job again.
    rec.state = 'cancelled'
    rec.finished_at = now
    unrun(rec)
    redis.call('ZADD', KEYS[9], fmt(now), id)
    save(KEYS[1], rec)
    emit(KEYS[8], ARGV[4], 'cancelled', rec)
    status_out(KEYS[10], ARGV[6], rec, 'f')
  elseif rec and rec.state == 'waiting' then
    rec.state = 'active'
    rec.attempt = (rec.attempt or 0) + 1
    rec.token = ARGV[2]
    rec.worker = ARGV[1]
    rec.started_at = now
    rec.lease_until = now + tonumber(ARGV[3])
    rec.progress = 0
    rec.message = nil
    rec.peak_rss = nil
    if not rec.max_named then
      rec.max_attempts = tonumber(ARGV[7])
    end
    redis.call('ZADD', KEYS[5], fmt(rec.lease_until), id)
    save(KEYS[1], rec)
    emit(KEYS[8], ARGV[4], 'started', rec, {worker = ARGV[1]})
    status_out(KEYS[10], ARGV[6], rec, 's')
    redis.call('SET', KEYS[11], id, 'PX', math.min(tonumber(ARGV[3]), 120000))
    return {id, redis.call('HGET', KEYS[2], id) or '{}', cjson.encode(rec)}
  end
  -- A waiting entry without a waiting record is debris from a purge: skip it.
end
