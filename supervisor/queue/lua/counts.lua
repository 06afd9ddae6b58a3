-- counts: jobs per state, a delayed job already due counted as waiting (it is ready; the
-- next claim moves it), so a backlog of due retries shows while every slot is busy.
-- KEYS[1] waiting  KEYS[2] delayed  KEYS[3..] the other state sets
-- Returns {waiting and due, delayed not yet due, the other sets' sizes...}.
local due = redis.call('ZCOUNT', KEYS[2], '-inf', fmt(now_ms()))
local out = {redis.call('ZCARD', KEYS[1]) + due, redis.call('ZCARD', KEYS[2]) - due}
for i = 3, #KEYS do
  table.insert(out, redis.call('ZCARD', KEYS[i]))
end
return out
