-- Notices go out with SPUBLISH (Redis Cluster: sharded pub/sub, the channel in the lock's slot).
local function redfour_publish(channel, message)
  redis.call('SPUBLISH', channel, message)
end
