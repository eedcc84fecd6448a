-- Notices go out with SPUBLISH (Redis Cluster: sharded pub/sub, the channel in the lock's slot).
local function redfour_publish(channel, message)
  redis.call('SPUBLISH', channel, message)
end
-- Node redfour does not run on a cluster, and every client here queues: no outsiders' turns.
local redfour_outsiders_listen = false
