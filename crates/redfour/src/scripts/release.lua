-- redfour release: only the holder (by index) deletes the lock.
-- KEYS[1] lock key; ARGV[1] the caller's index; ARGV[2] the release channel.
-- Returns {1, 'released', index}, {1, 'expired', -1} or {0, 'conflict', holder's index}.
-- ARGV[1] is written by the client as a decimal integer: compared as a string with the stored
-- index (which `redfour_lock` checked is canonical), it is exact for every value.
local _, stored = redfour_lock(KEYS[1])
if not stored then
  return {1, 'expired', -1}
end
if stored ~= ARGV[1] then
  return {0, 'conflict', tonumber(stored)}
end
redis.call('DEL', KEYS[1])
-- Waiters (Node's and ours) listen on this channel for the full lock key.
redfour_publish(ARGV[2], KEYS[1])
return {1, 'released', tonumber(stored)}
