//! A client's settings once built, and the identity it writes into the locks it holds.

use std::time::Duration;

/// How the Redis deployment behind a [`Client`](crate::Client) is laid out, and so how the client reaches it.
///
/// Every topology offers the same API and the same answers; what differs is what survives a
/// fault (see the README's section per topology).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Topology {
    /// One Redis server (the default): Node redfour's key layout, wire-compatible with it.
    Standalone,
    /// A master and its replicas watched by Redis Sentinel: the addresses are the sentinels',
    /// and the client follows the master they name, through failovers. Node redfour's layout.
    Sentinel {
        /// The name the sentinels monitor the master under (`sentinel monitor <name> …`).
        service: String,
    },
    /// Redis Cluster: the addresses are seed nodes. Every key of one lock shares a hash tag
    /// (`{namespace:id}`) and notices go out on sharded pub/sub, so this layout is not Node
    /// redfour's (which cannot run on a cluster anyway). Needs Redis 7.
    Cluster,
    /// The Redlock algorithm over independent masters (no replication between them): a lock is
    /// held when a majority of them granted it in time. Node redfour's layout on each master.
    Redlock,
}

impl Topology {
    /// The name used on the command line: `standalone`, `sentinel`, `cluster` or `redlock`.
    pub fn name(&self) -> &'static str {
        match self {
            Topology::Standalone => "standalone",
            Topology::Sentinel { .. } => "sentinel",
            Topology::Cluster => "cluster",
            Topology::Redlock => "redlock",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Duration,
    pub(crate) reconnect_retries: usize,
    pub(crate) max_poll: Duration,
    pub(crate) fair: bool,
    pub(crate) claim_window: Duration,
    /// `WAIT` for this many replicas (and this long) after an acquire; 0 for no wait.
    pub(crate) replica_acks: u32,
    pub(crate) replica_ack_timeout: Duration,
    /// Redlock: how long one master may take to answer one step.
    pub(crate) node_timeout: Duration,
    /// The margin taken off every lease.
    pub(crate) drift: crate::keys::Drift,
    /// Metrics carry the lock's key as the `lock` attribute.
    #[cfg(feature = "metrics")]
    pub(crate) metric_lock_names: bool,
}

impl Config {
    /// How long a fair-queue entry lives on the server without a refresh: waiters refresh it
    /// at every attempt, at least every `max_poll`.
    pub(crate) fn entry_lifetime(&self) -> Duration {
        self.max_poll * 3
    }
}

/// What the lock hash says about the process that holds it.
#[derive(Debug, Clone)]
pub(crate) struct HolderIdentity {
    pub(crate) host: String,
    pub(crate) pid: u32,
}

impl HolderIdentity {
    pub(crate) fn of_this_process() -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .or_else(|| std::env::var("COMPUTERNAME").ok())
            .unwrap_or_else(|| "unknown".to_owned());
        HolderIdentity {
            host,
            pid: std::process::id(),
        }
    }
}
