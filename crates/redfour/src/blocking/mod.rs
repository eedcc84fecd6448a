//! The synchronous facade: the same names as the async API, for code without an async runtime.
//!
//! A [`Client`] owns a small Tokio runtime with one worker thread. That thread drives the
//! connections and the background work (the waiters' subscription, keep-alive renewals);
//! each call blocks the calling thread until its answer arrives.
//!
//! # Panics
//!
//! Every blocking call panics when made from inside an async runtime (as Tokio's `block_on`
//! does): in async code, use the async API of the crate root instead.
//!
//! # Examples
//!
//! ```no_run
//! use std::time::Duration;
//!
//! let locks = redfour::blocking::Client::new("redis://127.0.0.1:6379/")?;
//! let guard = locks
//!     .lock("token-refresh")
//!     .ttl(Duration::from_secs(30))
//!     .wait(Duration::from_secs(10))
//!     .acquire()?;
//! println!("holding with index {}", guard.index());
//! guard.release()?;
//! # Ok::<(), redfour::Error>(())
//! ```

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;

use crate::error::{Error, ErrorKind, Result};
use crate::guard::LeaseLost;
use crate::node::{AcquireResponse, ReleaseResponse, RenewResponse};
use crate::outcome::LockStatus;

#[derive(Debug)]
struct Rt(Option<Runtime>);

impl Rt {
    fn block_on<F: Future>(&self, fut: F) -> F::Output {
        match &self.0 {
            Some(rt) => rt.block_on(fut),
            None => unreachable!("the runtime is only taken in drop"),
        }
    }
}

impl Drop for Rt {
    fn drop(&mut self) {
        // Dropping a runtime waits for its tasks, which Tokio forbids inside another runtime
        // (the last handle may well be dropped from async code): shut down without waiting.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Builds a blocking [`Client`]; the same settings as [`crate::ClientBuilder`].
#[must_use = "a builder does nothing until `build()` is called"]
#[derive(Debug)]
pub struct ClientBuilder {
    inner: crate::ClientBuilder,
}

impl ClientBuilder {
    /// See [`crate::ClientBuilder::namespace`]. Default: `"lock"`.
    pub fn namespace(self, namespace: impl Into<String>) -> Self {
        ClientBuilder {
            inner: self.inner.namespace(namespace),
        }
    }

    /// See [`crate::ClientBuilder::connect_timeout`]. Default: 2 s.
    pub fn connect_timeout(self, timeout: Duration) -> Self {
        ClientBuilder {
            inner: self.inner.connect_timeout(timeout),
        }
    }

    /// See [`crate::ClientBuilder::response_timeout`]. Default: 3 s.
    pub fn response_timeout(self, timeout: Duration) -> Self {
        ClientBuilder {
            inner: self.inner.response_timeout(timeout),
        }
    }

    /// See [`crate::ClientBuilder::reconnect_retries`]. Default: 3.
    pub fn reconnect_retries(self, retries: usize) -> Self {
        ClientBuilder {
            inner: self.inner.reconnect_retries(retries),
        }
    }

    /// See [`crate::ClientBuilder::max_poll_interval`]. Default: 2 s.
    pub fn max_poll_interval(self, interval: Duration) -> Self {
        ClientBuilder {
            inner: self.inner.max_poll_interval(interval),
        }
    }

    /// See [`crate::ClientBuilder::fair`]: waiters queue in FIFO order and a release hands the
    /// lock straight to the first of them. Default: on.
    pub fn fair(self, on: bool) -> Self {
        ClientBuilder {
            inner: self.inner.fair(on),
        }
    }

    /// See [`crate::ClientBuilder::claim_window`]. Default: 5 s.
    pub fn claim_window(self, window: Duration) -> Self {
        ClientBuilder {
            inner: self.inner.claim_window(window),
        }
    }

    /// See [`crate::ClientBuilder::replica_acks`]: `WAIT` for `replicas` acknowledgements after
    /// each acquire. Default: 0 (no wait).
    pub fn replica_acks(self, replicas: u32, timeout: Duration) -> Self {
        ClientBuilder {
            inner: self.inner.replica_acks(replicas, timeout),
        }
    }

    /// See [`crate::ClientBuilder::master_credentials`] (Sentinel). Default: the first
    /// sentinel address's credentials.
    pub fn master_credentials(self, username: Option<&str>, password: impl Into<String>) -> Self {
        ClientBuilder {
            inner: self.inner.master_credentials(username, password),
        }
    }

    /// See [`crate::ClientBuilder::node_timeout`] (Redlock). Default: 500 ms.
    pub fn node_timeout(self, timeout: Duration) -> Self {
        ClientBuilder {
            inner: self.inner.node_timeout(timeout),
        }
    }

    /// See [`crate::ClientBuilder::clock_drift`]. Default: 0.01 and 2 ms.
    pub fn clock_drift(self, share: f64, fixed: Duration) -> Self {
        ClientBuilder {
            inner: self.inner.clock_drift(share, fixed),
        }
    }

    /// See [`crate::ClientBuilder::tls_root_certificates`]: trust these PEM certificate
    /// authorities, and only these, for a `rediss://` URL.
    ///
    /// # Errors
    ///
    /// [`build`](ClientBuilder::build) reports [`ErrorKind::InvalidInput`] for PEM data without
    /// a usable certificate, a URL that is not `rediss://`, or a builder from
    /// [`Client::from_redis_client`].
    ///
    /// Default: none (the system's root certificates).
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls_root_certificates(self, pem: impl Into<Vec<u8>>) -> Self {
        ClientBuilder {
            inner: self.inner.tls_root_certificates(pem),
        }
    }

    /// Checks the settings, starts the runtime thread and creates the client. No connection
    /// is opened yet.
    ///
    /// # Errors
    ///
    /// As [`crate::ClientBuilder::build`]; [`ErrorKind::Unavailable`] if the runtime thread
    /// cannot be started.
    pub fn build(self) -> Result<Client> {
        let inner = self.inner.build()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("redfour-blocking")
            .enable_all()
            .build()
            .map_err(|e| {
                Error::new(ErrorKind::Unavailable, "cannot start the runtime thread").with_source(e)
            })?;
        Ok(Client {
            inner,
            rt: Arc::new(Rt(Some(rt))),
        })
    }
}

/// A blocking handle to a Redis server; see [`crate::Client`]. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: crate::Client,
    rt: Arc<Rt>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("blocking::Client")
            .field(&self.inner)
            .finish()
    }
}

impl Client {
    /// A client for the Redis at `url`; see [`crate::Client::new`].
    ///
    /// # Errors
    ///
    /// As [`ClientBuilder::build`].
    pub fn new(url: &str) -> Result<Client> {
        Client::builder(url).build()
    }

    /// A builder for a client of the Redis at `url`.
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            inner: crate::Client::builder(url),
        }
    }

    /// A builder for a client of the given topology at these addresses; see
    /// [`crate::Client::builder_with_topology`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use redfour::blocking::Client;
    /// use redfour::Topology;
    /// # fn example() -> redfour::Result<()> {
    /// let locks = Client::builder_with_topology(
    ///     Topology::Redlock,
    ///     ["redis://10.0.2.1:6379", "redis://10.0.2.2:6379", "redis://10.0.2.3:6379"],
    /// )
    /// .build()?;
    /// let guard = locks.lock("rotate-keys").acquire()?;
    /// guard.release()?;
    /// # Ok(()) }
    /// ```
    pub fn builder_with_topology<I, S>(topology: crate::Topology, urls: I) -> ClientBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientBuilder {
            inner: crate::Client::builder_with_topology(topology, urls),
        }
    }

    /// A builder for a client that follows the master these sentinels monitor as `service`.
    pub fn sentinel<I, S>(sentinels: I, service: impl Into<String>) -> ClientBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientBuilder {
            inner: crate::Client::sentinel(sentinels, service),
        }
    }

    /// A builder for a client of the Redis Cluster reached through these seed nodes.
    pub fn cluster<I, S>(seeds: I) -> ClientBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientBuilder {
            inner: crate::Client::cluster(seeds),
        }
    }

    /// A builder for a Redlock client over these independent masters.
    pub fn redlock<I, S>(masters: I) -> ClientBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientBuilder {
            inner: crate::Client::redlock(masters),
        }
    }

    /// A builder that reuses the settings of an existing [`redis::Client`].
    pub fn from_redis_client(client: redis::Client) -> ClientBuilder {
        ClientBuilder {
            inner: crate::Client::from_redis_client(client),
        }
    }

    /// The namespace of this client's keys.
    pub fn namespace(&self) -> &str {
        self.inner.namespace()
    }

    /// Where this client connects, password redacted.
    pub fn address(&self) -> &str {
        self.inner.address()
    }

    /// Waits until the clean-up this client runs in the background (releases of dropped
    /// guards, queue exits of abandoned waits) is done, or `limit` has passed; `true` when
    /// nothing is left pending. See [`crate::Client::settle`].
    ///
    /// # Panics
    ///
    /// When called inside an async runtime.
    pub fn settle(&self, limit: std::time::Duration) -> bool {
        self.rt.block_on(self.inner.settle(limit))
    }

    /// A snapshot of this client's activity (waits registered, notices, renewals, leases
    /// lost, …); see [`crate::Client::stats`]. Never touches Redis and never blocks on I/O, so
    /// it may be called anywhere, inside an async runtime too.
    pub fn stats(&self) -> crate::Stats {
        self.inner.stats()
    }

    /// Opens the command connection and sends `PING`; see [`crate::Client::ping`].
    ///
    /// # Errors
    ///
    /// As [`crate::Client::ping`].
    ///
    /// # Panics
    ///
    /// When called inside an async runtime.
    pub fn ping(&self) -> Result<()> {
        self.rt.block_on(self.inner.ping())
    }

    /// Node's `acquireLock`; see [`crate::Client::acquire_lock`].
    ///
    /// # Errors
    ///
    /// As [`crate::Client::acquire_lock`].
    ///
    /// # Panics
    ///
    /// When called inside an async runtime.
    pub fn acquire_lock(&self, id: &str, ttl: Duration) -> Result<AcquireResponse> {
        self.rt.block_on(self.inner.acquire_lock(id, ttl))
    }

    /// Node's `waitAcquireLock`; see [`crate::Client::wait_acquire_lock`].
    ///
    /// # Errors
    ///
    /// As [`crate::Client::wait_acquire_lock`].
    ///
    /// # Panics
    ///
    /// When called inside an async runtime.
    pub fn wait_acquire_lock(
        &self,
        id: &str,
        ttl: Duration,
        wait: Option<Duration>,
    ) -> Result<AcquireResponse> {
        self.rt
            .block_on(self.inner.wait_acquire_lock(id, ttl, wait))
    }

    /// Node's `releaseLock`; see [`crate::Client::release_lock`].
    ///
    /// # Errors
    ///
    /// As [`crate::Client::release_lock`].
    ///
    /// # Panics
    ///
    /// When called inside an async runtime.
    pub fn release_lock(&self, id: &str, index: i64) -> Result<ReleaseResponse> {
        self.rt.block_on(self.inner.release_lock(id, index))
    }

    /// Node's `renewLock`; see [`crate::Client::renew_lock`].
    ///
    /// # Errors
    ///
    /// As [`crate::Client::renew_lock`].
    ///
    /// # Panics
    ///
    /// When called inside an async runtime.
    pub fn renew_lock(&self, id: &str, index: i64, ttl: Duration) -> Result<RenewResponse> {
        self.rt.block_on(self.inner.renew_lock(id, index, ttl))
    }

    /// Who holds the lock; see [`crate::Client::status`].
    ///
    /// # Errors
    ///
    /// As [`crate::Client::status`].
    ///
    /// # Panics
    ///
    /// When called inside an async runtime.
    pub fn status(&self, id: &str) -> Result<LockStatus> {
        self.rt.block_on(self.inner.status(id))
    }

    /// Every lock held in the namespace, and the foreign keys where it keeps its locks; see
    /// [`crate::Client::list`].
    ///
    /// # Errors
    ///
    /// As [`crate::Client::list`].
    ///
    /// # Panics
    ///
    /// When called inside an async runtime.
    pub fn list(&self) -> Result<Vec<crate::Listing>> {
        self.rt.block_on(self.inner.list())
    }

    /// Starts building a lock on `id`; see [`crate::Client::lock`].
    pub fn lock(&self, id: impl Into<String>) -> LockBuilder {
        LockBuilder {
            inner: self.inner.lock(id),
            rt: self.rt.clone(),
        }
    }
}

/// Settings for taking one lock; see [`crate::LockBuilder`].
#[must_use = "a lock builder does nothing until `acquire()` or `try_acquire()` is called"]
#[derive(Debug)]
pub struct LockBuilder {
    inner: crate::LockBuilder,
    rt: Arc<Rt>,
}

impl LockBuilder {
    /// See [`crate::LockBuilder::ttl`]. Default: 30 s.
    pub fn ttl(self, ttl: Duration) -> Self {
        LockBuilder {
            inner: self.inner.ttl(ttl),
            rt: self.rt,
        }
    }

    /// See [`crate::LockBuilder::wait`]; zero means forever. Default: forever.
    pub fn wait(self, wait: Duration) -> Self {
        LockBuilder {
            inner: self.inner.wait(wait),
            rt: self.rt,
        }
    }

    /// See [`crate::LockBuilder::keep_alive`]; the renewals run on the client's runtime thread.
    /// Default: off.
    pub fn keep_alive(self, on: bool) -> Self {
        LockBuilder {
            inner: self.inner.keep_alive(on),
            rt: self.rt,
        }
    }

    /// See [`crate::LockBuilder::description`]. Default: none.
    pub fn description(self, description: impl Into<String>) -> Self {
        LockBuilder {
            inner: self.inner.description(description),
            rt: self.rt,
        }
    }

    /// Acquires the lock, waiting as configured; see [`crate::LockBuilder::acquire`].
    ///
    /// # Errors
    ///
    /// As [`crate::LockBuilder::acquire`].
    ///
    /// # Panics
    ///
    /// When called inside an async runtime.
    pub fn acquire(self) -> Result<LockGuard> {
        let guard = self.rt.block_on(self.inner.acquire())?;
        Ok(LockGuard {
            inner: Some(guard),
            rt: self.rt,
        })
    }

    /// One attempt, no waiting; see [`crate::LockBuilder::try_acquire`].
    ///
    /// # Errors
    ///
    /// As [`crate::LockBuilder::try_acquire`].
    ///
    /// # Panics
    ///
    /// When called inside an async runtime.
    pub fn try_acquire(self) -> Result<Option<LockGuard>> {
        let guard = self.rt.block_on(self.inner.try_acquire())?;
        Ok(guard.map(|g| LockGuard {
            inner: Some(g),
            rt: self.rt,
        }))
    }
}

/// A held lock; see [`crate::LockGuard`].
///
/// Dropping it releases the lock before `drop` returns (one round trip; if that fails the
/// lock stays until its ttl ends).
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard {
    // `None` only after `release` took it.
    inner: Option<crate::LockGuard>,
    rt: Arc<Rt>,
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Some(g) => f.debug_tuple("blocking::LockGuard").field(g).finish(),
            None => f.write_str("blocking::LockGuard(released)"),
        }
    }
}

impl LockGuard {
    fn guard(&self) -> &crate::LockGuard {
        // Only `release` (which consumes self) and `drop` take the inner guard.
        self.inner
            .as_ref()
            .unwrap_or_else(|| unreachable!("the guard is present until released"))
    }

    /// The lock id.
    pub fn id(&self) -> &str {
        self.guard().id()
    }

    /// The fencing index; see [`crate::LockGuard::index`].
    pub fn index(&self) -> i64 {
        self.guard().index()
    }

    /// The ttl the lock was acquired or last renewed with; see [`crate::LockGuard::ttl`].
    pub fn ttl(&self) -> Duration {
        self.guard().ttl()
    }

    /// Whether the first attempt won.
    pub fn acquired_immediately(&self) -> bool {
        self.guard().acquired_immediately()
    }

    /// The end of the lease on the monotonic clock; see [`crate::LockGuard::deadline`].
    pub fn deadline(&self) -> Instant {
        self.guard().deadline()
    }

    /// Time left until the deadline.
    pub fn remaining(&self) -> Duration {
        self.guard().remaining()
    }

    /// Why the lease is over, if it is.
    pub fn lost_reason(&self) -> Option<LeaseLost> {
        self.guard().lost_reason()
    }

    /// Whether the lease is over.
    pub fn is_lost(&self) -> bool {
        self.guard().is_lost()
    }

    /// Blocks until the lease is lost or `timeout` passes; `None` when the lease is still
    /// healthy after `timeout`. See [`crate::LockGuard::lost`].
    ///
    /// # Panics
    ///
    /// When called inside an async runtime.
    pub fn wait_lost(&self, timeout: Duration) -> Option<LeaseLost> {
        let lost = self.guard().lost();
        self.rt
            .block_on(async { tokio::time::timeout(timeout, lost).await.ok() })
    }

    /// Renews with the guard's ttl; see [`crate::LockGuard::renew`].
    ///
    /// # Errors
    ///
    /// As [`crate::LockGuard::renew`].
    ///
    /// # Panics
    ///
    /// When called inside an async runtime.
    pub fn renew(&self) -> Result<RenewResponse> {
        self.rt.block_on(self.guard().renew())
    }

    /// Renews with another ttl; see [`crate::LockGuard::renew_with`].
    ///
    /// # Errors
    ///
    /// As [`crate::LockGuard::renew_with`].
    ///
    /// # Panics
    ///
    /// When called inside an async runtime.
    pub fn renew_with(&self, ttl: Duration) -> Result<RenewResponse> {
        self.rt.block_on(self.guard().renew_with(ttl))
    }

    /// Releases the lock; see [`crate::LockGuard::release`].
    ///
    /// # Errors
    ///
    /// As [`crate::LockGuard::release`].
    ///
    /// # Panics
    ///
    /// When called inside an async runtime.
    pub fn release(mut self) -> Result<ReleaseResponse> {
        let guard = self
            .inner
            .take()
            .unwrap_or_else(|| unreachable!("the guard is present until released"));
        self.rt.block_on(guard.release())
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let Some(guard) = self.inner.take() else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            // Dropped inside some runtime: blocking here would panic, so let the async guard
            // schedule its background release.
            drop(guard);
            return;
        }
        if let Err(e) = self.rt.block_on(guard.release()) {
            tracing::warn!(error = %e.report(), "release on drop failed; the lock will expire by its ttl");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_send_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Client>();
        assert_send_sync::<LockGuard>();
        assert_send_sync::<LockBuilder>();
    }
}
