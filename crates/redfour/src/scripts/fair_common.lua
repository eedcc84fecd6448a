-- Shared functions of the fair-queue scripts (prepended to each, after lock.lua and grant.lua).
-- The queue of a lock is a list of waiter tokens in FIFO order (KEYS[3]) and a hash from token
-- to the waiter's entry (KEYS[4]): {t = ttl ms, e = expiry in server ms, c = handoff channel,
-- m = holder metadata as field, value pairs}. Entries expire on the server's clock.

-- Whether a decoded queue entry is live and usable. Everything is checked before the first
-- write, so that a malformed entry (written by hand, or by a bug) is dropped as dead instead of
-- failing a script halfway (scripts do not roll back).
local redfour_reserved = {index = true, acquired_at = true, handoff = true, attempt = true, fair = true}
local function redfour_usable_entry(entry, now_ms)
  if type(entry) ~= 'table' then
    return false
  end
  local e, t = tonumber(entry.e), tonumber(entry.t)
  if not e or not (e > now_ms) or not t or t < 1 or t ~= math.floor(t) or t > 9007199254740991 then
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

-- Outsiders' turns. Node redfour clients (and this library's clients with the fair queue off)
-- never queue: they wait on the release channel and try again when a release is announced or
-- their timer fires. A release that hands the lock straight to the next queued waiter
-- announces nothing, so under steady contention they would never find the lock free. When
-- outsiders are about (`PUBSUB NUMSUB` of the release channel counts them: fair clients
-- subscribe to it by pattern, which it does not count), a release sometimes gives them a
-- turn instead: it deletes the lock and announces it, as Node redfour's release does, and for
-- REDFOUR_TURN_MS the queue takes nothing (its waiters are told to look again when the turn
-- ends), so that an outsider woken by the announcement can take it.
-- Whose turn it is follows a credit: each release by a holder on the queue's side adds
-- outsiders / (queued waiters + 1), the outsiders' holdings due per holding of the queue's
-- side; each holding by an outsider that a waiter sees while outsiders listen (see
-- `redfour_outsider_seen`) takes one off; a release gives the outsiders a turn while the
-- credit is above 0. Over time each side's holdings go as its number of contenders. Waiters
-- look every few ms during a turn, so that they see an outsider's holding even when it is
-- short. A turn nobody took doubles the number of releases before the next (up to 2^6), so
-- that outsiders who never want this lock (Node processes using other locks of the
-- namespace) cost the queue little; an outsider's holding seen clears that. The state is one
-- field of the entries hash, `turn` (tokens always hold a '/', so no token is named so):
-- "credit until_ms last_index seen_index backoff taken kept_index". It is first written by a
-- release that finds outsiders while waiters queue, or by a waiter that sees an outsider hold
-- the lock while outsiders listen; it goes with the queue's keys (REDFOUR_TURN_LIFE_MS after it
-- created the hash, as long as a queue lives after its last waiter joined with the default
-- poll interval; each waiter joining sets both keys' expiry again), so that a lock nobody
-- waits for goes back to the usual case.
-- While it exists, a release with nobody queued decides too (a worker that takes the lock
-- again at once would otherwise keep it from the outsiders, who must first hear the
-- announcement): when the credit is above 0 the outsiders get a turn, during which the queue's
-- side takes nothing even with nobody queued; when it is -1 or below because the outsiders
-- had a holding more than their due (not because turns went untaken: the backoff is 0), the
-- lock is kept for the queue's side for REDFOUR_KEEP_MS (see `redfour_keep_for_queue`), since
-- outsiders that take the lock again at once (Node redfour's waitAcquireLock does) would
-- otherwise keep it from the queue whenever its clients are the slower to answer an
-- announcement. A kept lock nobody took lets the queue's debt go.
local REDFOUR_TURN_MS = 50
local REDFOUR_KEEP_MS = 50
local REDFOUR_TURN_LIFE_MS = 12000

-- How many outsiders listen on `channel`; 0 when the user may not ask (an ACL rule without
-- `+pubsub|numsub` or `+llen`: the queue then keeps the lock as before, see README, ACLs).
local function redfour_outsiders(channel)
  if not redfour_outsiders_listen then
    return 0
  end
  local numsub = redis.pcall('PUBSUB', 'NUMSUB', channel)
  if type(numsub) ~= 'table' or numsub.err or type(numsub[2]) ~= 'number' then
    return 0
  end
  return numsub[2]
end

-- The turn state as stored (a string), or nil: none, or an entries key of another type (its
-- first write fails, with the queue's; a lock nobody queues for stays usable).
local function redfour_turn_raw(entries)
  local raw = redis.pcall('HGET', entries, 'turn')
  if type(raw) == 'string' then
    return raw
  end
  return nil
end

-- The turn state; missing or malformed reads as a fresh one.
local function redfour_turn_read(raw)
  local s = {credit = 0, until_ms = 0, last = 0, seen = 0, backoff = 0, taken = 0, kept = 0}
  if type(raw) == 'string' then
    local c, u, l, n, b, t, k = string.match(raw,
      '^(%-?%d+%.?%d*) (%d+) (%d+) (%d+) (%d) ([01]) (%d+)$')
    if c then
      s.credit, s.until_ms, s.last, s.seen = tonumber(c), tonumber(u), tonumber(l), tonumber(n)
      s.backoff, s.taken, s.kept = math.min(tonumber(b), 6), tonumber(t), tonumber(k)
    end
  end
  return s
end

local function redfour_turn_write(queue, entries, s)
  redis.call('HSET', entries, 'turn', string.format('%.4f %d %d %d %d %d %d',
    s.credit, s.until_ms, s.last, s.seen, s.backoff, s.taken, s.kept))
  if redis.call('PTTL', entries) == -1 then
    -- Written into a new hash: it lives as a queue does after its last waiter joined (a
    -- waiter joining later sets both keys' expiry again). The queue list too, a no-op when it
    -- does not exist: a waiter's entry must never outlive the list.
    redis.call('PEXPIRE', entries, REDFOUR_TURN_LIFE_MS)
    redis.call('PEXPIRE', queue, REDFOUR_TURN_LIFE_MS)
  end
end

-- The end of the outsiders' turn in `s` when it is on at `now_ms`, else nil. A turn never
-- lasts longer than REDFOUR_TURN_MS from now: an end further ahead (the server clock stepped
-- back, or the field was written by hand) is over, so that the queue is never held up longer.
local function redfour_turn_on(s, now_ms)
  if s.until_ms > now_ms and s.until_ms <= now_ms + REDFOUR_TURN_MS then
    return s.until_ms
  end
  return nil
end

-- What this release, by the holder with `index`, does with the lock (see above): 'turn' (the
-- outsiders' turn, rather than handing it to the queue's head `head`, or letting the queue's
-- side take it again at once when nobody queues), 'keep' (nobody queues and the queue's side
-- is owed: kept for it) or nil (as without outsiders: handed to the head, or deleted and
-- announced); and the turn state to record with `redfour_turn_write` (nil: nothing to record)
-- once nothing else can fail. A turn is recorded as ending at `now_ms` + REDFOUR_TURN_MS, and
-- the caller deletes and announces the lock; waiters that look during the turn are told
-- `index` as the holder's. With nobody queued, only a lock that already has turn state
-- decides (outsiders listening on the release channel may never want this lock).
local function redfour_outsiders_turn(channel, queue, entries, now_ms, index, head)
  local raw = redfour_turn_raw(entries)
  if not head and not raw then
    return nil, nil
  end
  local outsiders = redfour_outsiders(channel)
  local queued = redis.pcall('LLEN', queue)
  if outsiders == 0 or type(queued) ~= 'number' then
    return nil, nil
  end
  local share = outsiders / (queued + 1)
  local s = redfour_turn_read(raw)
  if s.kept ~= 0 then
    -- The lock last kept for the queue's side went untaken (a claim clears `kept`): the
    -- queue's side did not want it then, so its debt is let go rather than kept for nobody
    -- again and again.
    s.credit, s.kept = math.max(s.credit, 0), 0
  end
  if s.until_ms > 0 then
    -- The turn before this holding is over.
    if s.taken == 1 then
      s.backoff = 0
    else
      -- The next turn comes after 2^backoff - 1 releases of the queue's side at the least,
      -- however many outsiders listen.
      s.backoff = math.min(s.backoff + 1, 6)
      s.credit = math.min(s.credit, share * (1 - 2 ^ s.backoff))
    end
    s.until_ms, s.taken = 0, 0
  end
  -- Bounded, so that holdings no waiter saw cannot pile up turns, and a long spell of
  -- outsiders' holdings is not held against them for ever.
  s.credit = math.max(math.min(s.credit + share, 1 + share), -64 * math.max(share, 1))
  if s.credit > 0 then
    s.until_ms, s.last = now_ms + REDFOUR_TURN_MS, index
    return 'turn', s
  end
  if not head and s.credit <= -1 and s.backoff == 0 then
    return 'keep', s
  end
  return nil, s
end

-- Keeps the free lock `key` for the queue's side for REDFOUR_KEEP_MS (see above): a hash with
-- a new fencing `index` (taken before any write), `acquired_at`, and `handoff` = '*' (no
-- waiter's token: they all hold a '/'), which any fair acquire takes as its own grant
-- (fair_acquire.lua). Outsiders find it held, for less than their shortest wait (Node redfour
-- waits at least 100 ms before it looks again unless a release is announced): the caller
-- announces it, so that outsiders waiting on a long holder's ttl look again soon. Never on a
-- cluster (no outsiders there), so the key may be deleted and written again.
local function redfour_keep_for_queue(key, index, now_us)
  redis.call('DEL', key)
  redfour_write_holder(key, index, now_us, REDFOUR_KEEP_MS, {'handoff', '*'}, 1, false)
end

-- A waiter saw the lock held by `holder`, an outsider (a hash without `acquired_at`, Node
-- redfour's, or with `fair` = '0', this library's granted outside the queue): each such
-- holding counts once against the outsiders' credit, and marks an open turn as taken. `raw`
-- is the turn state as read (nil: none yet, which this writes).
local function redfour_outsider_seen(queue, entries, raw, holder)
  local s = redfour_turn_read(raw)
  if s.seen == holder then
    return
  end
  s.seen = holder
  if s.backoff > 0 then
    -- Turns went untaken, but outsiders do want this lock: the turns held back for that
    -- are owed again.
    s.backoff = 0
    s.credit = math.max(s.credit, 0)
  end
  s.credit = math.max(s.credit - 1, -4096)
  if s.until_ms > 0 then
    s.taken = 1
  end
  redfour_turn_write(queue, entries, s)
end
