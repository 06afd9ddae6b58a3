-- Shared helpers, prepended by the loader (supervisor/queue/scripts.py) to every script below.
-- Job records are JSON objects in the `jobs` hash (field = job id); payloads are opaque
-- JSON strings in the `payloads` hash. Every write bumps `rev`, the job's monotonic
-- revision: the status table orders writes by it (see next_rev).
-- Times are milliseconds from the Redis server's own clock (TIME), so daemons with skewed
-- clocks still agree on lease deadlines.

local BAND = 1125899906842624 -- 2^50: priority band width in the waiting ZSET score

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function fmt(n)
  return string.format('%.0f', n)
end

local function load(jobs, id)
  local raw = redis.call('HGET', jobs, id)
  if not raw then
    return nil
  end
  return cjson.decode(raw)
end

-- The record stored as `raw` for job `id`, or false when no script can read it
-- (corruption, a record of another version): not JSON, or not the shape every script
-- relies on. Counters and stamps (milliseconds of TIME) are whole, finite numbers.
local COUNTERS = {'attempt', 'stalls', 'rev', 'max_attempts', 'enqueued_at', 'started_at',
                  'finished_at'}
local function decode_checked(raw, id)
  local ok, rec = pcall(cjson.decode, raw)
  if not ok or type(rec) ~= 'table' or rec.id ~= id or type(rec.state) ~= 'string' then
    return false
  end
  for _, k in ipairs(COUNTERS) do
    local v = rec[k]
    if v ~= nil and (type(v) ~= 'number' or v ~= math.floor(v) or v - v ~= 0) then
      return false  -- v - v is NaN for an infinity and for NaN itself
    end
  end
  -- Every record the scripts write has these, and scripts count with them.
  if rec.attempt == nil or rec.max_attempts == nil then
    return false
  end
  return rec
end

-- The record, nil when there is none, or false when no script can read it.
local function load_checked(jobs, id)
  local raw = redis.call('HGET', jobs, id)
  if not raw then
    return nil
  end
  return decode_checked(raw, id)
end

-- A revision above the record's and, once the clock is past it, the server's time in ms:
-- so when Redis loses its last writes (a restart from an AOF a second behind, an
-- asynchronous failover), the revisions it writes next are still above those of the
-- writes it lost, whose rows the status table may already hold.
local function next_rev(rec)
  rec.rev = math.max((rec.rev or 0) + 1, now_ms())
end

local function save(jobs, rec)
  next_rev(rec)
  redis.call('HSET', jobs, rec.id, cjson.encode(rec))
end

-- Wake a blocked claimer; the list keeps at most WAKE_CAP tokens (the cap JobQueue gives
-- enqueue too), however many pushes no claimer takes.
local WAKE_CAP = 10000
local function wake(list)
  redis.call('LPUSH', list, '1')
  redis.call('LTRIM', list, 0, WAKE_CAP - 1)
end

local function held(rec, token)
  return rec ~= nil and rec.state == 'active' and rec.token == token
end

local function band_of(rec)
  if rec.priority == 'high' then
    return 0
  end
  return 1
end

-- Back of the job's priority band (FIFO by sequence).
local function push_back(waiting, seq, rec)
  local n = redis.call('INCR', seq)
  redis.call('ZADD', waiting, fmt(band_of(rec) * BAND + n), rec.id)
end

-- Front of the job's priority band (used when a job goes back without fault of its own).
local function push_front(waiting, seq, rec)
  local n = redis.call('INCR', seq)
  redis.call('ZADD', waiting, fmt(band_of(rec) * BAND - n), rec.id)
end

local function emit(stream, maxlen, kind, rec, extra)
  local fields = {'type', kind, 'job', rec.id, 'tenant', rec.tenant or '',
                  'attempt', tostring(rec.attempt or 0), 'state', rec.state,
                  'rev', tostring(rec.rev or 0)}
  if extra then
    for k, v in pairs(extra) do
      table.insert(fields, k)
      table.insert(fields, tostring(v))
    end
  end
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', unpack(fields))
end

-- Drop finished jobs older than `cutoff` from `set` and their data (bounded work per call).
local function trim(set, jobs, payloads, cutoff, limit)
  local ids = redis.call('ZRANGEBYSCORE', set, '-inf', fmt(cutoff), 'LIMIT', 0, limit)
  for _, id in ipairs(ids) do
    redis.call('HDEL', jobs, id)
    redis.call('HDEL', payloads, id)
    redis.call('ZREM', set, id)
  end
  return #ids
end

-- A result larger than this is not carried in status rows (the job record keeps it): rows
-- stay small enough to batch, and a store never chokes on one job's output.
local STATUS_RESULT_MAX = 65536

-- The job's status row as it now stands, as stream fields (see supervisor/status/outbox.py).
-- `kind` is 'p' (a progress tick), 's' (any other state change) or 'f' (a final state).
local function status_fields(rec, kind)
  local fields = {'job', rec.id, 'kind', kind, 'tenant', rec.tenant or '', 'state', rec.state,
                  'rev', tostring(rec.rev or 0), 'run', fmt(rec.enqueued_at or 0),
                  'attempt', tostring(rec.attempt or 0),
                  'max', tostring(rec.max_attempts or 0),
                  'progress', tostring(rec.progress or 0)}
  local result = rec.result
  if type(result) == 'string' and #result > STATUS_RESULT_MAX then
    result = cjson.encode({result_omitted = 'larger than 64 KiB', bytes = #result})
  end
  local optional = {msg = rec.message, error = rec.error, result = result,
                    worker = rec.worker, started = rec.started_at,
                    finished = rec.finished_at, rss = rec.peak_rss}
  for k, v in pairs(optional) do
    if v ~= nil and v ~= cjson.null then
      table.insert(fields, k)
      if type(v) == 'number' then
        table.insert(fields, fmt(v))
      else
        table.insert(fields, tostring(v))
      end
    end
  end
  return fields
end

-- A job that ends while waiting (cancelled, purged): no attempt ended it, so it keeps no
-- start or peak memory of an earlier attempt (its row would show them as its run's).
local function unrun(rec)
  rec.started_at = nil
  rec.peak_rss = nil
end

local function final_kind(rec)
  if rec.state == 'completed' or rec.state == 'failed' or rec.state == 'cancelled' then
    return 'f'
  end
  return 's'
end

-- Append the job's status row to the status outbox stream, which the projectors write to
-- `ingestion_jobs`. The outbox is bounded by `cap` entries: at the cap progress ticks are
-- no longer recorded, at twice the cap no non-final change either; a final state is
-- always recorded. What is skipped is still in the job record, and the reconciler re-sends
-- it. A cap of 0 means no bound.
local function status_out(outbox, cap, rec, kind)
  cap = tonumber(cap) or 0
  if cap > 0 and kind ~= 'f' then
    local n = redis.call('XLEN', outbox)
    if n >= cap * 2 or (kind == 'p' and n >= cap) then
      return
    end
  end
  redis.call('XADD', outbox, '*', unpack(status_fields(rec, kind)))
end

-- A held job whose cancel was requested, given back or failed into a retry by its holder:
-- it ends cancelled now rather than waiting in the queue for a claim to cancel it.
local function end_cancelled(rec, now, cancelled, jobs, events, maxlen, outbox, cap)
  rec.state = 'cancelled'
  rec.finished_at = now
  rec.due_at = nil
  rec.token = nil
  rec.lease_until = nil
  redis.call('ZADD', cancelled, fmt(now), rec.id)
  save(jobs, rec)
  emit(events, maxlen, 'cancelled', rec)
  status_out(outbox, cap, rec, 'f')
end

-- The first job id of an enqueue batch that exists for another tenant, else nil. The batch
-- is ARGV groups of `width` from `base`: id first, tenant third.
local function conflicting_tenant(jobs, argv, base, width, n)
  for i = 0, n - 1 do
    local at = base + i * width
    local existing = load_checked(jobs, argv[at])
    -- A record no script can read is nobody's to reuse: taken, like another tenant's.
    if existing == false or (existing and existing.tenant ~= argv[at + 2]) then
      return argv[at]
    end
  end
  return nil
end

-- The longest prefix of `s` of at most `n` bytes that does not end inside a UTF-8
-- character, so a cut text stays valid UTF-8.
local function utf8_prefix(s, n)
  if #s <= n then
    return s
  end
  local cut = n
  -- Step back over continuation bytes (10xxxxxx) to the lead byte of the last character.
  while cut > 0 and bit.band(string.byte(s, cut + 1), 0xC0) == 0x80 do
    cut = cut - 1
  end
  return string.sub(s, 1, cut)
end
