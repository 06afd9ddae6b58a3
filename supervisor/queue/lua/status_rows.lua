-- status_rows: the current status row of each named job, as outbox fields, without
-- appending anything (`ingestctl status-sync` writes them to the store itself).
-- KEYS[1] jobs
-- ARGV[1..N] job ids
-- Returns one flat field list per known job (unknown ids are skipped).
local out = {}
for _, id in ipairs(ARGV) do
  local rec = load_checked(KEYS[1], id)  -- skipped too: one no script can read
  if rec then
    table.insert(out, status_fields(rec, final_kind(rec)))
  end
end
return out
