-- park_rows: keep status rows the store would not take for now (another session holds
-- their lock) for the reconciler: one per job, the newest (a row parked late, such as a
-- dead projector's entry taken over, never replaces a newer one).
-- KEYS[1] parked rows (job id -> "<seq_run> <rev>\n<row JSON>")
-- ARGV: for each row, job id, seq_run, rev, value
-- Returns the number of rows kept.
local kept = 0
for i = 1, #ARGV, 4 do
  local old = redis.call('HGET', KEYS[1], ARGV[i])
  local newer = true
  if old then
    local run, rev = string.match(old, '^(%S+) (%S+)\n')
    run, rev = tonumber(run), tonumber(rev)
    local new_run, new_rev = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
    if run and rev and (run > new_run or (run == new_run and rev >= new_rev)) then
      newer = false
    end
  end
  if newer then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 3])
    kept = kept + 1
  end
end
return kept
