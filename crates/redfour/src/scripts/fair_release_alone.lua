-- redfour fair release, the usual case first: the caller holds the lock and nobody queues. It
-- runs ahead of the queue's shared functions (fair_common.lua), which it does not need, so
-- that the server does not define them (see fair_acquire_free.lua). In every other case
-- (a waiter queued, another holder, a waiter's token in ARGV[4]) nothing has been written,
-- and fair_release.lua goes on with what was read here: the lock's `pttl` and stored index
-- `raw`, and the queue's `head` when it was read. Foreign data has raised its error already.
-- KEYS and ARGV as in fair_release.lua.
local pttl, raw = redfour_lock(KEYS[1])
if pttl == -2 then
  return {1, 'expired', -1}
end
local head = nil
if raw == ARGV[1] and not ARGV[4] then
  head = redis.call('LINDEX', KEYS[3], 0)
  if not head then
    redis.call('DEL', KEYS[1])
    -- Nobody queues (Node waiters never do): wake everyone listening, as Node redfour does.
    redfour_publish(ARGV[2], KEYS[1])
    return {1, 'released', tonumber(raw)}
  end
end
