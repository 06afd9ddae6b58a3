-- status_versions: one HSCAN page of the job hash, reduced to what the reconciler compares
-- (so whole records, results included, never leave Redis for it).
-- KEYS[1] jobs
-- ARGV[1] HSCAN cursor  ARGV[2] COUNT hint
-- Returns {next cursor, id, tenant, run ms, rev, state, attempt, started ms (0: none),
-- id, tenant, ...}; records
-- no script can read are left out (one of them must not stop the fleet's sweep).
local page = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', tonumber(ARGV[2]))
local out = {page[1]}
local items = page[2]
for i = 1, #items, 2 do
  local rec = decode_checked(items[i + 1], items[i])
  if rec then
    table.insert(out, items[i])
    table.insert(out, tostring(rec.tenant or ''))
    table.insert(out, fmt(rec.enqueued_at or 0))
    table.insert(out, fmt(rec.rev or 0))
    table.insert(out, rec.state)
    table.insert(out, fmt(rec.attempt))
    table.insert(out, fmt(rec.started_at or 0))
  end
end
return out
