-- redfour fair acquire: one attempt; a waiter that does not get the lock joins (or refreshes
-- its place in) the FIFO queue.
-- KEYS: lock, counter, queue list, queue entries.
-- ARGV[1] ttl ms; ARGV[2] waiter token ('' for a one-shot attempt that does not queue);
-- ARGV[3] entry lifetime ms; ARGV[4] the waiter's handoff channel; ARGV[5] claim window ms;
-- ARGV[6] the release channel; ARGV[7..] holder metadata as field, value pairs.
-- Returns {1, index, ttl} acquired; {2, index, pttl} the lock was already handed to this
-- waiter (its notice was lost or is late; the lock is marked as taken, so that the notice, when
-- it comes, cannot pass it on); {0, -1, pttl, holder's index} held by someone else.
-- fair_acquire_free.lua ran first: the usual case (a free lock, nobody queued, a counter
-- behind the clock) is done; every other case comes here with nothing written.
local key, counter, queue, entries = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local token = ARGV[2]
local ttl = tonumber(ARGV[1])
local now_us = nil
local pttl, holder = redfour_lock(key)
if pttl >= 0 then
  local fields = redis.call('HMGET', key, 'handoff', 'acquired_at', 'fair')
  if token ~= '' and fields[1] == token then
    redis.call('HDEL', key, 'handoff')
    return {2, tonumber(holder), pttl}
  end
  if fields[1] == '*' then
    -- Kept for the queue's side (see `redfour_keep_for_queue` in fair_common.lua): this
    -- acquire's own, with an index of its own. A stale entry of the caller's goes (nobody
    -- live queued when the lock was kept, and whoever came since took it).
    now_us = redfour_now_us()
    local index = redfour_next_index(key, counter, now_us)
    if token ~= '' and redis.pcall('HEXISTS', entries, token) == 1 then
      redis.pcall('LREM', queue, 1, token)
      redis.call('HDEL', entries, token)
    end
    -- Taken: the next release does not let the queue's debt go (see fair_common.lua).
    local raw = redfour_turn_raw(entries)
    if raw then
      local s = redfour_turn_read(raw)
      if s.kept ~= 0 then
        s.kept = 0
        redfour_turn_write(queue, entries, s)
      end
    end
    redis.call('DEL', key)
    redfour_write_holder(key, index, now_us, ttl, ARGV, 7, false)
    return {1, index, ttl}
  end
  if token ~= '' and (not fields[2] or fields[3] == '0') and redfour_outsiders(ARGV[6]) > 0 then
    -- Held by an outsider, seen by a waiter while outsiders listen (see "Outsiders' turns" in
    -- fair_common.lua).
    redfour_outsider_seen(queue, entries, redfour_turn_raw(entries), tonumber(holder))
  end
end
if pttl < 0 then
  local head, entry
  head, entry, now_us = redfour_live_head(queue, entries, nil)
  now_us = now_us or redfour_now_us()
  -- An outsiders' turn holds even when nobody queues (the holder before may take the lock
  -- again at once).
  local turn = redfour_turn_read(redfour_turn_raw(entries))
  local turn_ends = redfour_turn_on(turn, math.floor(now_us / 1000))
  if turn_ends then
    -- The outsiders' turn: the queue takes nothing until it ends. Look again in a few ms
    -- (the client waits 5 ms at the least), to see an outsider's holding, however short.
    pttl = math.min(turn_ends - math.floor(now_us / 1000), 5)
    holder = turn.last
  else
    local index = redfour_next_index(key, counter, now_us)
    if turn.until_ms > math.floor(now_us / 1000) then
      -- An end further ahead than a turn lasts (the clock stepped back, a hand-written
      -- field): void, and cleared, so that it cannot come back on when the clock catches up.
      turn.until_ms = 0
      redfour_turn_write(queue, entries, turn)
    end
    if not head or head == token then
      if head then
        redfour_take_head(queue, entries, head)
      end
      redfour_write_holder(key, index, now_us, ttl, ARGV, 7, false)
      return {1, index, ttl}
    end
    -- Free, but someone is first in line (the last holder expired): hand it over now.
    redfour_handoff(key, queue, entries, head, entry, now_us, tonumber(ARGV[5]), index)
    pttl = redis.call('PTTL', key)
    holder = index
  end
end
if token ~= '' then
  now_us = now_us or redfour_now_us()
  local now_ms = math.floor(now_us / 1000)
  -- What a queue entry keeps for a handoff: the metadata without this attempt's id, which
  -- must only ever name a lock that this very attempt won.
  local entry_meta = {}
  for i = 7, #ARGV, 2 do
    if ARGV[i] ~= 'attempt' then
      entry_meta[#entry_meta + 1] = ARGV[i]
      entry_meta[#entry_meta + 1] = ARGV[i + 1]
    end
  end
  local life = tonumber(ARGV[3])
  if redis.call('HEXISTS', entries, token) == 0 then
    redis.call('RPUSH', queue, token)
  end
  redis.call('HSET', entries, token,
    cjson.encode({t = ttl, e = now_ms + life, c = ARGV[4], m = entry_meta}))
  -- The queue disappears by itself once every waiter has stopped refreshing; a waiter with a
  -- shorter lifetime never shortens it for the others.
  if redis.call('PTTL', queue) < life * 2 then
    redis.call('PEXPIRE', queue, life * 2)
    redis.call('PEXPIRE', entries, life * 2)
  end
end
-- The holder's index tells the waiter whether a handoff notice it reads later is stale.
return {0, -1, pttl, tonumber(holder)}
