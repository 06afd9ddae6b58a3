-- live_workers: the workers whose heartbeat has not expired by the server's clock.
-- KEYS[1] workers (ZSET)
-- Returns their ids (the caller reads each one's JSON; it holds no key names here).
return redis.call('ZRANGEBYSCORE', KEYS[1], fmt(now_ms()), '+inf')
