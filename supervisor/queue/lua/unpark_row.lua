-- unpark_row: forget a parked status row the reconciler has written, unless a newer one
-- was parked meanwhile (then it stays, to be written by the next sweep).
-- KEYS[1] parked rows
-- ARGV[1] job id  ARGV[2] the value that was written
-- Returns 1 if forgotten, 0 if a newer row stays.
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
