//! Where the notification hub subscribes, as each engine decides it. The hub asks nothing
//! about the topology: it runs one subscriber per [`SubServer`] (to the namespace's channels)
//! and, when the engine says so, one sharded subscriber for per-lock channels.

use std::sync::Arc;
use std::time::Duration;

use redis::RedisResult;
use tokio::sync::watch;

use super::conn::SentinelShared;
use super::FairSetup;

/// What the hub subscribes to, and, with the fair queue, what it needs to tidy up after
/// waiters that left.
pub(crate) struct Subscriptions {
    /// One subscriber each, to the namespace's channels: the one server, the master the
    /// sentinels name, or each Redlock master (all feeding the same waiters).
    pub(crate) servers: Vec<SubServer>,
    /// A cluster: each lock with waiters has its own sharded channels, subscribed through one
    /// cluster connection that follows the slots.
    pub(crate) sharded: Option<redis::cluster::ClusterClientBuilder>,
    pub(crate) fair: Option<FairSetup>,
}

/// A server one subscriber connects to: a fixed address, or the master the sentinels name,
/// looked up again at every reconnection.
pub(crate) struct SubServer(Where);

// One per subscriber task.
#[allow(clippy::large_enum_variant)]
enum Where {
    Fixed(redis::Client),
    Sentinel(Arc<SentinelShared>),
}

impl SubServer {
    pub(crate) fn fixed(client: redis::Client) -> SubServer {
        SubServer(Where::Fixed(client))
    }

    pub(crate) fn sentinel(shared: Arc<SentinelShared>) -> SubServer {
        SubServer(Where::Sentinel(shared))
    }

    /// Changes when the server moves (a failover the sentinels announce), so that the
    /// subscriber ends its session and subscribes at the new one; `None` for a server that
    /// never moves. Call it before [`locate`](Self::locate), so that a move in between counts.
    /// Inside a Tokio runtime.
    pub(crate) fn moves(&self) -> Option<watch::Receiver<u64>> {
        match &self.0 {
            Where::Fixed(_) => None,
            Where::Sentinel(sentinel) => {
                sentinel.watch_failovers();
                Some(sentinel.switches())
            }
        }
    }

    /// A client for the server to subscribe to now.
    pub(crate) async fn locate(&self, limit: Duration) -> RedisResult<redis::Client> {
        match &self.0 {
            Where::Fixed(client) => Ok(client.clone()),
            Where::Sentinel(sentinel) => {
                match tokio::time::timeout(limit, sentinel.master_client()).await {
                    Ok(found) => found,
                    Err(_) => Err(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "the sentinels did not answer in time",
                    ))),
                }
            }
        }
    }

    /// A session that was up has dropped. The master may have moved (a failover drops its
    /// clients): the commands ask the sentinels again too, instead of finding out by a failure.
    pub(crate) fn session_ended(&self) {
        match &self.0 {
            Where::Fixed(_) => {}
            Where::Sentinel(sentinel) => sentinel.forget(),
        }
    }
}
