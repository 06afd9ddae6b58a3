-- job_tenants: whose each job is, for the search for rows of jobs Redis lost (a job id
-- can be enqueued again by another tenant once the first job left Redis).
-- KEYS[1] jobs
-- ARGV job ids
-- Returns one value per id: the record's tenant; '' for a record no script can read
-- (Redis still has a job of that id, whose it is cannot be told); nil for no record.
local out = {}
for i, id in ipairs(ARGV) do
  local raw = redis.call('HGET', KEYS[1], id)
  if not raw then
    out[i] = false
  else
    local rec = decode_checked(raw, id)
    out[i] = rec and type(rec.tenant) == 'string' and rec.tenant or ''
  end
end
return out
