-- Shared functions of the fair-queue scripts (prepended to each, after lock.lua and grant.lua).
-- The queue of a lock is a list of waiter tokens in FIFO order (KEYS[3]) and a hash from token
-- to the waiter's entry (KEYS[4]): {t = ttl ms, e = expiry in server ms, c = handoff channel,
-- m = holder metadata as field, value pairs}. Entries expire on the server's clock.

-- Whether a decoded queue entry is live and usable. Everything is checked before the first
-- write, so that a malformed entry (written by hand, or by a bug) is dropped as dead instead of
-- failing a script halfway (scripts do not roll back).
local redfour_reserved = {index = true, acquired_at = true, handoff = true, attempt = true}
local function redfour_usable_entry(entry, now_ms)
  if type(entry) ~= 'table' then
    return false
  end
  local e, t = tonumber(entry.e), tonumber(entry.t)
  if not e or e <= now_ms or not t or t < 1 or t ~= math.floor(t) or t > 9007199254740991 then
    return false
  end
  if type(entry.c) ~= 'string' or entry.c == '' then
    return false
  end
  local m = entry.m
  if m == nil then
    return true
  end
  if type(m) ~= 'table' or #m % 2 ~= 0 then
    return false
  end
  for i = 1, #m do
    if type(m[i]) ~= 'string' or (i % 2 == 1 and redfour_reserved[m[i]]) then
      return false
    end
  end
  return true
end

-- The first live waiter (token, entry, now_us), dropping dead entries on the way; (false, nil,
-- now_us or nil) when nobody waits. Reads come before any write (LINDEX and HGET fail on keys
-- of another type before anything changed), and the clock is read only once there is an entry
-- to judge, so that a release with an empty queue stays cheap. The live head stays queued:
-- `redfour_take_head` removes it once nothing else can fail. `first` is the queue's first
-- token when the caller has just read it (false: the queue is empty), nil to read it here.
local function redfour_live_head(queue, entries, now_us, first)
  local head = first
  while true do
    if head == nil then
      head = redis.call('LINDEX', queue, 0)
    end
    if not head then
      return false, nil, now_us
    end
    now_us = now_us or redfour_now_us()
    local raw = redis.call('HGET', entries, head)
    local ok, entry = false, nil
    if raw then
      ok, entry = pcall(cjson.decode, raw)
    end
    if ok and redfour_usable_entry(entry, math.floor(now_us / 1000)) then
      return head, entry, now_us
    end
    redis.call('LPOP', queue)
    redis.call('HDEL', entries, head)
    head = nil
  end
end

-- Removes the head `head` found by `redfour_live_head` from the queue.
local function redfour_take_head(queue, entries, head)
  redis.call('LPOP', queue)
  redis.call('HDEL', entries, head)
end

-- Hands the lock to the queued waiter `head` with the fencing index `index` (taken from the
-- counter before any other write, so that a corrupt counter fails the script early) and tells
-- only that waiter. The lock lives for the claim window until the new holder claims it (renews
-- to its ttl), so a waiter that died after its last refresh blocks the queue for that window at
-- most. A lock key that still exists (a release handing over) is rewritten in place rather
-- than deleted and created again: on a cluster, a slot being migrated refuses to create keys.
-- The previous holder's own fields go first; `index` and `acquired_at` stay until overwritten,
-- so the key never disappears on the way.
local function redfour_handoff(key, queue, entries, head, entry, now_us, claim_ms, index)
  redfour_take_head(queue, entries, head)
  local window = math.min(tonumber(entry.t), claim_ms)
  local meta = {}
  if type(entry.m) == 'table' then
    meta = entry.m
  end
  redis.call('HDEL', key, 'attempt', 'handoff', 'host', 'pid', 'description')
  redfour_write_holder(key, index, now_us, window, meta, 1, head)
  redfour_publish(entry.c, head .. ' ' .. string.format('%d', index) .. ' ' .. window .. ' ' .. key)
end
