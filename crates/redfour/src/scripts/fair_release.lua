-- redfour fair release: only the holder (by index) releases; the lock goes straight to the
-- first live waiter in the queue, or, when nobody queues, is deleted and announced.
-- KEYS: lock, counter, queue list, queue entries.
-- ARGV[1] the caller's index; ARGV[2] the release channel; ARGV[3] claim window ms;
-- ARGV[4] (optional) a waiter token: pass on a lock handed to that waiter only while it is
-- still unclaimed (the waiter left without using it).
-- Returns {1, 'released', index}, {1, 'expired', -1} or {0, 'conflict', holder's index}.
-- fair_release_alone.lua ran first: it released the lock when the caller holds it, no token
-- came in ARGV[4] and nobody queues, and left what it read: the lock's `pttl` and `raw` index
-- reply (the lock exists), and the queue's `head` when it read it; then
-- fair_release_handover.lua handed the lock to that head when its entry is live and well
-- formed and the counter usual, and otherwise wrote nothing.
local key, counter, queue, entries = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
-- Foreign data raises its error here, before anything is written.
pttl, raw = redfour_judge(key, pttl, raw)
-- The caller's index is compared as a string, as in release.lua.
local stored = tonumber(raw)
if raw ~= ARGV[1] then
  return {0, 'conflict', stored}
end
if ARGV[4] and redis.call('HGET', key, 'handoff') ~= ARGV[4] then
  return {0, 'conflict', stored}
end
-- Everything that can fail on foreign data (the queue's keys, the counter) runs before the
-- lock is deleted.
local entry, now_us
head, entry, now_us = redfour_live_head(queue, entries, nil, head)
now_us = now_us or redfour_now_us()
local choice, turn_state = redfour_outsiders_turn(ARGV[2], queue, entries,
  math.floor(now_us / 1000), stored, head)
if choice == 'turn' then
  redfour_turn_write(queue, entries, turn_state)
  redis.call('DEL', key)
  redfour_publish(ARGV[2], key)
elseif choice == 'keep' then
  -- A counter the scripts refuse makes this a plain release, as it was before the outsiders
  -- came: releasing needs no index.
  local ok, index = pcall(redfour_next_index, key, counter, now_us)
  if ok then
    turn_state.kept = index
    redfour_turn_write(queue, entries, turn_state)
    redfour_keep_for_queue(key, index, now_us)
  else
    redfour_turn_write(queue, entries, turn_state)
    redis.call('DEL', key)
  end
  redfour_publish(ARGV[2], key)
elseif head then
  local index = redfour_next_index(key, counter, now_us)
  redfour_handoff(key, queue, entries, head, entry, now_us, tonumber(ARGV[3]), index)
  if turn_state then
    redfour_turn_write(queue, entries, turn_state)
  end
else
  if turn_state then
    redfour_turn_write(queue, entries, turn_state)
  end
  redis.call('DEL', key)
  -- Nobody live queues (every entry was dead, a waiter passes on an unclaimed lock with
  -- nobody behind it, or outsiders are about and neither side is owed): wake everyone
  -- listening, as Node redfour does.
  redfour_publish(ARGV[2], key)
end
return {1, 'released', stored}
