-- redfour renew: reset the expiry, only for the current holder.
-- KEYS[1] lock key; ARGV[1] the caller's index; ARGV[2] the new ttl in milliseconds.
-- Returns {1, 'renewed', index, ttl}, {0, 'missing', -1, -1} or {0, 'conflict', -1, holder's index}.
local stored = redfour_held_index(KEYS[1])
if stored == nil then
  return {0, 'missing', -1, -1}
end
if stored ~= tonumber(ARGV[1]) then
  return {0, 'conflict', -1, stored}
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {1, 'renewed', stored, tonumber(ARGV[2])}
