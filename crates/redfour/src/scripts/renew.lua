-- redfour renew: reset the expiry, only for the current holder.
-- KEYS[1] lock key; ARGV[1] the caller's index; ARGV[2] the new ttl in milliseconds.
-- Returns {1, 'renewed', index, ttl}, {0, 'missing', -1, -1} or {0, 'conflict', -1, holder's index}.
-- The caller's index is compared as a string, as in release.lua.
local _, stored = redfour_lock(KEYS[1])
if not stored then
  return {0, 'missing', -1, -1}
end
if stored ~= ARGV[1] then
  return {0, 'conflict', -1, tonumber(stored)}
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {1, 'renewed', tonumber(stored), tonumber(ARGV[2])}
