-- Shared functions of the fair-queue scripts (prepended to each of them).
-- The queue of a lock is a list of waiter tokens in FIFO order (KEYS[3]) and a hash from token
-- to the waiter's entry (KEYS[4]): {t = ttl ms, e = expiry in server ms, c = handoff channel,
-- m = holder metadata as field, value pairs}. Entries expire on the server's clock.

local function redfour_now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- The lock's remaining ttl, or -2 when there is no lock; errors on foreign data.
local function redfour_lock_pttl(key)
  local pttl = redis.call('PTTL', key)
  if pttl == -2 then
    return -2
  end
  local kind = redis.call('TYPE', key)['ok']
  if kind ~= 'hash' then
    error({err = 'REDFOUR_WRONGTYPE the lock key holds a ' .. kind .. ', not a hash'})
  end
  if pttl < 0 then
    error({err = 'REDFOUR_CORRUPT the lock hash has no expiry'})
  end
  return pttl
end

-- The next fencing index: the counter plus one, floored at the server clock in microseconds.
local function redfour_next_index(counter, now_us)
  local current = nil
  local raw = redis.pcall('GET', counter)
  if type(raw) == 'table' then
    error({err = 'REDFOUR_WRONGTYPE the counter key holds a '
      .. redis.call('TYPE', counter)['ok'] .. ', not a string'})
  end
  if raw then
    if string.len(raw) > 17 or not string.match(raw, '^%-?%d+$') then
      error({err = 'REDFOUR_CORRUPT the counter is not an integer'})
    end
    current = tonumber(raw)
    if current >= 9007199254740991 then
      error({err = 'REDFOUR_CORRUPT the counter is at or beyond 2^53-1'})
    end
  end
  local index = now_us
  if current ~= nil and current >= now_us then
    index = current + 1
  end
  redis.call('SET', counter, string.format('%d', index))
  return index
end

-- Writes the lock for a new holder (the key is known to be free).
local function redfour_grant(key, counter, now_us, ttl, meta, token)
  local index = redfour_next_index(counter, now_us)
  local fields = {'index', string.format('%d', index),
    'acquired_at', string.format('%d', math.floor(now_us / 1000))}
  for i = 1, #meta do
    fields[#fields + 1] = meta[i]
  end
  if token then
    fields[#fields + 1] = 'handoff'
    fields[#fields + 1] = token
  end
  redis.call('HSET', key, unpack(fields))
  redis.call('PEXPIRE', key, ttl)
  return index
end

-- The first live waiter (token, entry), dropping dead ones; false when nobody waits.
local function redfour_live_head(queue, entries, now_ms)
  while true do
    local head = redis.call('LINDEX', queue, 0)
    if not head then
      return false, nil
    end
    local raw = redis.call('HGET', entries, head)
    local ok, entry = false, nil
    if raw then
      ok, entry = pcall(cjson.decode, raw)
    end
    if ok and type(entry) == 'table' and tonumber(entry.e) and tonumber(entry.e) > now_ms
        and tonumber(entry.t) and type(entry.c) == 'string' then
      return head, entry
    end
    redis.call('LPOP', queue)
    redis.call('HDEL', entries, head)
  end
end

-- Hands the free lock to the waiter at the head of the queue and tells only that waiter.
-- The lock lives for the claim window until the new holder claims it (renews to its ttl),
-- so a waiter that died after its last refresh blocks the queue for that window at most.
local function redfour_handoff(key, counter, queue, entries, head, entry, now_us, claim_ms)
  redis.call('LPOP', queue)
  redis.call('HDEL', entries, head)
  local window = math.min(tonumber(entry.t), claim_ms)
  local meta = {}
  if type(entry.m) == 'table' then
    meta = entry.m
  end
  local index = redfour_grant(key, counter, now_us, window, meta, head)
  redis.call('PUBLISH', entry.c, head .. ' ' .. string.format('%d', index) .. ' ' .. window .. ' ' .. key)
  return index
end
