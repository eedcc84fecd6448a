-- redfour fair release: only the holder (by index) releases; the lock goes straight to the
-- first live waiter in the queue, or, when nobody queues, is deleted and announced.
-- KEYS: lock, counter, queue list, queue entries.
-- ARGV[1] the caller's index; ARGV[2] the release channel; ARGV[3] claim window ms.
-- Returns {1, 'released', index}, {1, 'expired', -1} or {0, 'conflict', holder's index}.
local key, counter, queue, entries = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local raw = redis.pcall('HGET', key, 'index')
if type(raw) == 'table' then
  return redis.error_reply('REDFOUR_WRONGTYPE the lock key holds a '
    .. redis.call('TYPE', key)['ok'] .. ', not a hash')
end
if not raw then
  if redis.call('EXISTS', key) == 0 then
    return {1, 'expired', -1}
  end
  return redis.error_reply('REDFOUR_CORRUPT the lock hash has no index field')
end
local stored = tonumber(raw)
if stored == nil then
  return redis.error_reply('REDFOUR_CORRUPT the lock hash has no numeric index field')
end
if stored ~= tonumber(ARGV[1]) then
  return {0, 'conflict', stored}
end
redis.call('DEL', key)
local now_us = redfour_now_us()
local head, entry = redfour_live_head(queue, entries, math.floor(now_us / 1000))
if head then
  redfour_handoff(key, counter, queue, entries, head, entry, now_us, tonumber(ARGV[3]))
else
  -- Nobody queues (Node waiters never do): wake everyone listening, as Node redfour does.
  redis.call('PUBLISH', ARGV[2], key)
end
return {1, 'released', stored}
