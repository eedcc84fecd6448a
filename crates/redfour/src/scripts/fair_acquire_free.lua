-- redfour fair acquire, the usual case first: the lock is free and nobody queues. It runs
-- ahead of the queue's shared functions (fair_common.lua), so that the server does not define
-- them on the call that needs none of them (each definition costs time on every call; see
-- BENCHMARKS.md, "Where the server time goes"). KEYS and ARGV as in fair_acquire.lua.
if redis.call('EXISTS', KEYS[1], KEYS[3]) == 0 then
  local index = redfour_grant(KEYS[1], KEYS[2], redfour_now_us(), ARGV[1], ARGV, 6, false)
  return {1, index, tonumber(ARGV[1])}
end
