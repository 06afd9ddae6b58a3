-- reap: recover jobs whose holder's lease ran out, and enforce retention. Safe to run from
-- every daemon at once: each expired job is handled by exactly one call.
-- KEYS[1] jobs  KEYS[2] payloads  KEYS[3] active  KEYS[4] waiting  KEYS[5] failed
-- KEYS[6] cancelled  KEYS[7] completed  KEYS[8] seq  KEYS[9] wake  KEYS[10] events
-- KEYS[11] stats  KEYS[12] outbox
-- ARGV[1] stall limit  ARGV[2] keep completed ms  ARGV[3] keep failed ms
-- ARGV[4] events maxlen  ARGV[5] max jobs handled per call  ARGV[6] outbox cap
-- Returns {recovered ids..., '|', dead-lettered ids..., '|', cancelled ids..., '|', trimmed count}.
local now = now_ms()
local limit = tonumber(ARGV[5])
local recovered, dead, cancelled = {}, {}, {}
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', fmt(now), 'LIMIT', 0, limit)
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[3], id)
  local rec = load_checked(KEYS[1], id)
  if rec == false then  -- no script can read it: set aside, as claim does
    redis.call('ZADD', KEYS[5], fmt(now), id)
  elseif rec and rec.state == 'active' then
    rec.token = nil
    rec.lease_until = nil
    rec.stalls = (rec.stalls or 0) + 1
    redis.call('HINCRBY', KEYS[11], 'stalled', 1)
    if rec.cancel_requested then
      rec.state = 'cancelled'
      rec.finished_at = now
      redis.call('ZADD', KEYS[6], fmt(now), id)
      table.insert(cancelled, id)
    elseif rec.stalls > tonumber(ARGV[1]) then
      rec.state = 'failed'
      rec.finished_at = now
      rec.error = 'job stalled ' .. rec.stalls .. ' times (its supervisor stopped renewing the lease)'
      redis.call('ZADD', KEYS[5], fmt(now), id)
      table.insert(dead, id)
    else
      -- A stall is not the job's fault: it does not spend an attempt, it counts
      -- separately. A job that ends here keeps the attempt that ran and its worker.
      rec.state = 'waiting'
      rec.ready_at = now
      rec.worker = nil
      rec.attempt = math.max(0, rec.attempt - 1)
      push_front(KEYS[4], KEYS[8], rec)
      wake(KEYS[9])
      table.insert(recovered, id)
    end
    save(KEYS[1], rec)
    emit(KEYS[10], ARGV[4], 'stalled', rec)
    if rec.state == 'failed' then  -- the final state too, as fail.lua and cancel_ack tell it
      emit(KEYS[10], ARGV[4], 'failed', rec, {error = utf8_prefix(rec.error, 200)})
    elseif rec.state == 'cancelled' then
      emit(KEYS[10], ARGV[4], 'cancelled', rec)
    end
    if rec.state == 'waiting' then
      status_out(KEYS[12], ARGV[6], rec, 's')
    else
      status_out(KEYS[12], ARGV[6], rec, 'f')
    end
  end
end
local trimmed = trim(KEYS[7], KEYS[1], KEYS[2], now - tonumber(ARGV[2]), limit)
trimmed = trimmed + trim(KEYS[5], KEYS[1], KEYS[2], now - tonumber(ARGV[3]), limit)
trimmed = trimmed + trim(KEYS[6], KEYS[1], KEYS[2], now - tonumber(ARGV[3]), limit)
local out = {}
for _, id in ipairs(recovered) do table.insert(out, id) end
table.insert(out, '|')
for _, id in ipairs(dead) do table.insert(out, id) end
table.insert(out, '|')
for _, id in ipairs(cancelled) do table.insert(out, id) end
table.insert(out, '|')
table.insert(out, trimmed)
return out
