-- redfour renew: reset the expiry, only for the current holder.
-- KEYS[1] lock key; ARGV[1] the caller's index; ARGV[2] the new ttl in milliseconds.
-- Returns {1, 'renewed', index, ttl}, {0, 'missing', -1, -1} or {0, 'conflict', -1, holder's index}.
local raw = redis.pcall('HGET', KEYS[1], 'index')
if type(raw) == 'table' then
  return redis.error_reply('REDFOUR_WRONGTYPE the lock key holds a '
    .. redis.call('TYPE', KEYS[1])['ok'] .. ', not a hash')
end
if not raw then
  if redis.call('EXISTS', KEYS[1]) == 0 then
    return {0, 'missing', -1, -1}
  end
  return redis.error_reply('REDFOUR_CORRUPT the lock hash has no index field')
end
local stored = tonumber(raw)
if stored == nil then
  return redis.error_reply('REDFOUR_CORRUPT the lock hash has no numeric index field')
end
if stored ~= tonumber(ARGV[1]) then
  return {0, 'conflict', -1, stored}
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {1, 'renewed', stored, tonumber(ARGV[2])}
