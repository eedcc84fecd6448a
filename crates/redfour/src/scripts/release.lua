-- redfour release: only the holder (by index) deletes the lock.
-- KEYS[1] lock key; ARGV[1] the caller's index; ARGV[2] the release channel.
-- Returns {1, 'released', index}, {1, 'expired', -1} or {0, 'conflict', holder's index}.
local raw = redis.pcall('HGET', KEYS[1], 'index')
if type(raw) == 'table' then
  return redis.error_reply('REDFOUR_WRONGTYPE the lock key holds a '
    .. redis.call('TYPE', KEYS[1])['ok'] .. ', not a hash')
end
if not raw then
  if redis.call('EXISTS', KEYS[1]) == 0 then
    return {1, 'expired', -1}
  end
  return redis.error_reply('REDFOUR_CORRUPT the lock hash has no index field')
end
local stored = tonumber(raw)
if stored == nil then
  return redis.error_reply('REDFOUR_CORRUPT the lock hash has no numeric index field')
end
if stored == tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
  -- Waiters (Node's and ours) listen on this channel for the full lock key.
  redis.call('PUBLISH', ARGV[2], KEYS[1])
  return {1, 'released', stored}
end
return {0, 'conflict', stored}
