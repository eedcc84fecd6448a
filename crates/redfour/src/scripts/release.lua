-- redfour release: only the holder (by index) deletes the lock.
-- KEYS[1] lock key; ARGV[1] the caller's index; ARGV[2] the release channel.
-- Returns {1, 'released', index}, {1, 'expired', -1} or {0, 'conflict', holder's index}.
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'none' then
  return {1, 'expired', -1}
elseif kind ~= 'hash' then
  return redis.error_reply('REDFOUR_WRONGTYPE the lock key holds a ' .. kind .. ', not a hash')
end
local stored = tonumber(redis.call('HGET', KEYS[1], 'index'))
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
