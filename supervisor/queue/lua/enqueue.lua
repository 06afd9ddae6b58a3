-- enqueue: store one or more validated jobs; idempotent on job id.
-- KEYS[1] jobs      HASH id -> record JSON
-- KEYS[2] payloads  HASH id -> payload JSON
-- KEYS[3] waiting   ZSET id by band/sequence
-- KEYS[4] delayed   ZSET id by due ms
-- KEYS[5] seq       STRING counter
-- KEYS[6] wake      LIST wake tokens
-- KEYS[7] events    STREAM
-- KEYS[8] outbox    STREAM status rows for the projectors
-- ARGV[1] events maxlen
-- ARGV[2] wake list cap
-- ARGV[3] outbox cap
-- ARGV[4] number of jobs N, then N groups of 7:
--         id, payload JSON, tenant, priority, max_attempts, max_attempts named (1|0), delay ms
-- Returns a flat array: id, created (1|0), state, tenant ... per job; or
-- {'tenant_conflict', id} when an id exists for another tenant (then nothing is stored).
local now = now_ms()
local out = {}
local n = tonumber(ARGV[4])
local other = conflicting_tenant(KEYS[1], ARGV, 5, 7, n)
if other then
  return {'tenant_conflict', other}
end
local woke = false
for i = 0, n - 1 do
  local base = 5 + i * 7
  local id = ARGV[base]
  local existing = load(KEYS[1], id)
  if existing then
    table.insert(out, id)
    table.insert(out, 0)
    table.insert(out, existing.state)
    table.insert(out, existing.tenant or '')
  else
    local delay = tonumber(ARGV[base + 6])
    local rec = {id = id, tenant = ARGV[base + 2], priority = ARGV[base + 3],
                 max_attempts = tonumber(ARGV[base + 4]), attempt = 0, stalls = 0,
                 enqueued_at = now, progress = 0}
    if ARGV[base + 5] == '1' then
      rec.max_named = true
    end
    if delay > 0 then
      rec.state = 'delayed'
      rec.due_at = now + delay
      redis.call('ZADD', KEYS[4], fmt(rec.due_at), id)
    else
      rec.state = 'waiting'
      push_back(KEYS[3], KEYS[5], rec)
    end
    redis.call('HSET', KEYS[2], id, ARGV[base + 1])
    save(KEYS[1], rec)
    emit(KEYS[7], ARGV[1], 'enqueued', rec)
    status_out(KEYS[8], ARGV[3], rec, 's')
    -- A delayed job also wakes a claimer so it recomputes how long to block.
    redis.call('LPUSH', KEYS[6], '1')
    woke = true
    table.insert(out, id)
    table.insert(out, 1)
    table.insert(out, rec.state)
    table.insert(out, rec.tenant)
  end
end
if woke then
  redis.call('LTRIM', KEYS[6], 0, tonumber(ARGV[2]) - 1)
end
return out
