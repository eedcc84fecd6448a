-- Shared functions of the fair-queue scripts (prepended, after common.lua, to each of them).
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

-- Takes the first live waiter off the queue: (token, entry, now_us), dropping dead entries on
-- the way; (false, nil, now_us or nil) when nobody waits. The clock is read only once there is
-- an entry to judge, so that a release with an empty queue stays cheap.
local function redfour_pop_live_head(queue, entries, now_us)
  while true do
    local head = redis.call('LPOP', queue)
    if not head then
      return false, nil, now_us
    end
    now_us = now_us or redfour_now_us()
    local raw = redis.call('HGET', entries, head)
    redis.call('HDEL', entries, head)
    local ok, entry = false, nil
    if raw then
      ok, entry = pcall(cjson.decode, raw)
    end
    if ok and redfour_usable_entry(entry, math.floor(now_us / 1000)) then
      return head, entry, now_us
    end
  end
end

-- Hands the free lock to `head`, a waiter just taken off the queue, and tells only that waiter.
-- The lock lives for the claim window until the new holder claims it (renews to its ttl),
-- so a waiter that died after its last refresh blocks the queue for that window at most.
local function redfour_handoff(key, counter, head, entry, now_us, claim_ms)
  local window = math.min(tonumber(entry.t), claim_ms)
  local meta = {}
  if type(entry.m) == 'table' then
    meta = entry.m
  end
  local index = redfour_grant(key, counter, now_us, window, meta, 1, head)
  redis.call('PUBLISH', entry.c, head .. ' ' .. string.format('%d', index) .. ' ' .. window .. ' ' .. key)
  return index
end
