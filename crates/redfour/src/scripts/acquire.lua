-- redfour acquire: one attempt, one round trip.
-- KEYS[1] lock key (a hash: field `index` plus holder metadata)
-- KEYS[2] counter key (a string integer)
-- ARGV[1] ttl in milliseconds
-- ARGV[2..] holder metadata as field, value pairs
-- Returns {1, index, ttl} when acquired, {0, -1, pttl} when held by someone else.
local pttl = redfour_lock(KEYS[1])
if pttl >= 0 then
  return {0, -1, pttl}
end
-- The counter may be gone (restart without persistence) or may have been reset by someone:
-- the index is floored at the server clock, so indexes keep increasing.
local index = redfour_grant(KEYS[1], KEYS[2], redfour_now_us(), ARGV[1], ARGV, 2, false)
return {1, index, tonumber(ARGV[1])}
