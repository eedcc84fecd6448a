-- redfour fair leave: a waiter that gives up or is dropped leaves the queue.
-- KEYS: queue list, queue entries. ARGV[1] the waiter token.
redis.call('LREM', KEYS[1], 0, ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
