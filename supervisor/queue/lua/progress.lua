-- progress: record a held job's progress; it never goes backwards.
-- KEYS[1] jobs  KEYS[2] events  KEYS[3] outbox
-- ARGV[1] id  ARGV[2] token  ARGV[3] percent  ARGV[4] message ('' for none)  ARGV[5] events maxlen
-- ARGV[6] outbox cap  ARGV[7] also append the status row (1|0): the holder throttles rows
--         per job; the record and the events stream always get the change
-- Returns {1, rev} or {0, 0} when the lease is lost.
local rec = load(KEYS[1], ARGV[1])
if not held(rec, ARGV[2]) then
  return {0, 0}
end
local pct = tonumber(ARGV[3])
if pct > (rec.progress or 0) then
  rec.progress = pct
end
if ARGV[4] ~= '' then
  rec.message = ARGV[4]
end
save(KEYS[1], rec)
emit(KEYS[2], ARGV[5], 'progress', rec, {progress = rec.progress, message = ARGV[4]})
if ARGV[7] ~= '0' then
  status_out(KEYS[3], ARGV[6], rec, 'p')
end
return {1, rec.rev}
