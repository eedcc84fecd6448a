-- redfour list: a read-only look at one key where the namespace may keep a lock, for
-- `Client::list` and `Client::wait_progress`. The reply is small whatever the key holds: a key
-- of another type is answered by its type, and of a hash only the fields asked for are read,
-- each returned only up to ARGV[1] bytes (a longer one is answered by its length, and never
-- read). Nothing is written.
-- KEYS[1] the key; KEYS[2] (when KEYS[1] is where a lock is kept) that lock's queue list.
-- ARGV[1] the longest value returned, in bytes; ARGV[2] a waiter's queue token ('' for none);
-- ARGV[3] the index field; ARGV[4..] the other fields to read.
-- Returns {type, pttl, now_ms, queued, place, index, field...}: TYPE of KEYS[1]; for a key of
-- another type, that is all ({type, -2, 0, 0, 0}). Otherwise its PTTL, the server's clock in
-- ms, the length of the queue (-1 when KEYS[2] holds something that is not a list) and the
-- token's place in it, from 1 (0: not there); then, for a hash, the index (false when absent,
-- its length when longer than 16 bytes, the longest valid index) and, when the index was read,
-- each other field (false when absent, its length when too long).
local key, limit, token = KEYS[1], tonumber(ARGV[1]), ARGV[2]
local kind = redis.call('TYPE', key)['ok']
local reply = {kind, -2, 0, 0, 0}
if kind ~= 'hash' and kind ~= 'none' then
  -- Foreign: its type says enough.
  return reply
end
local clock = redis.call('TIME')
reply[2] = redis.call('PTTL', key)
reply[3] = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
if KEYS[2] then
  local queued = redis.pcall('LLEN', KEYS[2])
  if type(queued) == 'table' then
    -- A refused command (an ACL without it) is not foreign data.
    if string.sub(queued.err, 1, 9) ~= 'WRONGTYPE' then
      error(queued)
    end
    reply[4] = -1
  else
    reply[4] = queued
    if token ~= '' and queued > 0 then
      local at = redis.call('LPOS', KEYS[2], token)
      if at then
        reply[5] = at + 1
      end
    end
  end
end
if kind == 'none' then
  return reply
end
local size = redis.call('HSTRLEN', key, ARGV[3])
if size > 16 then
  reply[6] = size
  return reply
end
reply[6] = redis.call('HGET', key, ARGV[3])
if not reply[6] then
  return reply
end
-- The other fields: the short ones read together, the long ones answered by their length.
local short, slots = {}, {}
for i = 4, #ARGV do
  size = redis.call('HSTRLEN', key, ARGV[i])
  if size > limit then
    reply[i + 3] = size
  else
    reply[i + 3] = false
    short[#short + 1] = ARGV[i]
    slots[#slots + 1] = i + 3
  end
end
if #short > 0 then
  local values = redis.call('HMGET', key, unpack(short))
  for j = 1, #short do
    reply[slots[j]] = values[j]
  end
end
return reply
