-- redfour fair acquire, the usual case first: the lock is free, nobody queues (nor is there
-- outsiders' turn state: see fair_common.lua), and the counter
-- holds an index this library took from the server clock (or nothing). It comes first in the
-- script, written out without the shared functions, which the server would otherwise define
-- again on this call too (most calls are this one; it costs a fifth less this way: see
-- BENCHMARKS.md, "Where the server time goes"). It does what `redfour_grant` in grant.lua
-- does for this case, call for call. In every other case nothing is left written (a counter
-- read by the `SET ... GET` is put back as it was, value and expiry), and the general path
-- (fair_acquire.lua) decides. KEYS and ARGV as in fair_acquire.lua.
if redis.call('EXISTS', KEYS[1], KEYS[3], KEYS[4]) == 0 then
  local clock = redis.call('TIME')
  local now_us = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
  local now = string.format('%d', now_us)
  local old = redis.pcall('SET', KEYS[2], now, 'KEEPTTL', 'GET')
  -- An index behind the clock: the same number of digits and smaller (digits compare as text
  -- when they are as many), in the only form this library writes.
  local usual = not old
  if type(old) == 'string' then
    usual = #old == #now and old < now and string.find(old, '^[1-9]%d*$') ~= nil
    if not usual then
      redis.call('SET', KEYS[2], old, 'KEEPTTL')
    end
  end
  if usual then
    -- A per-lock counter lives an hour after its last index (REDFOUR_COUNTER_LIFE_MS in
    -- grant.lua; a test holds the two to the same figure).
    if #KEYS[2] == #KEYS[1] + 6 and KEYS[2] == KEYS[1] .. ':index' then
      redis.call('PEXPIRE', KEYS[2], 3600000)
    end
    redis.call('HSET', KEYS[1], 'index', now,
      'acquired_at', string.format('%d', math.floor(now_us / 1000)), unpack(ARGV, 7))
    redis.call('PEXPIRE', KEYS[1], ARGV[1])
    return {1, now_us, tonumber(ARGV[1])}
  end
end
