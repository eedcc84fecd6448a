//! The engine seam: where a lock's state lives, and how one operation reaches it.
//!
//! Every topology decision of the crate is made here, by a `match` on [`Engine`]:
//! - [`Direct`]: the lock lives on one Redis master, reached directly (one server), through
//!   the sentinels (the master they name) or through a cluster (the master of the lock's
//!   slot). One script call per operation, and `WAIT` for replicas on a connection of its own
//!   when asked for.
//! - [`Quorum`]: Redlock, the lock held when a majority of independent masters granted it in
//!   time; each master is a `Direct` engine of its own.
//!
//! Above the seam, the wait loop, handoff claims, the guard and its keep-alive are written
//! once, against [`Engine`]: they never ask which topology they run on. Below it, the key
//! layout ([`crate::keys`]) and the scripts ([`crate::scripts`]).
//!
//! Future primitives (shared locks, counting semaphores) add operations here, with one
//! implementation per engine, and reuse everything above the seam.

mod build;
mod conn;
mod direct;
mod list;
mod quorum;
mod subscribe;

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) use build::{describe_connection, describe_urls, Plan};
pub(crate) use conn::{Conn, SentinelShared};
pub(crate) use direct::{cluster_builder, Direct, Master};
pub(crate) use quorum::Quorum;
pub(crate) use subscribe::{SubServer, Subscriptions};

use crate::cleanup::Cleanup;
use crate::config::{Config, HolderIdentity};
use crate::error::{Error, ErrorKind, Result};
use crate::keys::{ttl_millis, Layout, Namespace};
use crate::outcome::{LockStatus, ReleaseOutcome, RenewOutcome};

/// What the fair queue needs from the hub: where handoffs arrive, and a connection on which to
/// tidy up after waiters that left (leave the queue, pass on a lock handed to a waiter that
/// is gone).
pub(crate) struct FairSetup {
    /// The client's own handoff channel; `None` in the cluster layout, where each lock has
    /// one.
    pub(crate) handoff_channel: Option<String>,
    pub(crate) client_token: String,
    pub(crate) conn: Conn,
    pub(crate) claim_window_ms: u64,
}

/// Acquire attempts one client keeps in flight at most.
const MAX_ATTEMPTS_IN_FLIGHT: usize = 256;

/// What every engine of one client shares: settings, names, the identity written into the
/// locks it holds, and its count of clean-up work.
pub(crate) struct Context {
    pub(crate) ns: Namespace,
    pub(crate) config: Config,
    pub(crate) holder: HolderIdentity,
    /// Names this client's handoff channel and its waiters in fair queues.
    pub(crate) token: String,
    /// `{ns}-handoff:{token}` (Node layout; per lock in the cluster layout).
    handoff_channel: String,
    /// Numbers this client's acquire attempts.
    pub(crate) attempts: AtomicU64,
    /// Bounds the acquire attempts in flight: thousands of waiters starting at once queue here
    /// instead of all holding a request buffer in the connection's pipeline.
    pub(crate) attempt_slots: tokio::sync::Semaphore,
    /// Bounds the attempts started through [`Engine::attempt`] at once, before their state is
    /// allocated: see there. Taken before (never while holding) an `attempt_slots` permit.
    attempts_started: tokio::sync::Semaphore,
    /// Clean-up work running in the background, for [`Client::settle`](crate::Client::settle).
    pub(crate) cleanup: Arc<Cleanup>,
    /// The counters behind [`Client::stats`](crate::Client::stats), shared with the guards'
    /// leases.
    pub(crate) counters: Arc<crate::stats::Counters>,
}

impl Context {
    pub(crate) fn new(ns: Namespace, config: Config, token: String) -> Context {
        let handoff_channel = match ns.layout() {
            Layout::Node => ns.handoff_channel(&token, "").into_owned(),
            // Per lock in the cluster layout; see `handoff_channel_for`.
            Layout::Cluster => String::new(),
        };
        Context {
            ns,
            config,
            holder: HolderIdentity::of_this_process(),
            token,
            handoff_channel,
            attempts: AtomicU64::new(0),
            attempt_slots: tokio::sync::Semaphore::new(MAX_ATTEMPTS_IN_FLIGHT),
            attempts_started: tokio::sync::Semaphore::new(MAX_ATTEMPTS_IN_FLIGHT),
            cleanup: Arc::default(),
            counters: Arc::default(),
        }
    }

    /// The channel on which this client hears that the lock at `key` was handed to one of its
    /// waiters.
    pub(crate) fn handoff_channel_for<'a>(&'a self, key: &str) -> std::borrow::Cow<'a, str> {
        match self.ns.layout() {
            Layout::Node => std::borrow::Cow::Borrowed(&self.handoff_channel),
            Layout::Cluster => self.ns.handoff_channel(&self.token, key),
        }
    }
}

/// The result of one acquire attempt on the server.
#[derive(Debug)]
pub(crate) enum Attempt {
    Acquired {
        index: i64,
        ttl: Duration,
        /// When the attempt was sent: the lease is counted from here.
        sent: Instant,
    },
    /// Fair queue: the lock had already been handed to this waiter (its notice was lost or is
    /// still in flight); `pttl` is what is left of the claim window.
    HandedOver {
        index: i64,
        pttl: Duration,
        sent: Instant,
    },
    Held {
        pttl: Duration,
        sent: Instant,
        /// The holder's index, when the script tells it (fair queue).
        holder: Option<i64>,
    },
    /// Granted, but the answer came after the lock's validity had run out: what was granted
    /// is released (or being released), and nobody holds the lock for this attempt.
    WonTooLate {
        sent: Instant,
        /// The index granted and given up, when one server granted it.
        index: Option<i64>,
        /// [`ErrorKind::ValidityExpired`], saying how late.
        error: Error,
    },
    /// With Redlock, a waiting acquire's last attempt ran out of time before enough masters
    /// answered to decide it (anything granted is released).
    Undecided,
}

/// Holder metadata written into the lock hash.
#[derive(Clone, Default)]
pub(crate) struct Meta {
    pub(crate) description: Option<Arc<str>>,
}

/// An attempt with no cutoff cannot be cut off; should one be, it is a failure to retry.
pub(crate) fn undecided(key: &str) -> Error {
    Error::new(
        ErrorKind::Timeout,
        "the Redlock masters did not decide the acquire in time; anything granted was released",
    )
    .with_key(key)
}

/// Where a client's locks live. One per client; a state that cannot exist (a Redlock client
/// with replica acknowledgements, or with a fair queue) cannot be built.
pub(crate) enum Engine {
    Direct(Direct),
    Quorum(Quorum),
}

impl Engine {
    /// What the engine's servers share with the client.
    pub(crate) fn context(&self) -> &Arc<Context> {
        match self {
            Engine::Direct(direct) => direct.ctx_arc(),
            Engine::Quorum(quorum) => quorum.ctx_arc(),
        }
    }

    /// Whether waiters queue fairly (and get locks handed over). Redlock has no fair queue: its
    /// masters cannot agree on a queue's order.
    pub(crate) fn fair(&self) -> bool {
        match self {
            Engine::Direct(direct) => direct.ctx().config.fair,
            Engine::Quorum(_) => false,
        }
    }

    /// A handed-over lock must be claimed (acknowledged by replicas) before it counts as held.
    pub(crate) fn claims_now(&self) -> bool {
        match self {
            Engine::Direct(direct) => direct.acknowledged(),
            Engine::Quorum(_) => false,
        }
    }

    /// A ttl to acquire with, in ms: within the bounds, and with Redlock long enough to leave
    /// a validity after the drift margin.
    pub(crate) fn acquire_ttl(&self, ttl: Duration) -> Result<u64> {
        let ttl_ms = ttl_millis(ttl)?;
        if let Engine::Quorum(quorum) = self {
            quorum.check_ttl(ttl)?;
        }
        Ok(ttl_ms)
    }

    /// One attempt, safe to cancel: if the caller goes away while the request is in flight
    /// (or the request fails in transit) and the attempt won, the lock is released rather
    /// than left to expire.
    ///
    /// `token`: the waiter's place in the fair queue. `cutoff` (Redlock only; a waiting
    /// acquire's end): past it, masters that have not answered yet are not waited for.
    ///
    /// An attempt's state (the request, the connection, its clean-up: some 2.5 KB) lives in a
    /// box allocated only once the attempt may start, so that the futures holding this one
    /// (every waiter's, parked between attempts) stay small, and thousands of waiters making
    /// their first attempt together queue for a permit without that state.
    // Not an `async fn`, which would keep its arguments twice in its state
    // (rust-lang/rust#62958), in every waiter's future.
    #[allow(clippy::manual_async_fn)]
    pub(crate) fn attempt<'a>(
        &'a self,
        key: &'a str,
        ttl_ms: u64,
        meta: &'a Meta,
        token: Option<&'a str>,
        cutoff: Option<Instant>,
    ) -> impl Future<Output = Result<Attempt>> + 'a {
        async move {
            // Never closed; without a permit the attempts would only go unbounded.
            let _started = self.context().attempts_started.acquire().await.ok();
            match self {
                Engine::Direct(direct) => {
                    Box::pin(direct.attempt(key, ttl_ms, meta, token, true)).await
                }
                Engine::Quorum(quorum) => Box::pin(quorum.attempt(key, ttl_ms, meta, cutoff)).await,
            }
        }
    }

    /// Releases the lock at `key` if `index` holds it; the answer and the index found.
    ///
    /// Boxed, as an attempt is (see [`attempt`](Engine::attempt)): a task that waits for a
    /// lock and then releases it holds this future's state beside the wait's all along.
    pub(crate) async fn release(&self, key: &str, index: i64) -> Result<(ReleaseOutcome, i64)> {
        match self {
            Engine::Direct(direct) => Box::pin(direct.release(key, index)).await,
            Engine::Quorum(quorum) => Box::pin(quorum.release(key, index)).await,
        }
    }

    /// Resets the lock's expiry to `ttl_ms` if `index` holds it.
    pub(crate) async fn renew(&self, key: &str, index: i64, ttl_ms: u64) -> Result<RenewOutcome> {
        match self {
            Engine::Direct(direct) => direct.renew(key, index, ttl_ms).await,
            Engine::Quorum(quorum) => quorum.renew(key, index, ttl_ms).await,
        }
    }

    /// Claims a lock handed to this client: a renewal, acknowledged by replicas when the
    /// client asks for acknowledgements.
    pub(crate) async fn claim(&self, key: &str, index: i64, ttl_ms: u64) -> Result<RenewOutcome> {
        match self {
            Engine::Direct(direct) => direct.claim(key, index, ttl_ms).await,
            Engine::Quorum(quorum) => quorum.renew(key, index, ttl_ms).await,
        }
    }

    /// Who holds the lock `id` (at `key`).
    pub(crate) async fn status(&self, id: &str, key: &str) -> Result<LockStatus> {
        match self {
            Engine::Direct(direct) => direct.status(id, key).await,
            Engine::Quorum(quorum) => quorum.status(id, key).await,
        }
    }

    /// Every lock and foreign key of the namespace (see [`Client::list`](crate::Client::list)).
    pub(crate) async fn list(&self) -> Result<Vec<crate::list::Listing>> {
        match self {
            Engine::Direct(direct) => direct.list().await,
            Engine::Quorum(quorum) => quorum.list().await,
        }
    }

    /// The lock `id` (at `key`) as a listing shows it, and the place in its queue of the
    /// waiter `token` (none with Redlock, which has no queue).
    pub(crate) async fn peek(
        &self,
        id: &str,
        key: &str,
        token: Option<&str>,
    ) -> Result<crate::list::Seen> {
        match self {
            Engine::Direct(direct) => direct.peek(id, key, token).await,
            Engine::Quorum(quorum) => quorum.peek(id, key).await,
        }
    }

    /// Whether the servers answer (with Redlock, a majority of them).
    pub(crate) async fn ping(&self) -> Result<()> {
        match self {
            Engine::Direct(direct) => direct.ping().await,
            Engine::Quorum(quorum) => quorum.ping().await,
        }
    }

    /// Releases the lock at `key` held by `index` in the background (counted for `settle`).
    pub(crate) fn release_in_background(&self, key: &str, index: i64) {
        match self {
            Engine::Direct(direct) => direct.release_in_background(key, index),
            Engine::Quorum(quorum) => quorum.release_in_background(key, index),
        }
    }

    /// Takes the waiter `token` out of the lock's queue, best effort.
    pub(crate) async fn leave_queue(&self, key: &str, token: &str) {
        match self {
            Engine::Direct(direct) => direct.leave_queue(key, token).await,
            // No queue.
            Engine::Quorum(_) => {}
        }
    }

    /// Where the notification hub subscribes, and, with the fair queue, what it needs to tidy
    /// up after waiters that left.
    pub(crate) async fn subscriptions(&self) -> Result<Subscriptions> {
        match self {
            Engine::Direct(direct) => {
                let fair = if self.fair() {
                    Some(direct.fair_setup().await?)
                } else {
                    None
                };
                Ok(direct.subscriptions(fair))
            }
            // No fair queue: see `Engine::fair`.
            Engine::Quorum(quorum) => Ok(quorum.subscriptions()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Topology;

    /// An engine of `topology` over these addresses, built without contacting any server
    /// (connections are opened on first use).
    fn engine(topology: Topology, urls: &[&str], fair: bool, replica_acks: u32) -> Engine {
        let mut builder =
            crate::Client::builder_with_topology(topology, urls.iter().copied()).fair(fair);
        if replica_acks > 0 {
            builder = builder.replica_acks(replica_acks, Duration::from_millis(100));
        }
        let client = builder.build().expect("valid settings");
        let Ok(inner) = std::sync::Arc::try_unwrap(client.inner) else {
            panic!("a fresh client has one handle");
        };
        inner.into_engine()
    }

    /// A Redlock engine over three masters, asked for the fair queue.
    fn redlock() -> Engine {
        engine(
            Topology::Redlock,
            &[
                "redis://127.0.0.1:1/",
                "redis://127.0.0.1:2/",
                "redis://127.0.0.1:3/",
            ],
            true,
            0,
        )
    }

    #[test]
    fn each_topology_gets_its_engine_and_queue() {
        let one = engine(Topology::Standalone, &["redis://127.0.0.1:1/"], true, 0);
        assert!(matches!(one, Engine::Direct(_)) && one.fair() && !one.claims_now());
        let unfair = engine(Topology::Standalone, &["redis://127.0.0.1:1/"], false, 0);
        assert!(!unfair.fair());
        let sentinel = engine(
            Topology::Sentinel {
                service: "m".into(),
            },
            &["redis://127.0.0.1:1/"],
            true,
            1,
        );
        assert!(matches!(sentinel, Engine::Direct(_)) && sentinel.fair());
        assert!(
            sentinel.claims_now(),
            "acknowledged handoffs are claimed at once"
        );
        let cluster = engine(Topology::Cluster, &["redis://127.0.0.1:1/"], true, 0);
        assert!(matches!(cluster, Engine::Direct(_)) && cluster.fair());
        assert_eq!(cluster.context().ns.layout(), Layout::Cluster);
        // Redlock has no fair queue, whatever the setting: its masters cannot agree on one.
        let redlock = redlock();
        assert!(matches!(redlock, Engine::Quorum(_)));
        assert!(!redlock.fair() && !redlock.claims_now());
        assert!(!redlock.context().config.fair);
        assert_eq!(redlock.context().ns.layout(), Layout::Node);
    }

    #[test]
    fn only_redlock_refuses_ttls_the_drift_margin_eats() {
        let one = engine(Topology::Standalone, &["redis://127.0.0.1:1/"], true, 0);
        assert_eq!(one.acquire_ttl(Duration::from_millis(1)).ok(), Some(1));
        let redlock = redlock();
        let refused = redlock.acquire_ttl(Duration::from_millis(2)).unwrap_err();
        assert!(refused.is_invalid_input(), "{refused}");
        assert_eq!(redlock.acquire_ttl(Duration::from_secs(1)).ok(), Some(1000));
        for engine in [one, redlock] {
            assert!(engine
                .acquire_ttl(Duration::ZERO)
                .unwrap_err()
                .is_invalid_input());
        }
    }

    #[tokio::test]
    async fn a_quorum_has_no_queue_to_leave() {
        // Nothing is sent: the masters do not exist, and the call returns at once.
        let redlock = redlock();
        tokio::time::timeout(Duration::from_secs(1), redlock.leave_queue("lock:x", "t"))
            .await
            .expect("no round trip");
    }
}
