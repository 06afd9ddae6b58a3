-- resend_status: append the current status row of each named job to the status outbox
-- (the reconciler's repair for rows that lag behind Redis). Unknown ids are skipped.
-- KEYS[1] jobs  KEYS[2] outbox
-- ARGV[1..N] job ids
-- Returns the number of rows appended.
local n = 0
for _, id in ipairs(ARGV) do
  local rec = load_checked(KEYS[1], id)  -- skipped too: one no script can read
  if rec then
    status_out(KEYS[2], 0, rec, final_kind(rec))
    n = n + 1
  end
end
return n
