//! The client handle and its builder.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OnceCell;

use crate::config::Config;
pub use crate::config::Topology;
use crate::engine::{describe_connection, describe_urls, Context, Engine, Plan};
use crate::error::{Error, Result};
use crate::hub::Hub;
use crate::list::{Listing, WaitProgress};
use crate::wait::Waiting;

/// The default namespace, the same as Node redfour's.
pub const DEFAULT_NAMESPACE: &str = "lock";

/// A cheap-to-clone handle to a Redis server, through which locks are taken.
///
/// A `Client` owns a fixed number of connections, whatever the number of locks and waiters:
/// on a single server, one multiplexed, reconnecting connection for commands, and (from the
/// first wait on) one subscription to the namespace's release channel, shared by all waiters.
/// Both are opened lazily, on first use; [`Client::ping`] opens the command connection
/// eagerly. With [`replica_acks`](ClientBuilder::replica_acks) acquires use a third; with
/// Sentinel each client also watches one sentinel for failovers (and briefly connects to the
/// sentinels to look the master up); on a cluster each of these is one connection per node,
/// replicas included, and with Redlock one per master. The crate docs' *Connections* section
/// has the table.
///
/// Clones share everything; the connections close when the last clone and the last
/// [`LockGuard`](crate::LockGuard) are gone.
///
/// # Examples
///
/// ```no_run
/// # async fn example() -> redfour::Result<()> {
/// let locks = redfour::Client::builder("redis://127.0.0.1:6379/")
///     .namespace("billing")
///     .build()?;
/// let guard = locks.lock("token-refresh").acquire().await?;
/// // ... refresh the token ...
/// guard.release().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<ClientInner>,
}

pub(crate) struct ClientInner {
    engine: Engine,
    ctx: Arc<Context>,
    hub: OnceCell<Hub>,
    address: String,
}

enum Source {
    Urls(Topology, Vec<String>),
    Client(Box<redis::Client>),
}

/// Builds a [`Client`]. Created by [`Client::builder`] or [`Client::from_redis_client`].
///
/// Every setter takes the builder by value; invalid settings are reported by
/// [`build`](ClientBuilder::build), never by a panic.
#[must_use = "a builder does nothing until `build()` is called"]
pub struct ClientBuilder {
    source: Source,
    namespace: String,
    config: Config,
    /// Sentinel: the master's user name and password, when they are not the sentinels'.
    master_credentials: Option<(Option<String>, String)>,
    /// PEM certificates to trust instead of the system's, for `rediss://` URLs.
    #[cfg(feature = "tls")]
    tls_root_certificates: Option<Vec<u8>>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let address = match &self.source {
            Source::Urls(topology, urls) => describe_urls(topology, urls),
            Source::Client(c) => describe_connection(c),
        };
        let mut d = f.debug_struct("ClientBuilder");
        d.field("address", &address)
            .field("namespace", &self.namespace)
            .field("config", &self.config)
            .field(
                "master_credentials",
                &self.master_credentials.as_ref().map(|_| "<set>"),
            );
        #[cfg(feature = "tls")]
        d.field(
            "tls_root_certificates",
            &self.tls_root_certificates.as_ref().map(|_| "<set>"),
        );
        d.finish()
    }
}

impl ClientBuilder {
    fn with_source(source: Source) -> Self {
        ClientBuilder {
            source,
            namespace: DEFAULT_NAMESPACE.to_owned(),
            config: Config {
                connect_timeout: Duration::from_secs(2),
                response_timeout: Duration::from_secs(3),
                reconnect_retries: 3,
                max_poll: Duration::from_secs(2),
                fair: true,
                claim_window: Duration::from_secs(5),
                replica_acks: 0,
                replica_ack_timeout: Duration::from_millis(100),
                node_timeout: Duration::from_millis(500),
                drift: crate::keys::Drift::default(),
                #[cfg(feature = "metrics")]
                metric_lock_names: false,
            },
            master_credentials: None,
            #[cfg(feature = "tls")]
            tls_root_certificates: None,
        }
    }

    /// The namespace that prefixes every key and channel: the lock key is `{ns}:{id}`, the
    /// counter `{ns}index`, the release channel `{ns}-release` (Node redfour's layout).
    ///
    /// Must be non-empty. Default: `"lock"`.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// How long one connection attempt may take before it counts as failed.
    ///
    /// Default: 2 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// How long to wait for Redis to answer a command; past that the command fails with
    /// [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) and its outcome is unknown.
    ///
    /// Default: 3 s.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.config.response_timeout = timeout;
        self
    }

    /// How many times a lost command connection is retried (with exponential backoff from
    /// 100 ms) before a command fails with [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable).
    ///
    /// Default: 3.
    pub fn reconnect_retries(mut self, retries: usize) -> Self {
        self.config.reconnect_retries = retries;
        self
    }

    /// The longest a waiter sleeps between two attempts when no release notice arrives.
    ///
    /// A waiter normally wakes on the holder's release notice, or when the holder's ttl runs
    /// out; this bound covers notices lost to a network fault the client has not noticed yet.
    /// Between 10 ms and 1 hour. Default: 2 s.
    pub fn max_poll_interval(mut self, interval: Duration) -> Self {
        self.config.max_poll = interval;
        self
    }

    /// Queue waiters in FIFO order on the server, and hand the lock directly to the first live
    /// waiter at release (a fresh index and ttl, and a notice to that waiter only).
    ///
    /// With it (the default), waiters are served in the order they arrived, a handoff costs
    /// one notice instead of a notice plus an attempt, and a release wakes one waiter instead
    /// of all of them. Without it, a release wakes every waiter of the lock and the fastest
    /// wins, exactly as Node redfour does.
    ///
    /// Node redfour clients on the same keys keep working either way, but they do not queue:
    /// they take a free lock when they see one (a one-shot acquire of this library does not:
    /// it leaves a free lock to the first queued waiter). So that they are not starved by
    /// handovers they never hear of, a release sometimes gives them a turn instead (the lock
    /// is deleted and announced, and the queue's side, even a one-shot acquire, takes nothing
    /// for up to 50 ms), in proportion to their number; clients with the queue off count as
    /// they do. Once they had more than their due (Node workers take the lock again as soon
    /// as they release it), a release with nobody queued keeps the lock for the queue's side
    /// instead, for up to 50 ms, which this library's next acquire takes. A Node release
    /// wakes this library's waiters as usual. See the README, "Mixed fleets".
    ///
    /// Waiters that die stay in the queue until their entry expires on the server (three
    /// [poll intervals](ClientBuilder::max_poll_interval)); a lock handed to a waiter that
    /// never claims it expires after the [claim window](ClientBuilder::claim_window). The
    /// queue lives in two more keys per lock with waiters, `{ns}-queue:{id}` and
    /// `{ns}-waiters:{id}`, which vanish when nobody waits (when Node redfour clients were
    /// about, up to 12 s after the last waiter joined, the second with a field `turn`:
    /// see the README, "Mixed fleets").
    ///
    /// [`Topology::Redlock`] has no queue (its masters cannot agree on one order): the setting
    /// is ignored there.
    ///
    /// Default: on.
    pub fn fair(mut self, on: bool) -> Self {
        self.config.fair = on;
        self
    }

    /// With [`fair`](ClientBuilder::fair): how long a lock handed to a queued waiter lives
    /// before that waiter claims it (renews it to its full ttl, which it does in the
    /// background). A waiter that died just before its turn blocks the lock this long at most.
    /// Between 100 ms and 1 hour. Default: 5 s.
    pub fn claim_window(mut self, window: Duration) -> Self {
        self.config.claim_window = window;
        self
    }

    /// After each acquire, waits (`WAIT replicas timeout`) until `replicas` replicas of the
    /// master acknowledged it; when fewer did in time, the lock is released and the acquire
    /// fails with [`ErrorKind::NotReplicated`](crate::ErrorKind::NotReplicated) (a transient
    /// error: a waiting acquire keeps trying until its wait runs out).
    ///
    /// For [`Topology::Sentinel`] and [`Topology::Cluster`] (or a standalone master with
    /// replicas). Replication stays asynchronous: this narrows the window in which a failover
    /// loses a just-granted lock to the time between the grant and the acknowledgement, and
    /// a failover that promotes a replica which had not acknowledged can still lose it. A lock
    /// handed to a queued waiter by a [fair](ClientBuilder::fair) release is claimed at once
    /// and held only once that claim is acknowledged (otherwise it is passed on). Renewals and
    /// releases are not acknowledged.
    ///
    /// The script and its `WAIT` go out together on a connection of their own (so the count is
    /// that of this very write, and `WAIT`, which blocks its connection, never holds up
    /// renewals and releases): the client opens one more connection. `0` turns it off.
    ///
    /// Default: 0 (no wait); the timeout defaults to 100 ms.
    pub fn replica_acks(mut self, replicas: u32, timeout: Duration) -> Self {
        self.config.replica_acks = replicas;
        self.config.replica_ack_timeout = timeout;
        self
    }

    /// With [`Topology::Redlock`]: how long one master may take to answer one step of an
    /// acquire (or a renewal, or a release) before it counts as not granting. Short compared
    /// with the ttl, so that a dead master costs little of the lock's validity. An acquire, a
    /// renewal, a status or a ping does not wait for a master once the others' answers decide
    /// it (its request stays sent), and a waiting acquire not past the end of its wait (plus a
    /// slack of 100 ms at most); a release waits for every master, so that it has reached
    /// every master that answers when it returns.
    ///
    /// Default: 500 ms (and never more than the [response timeout](ClientBuilder::response_timeout)).
    pub fn node_timeout(mut self, timeout: Duration) -> Self {
        self.config.node_timeout = timeout;
        self
    }

    /// The safety margin taken off every lease: `share` of the ttl (0.01 is 1%) plus `fixed`.
    /// A lease (and a Redlock acquire's validity, ttl − elapsed − margin) ends this much before
    /// the server's expiry, so that a client clock running a little fast, or a server clock
    /// running a little slow, never lets two holders overlap. Raise it when clocks may drift
    /// more than that over one ttl.
    ///
    /// `share` must be in `0.0..0.5`; [`build`](ClientBuilder::build) reports anything else.
    ///
    /// Default: 0.01 and 2 ms (Redlock's suggestion).
    pub fn clock_drift(mut self, share: f64, fixed: Duration) -> Self {
        self.config.drift = crate::keys::Drift {
            ppm: if (0.0..0.5).contains(&share) {
                (share * 1_000_000.0).round() as u32
            } else {
                u32::MAX
            },
            fixed,
        };
        self
    }

    /// With [`Topology::Sentinel`]: log in to the master (and, after a failover, to the replica
    /// promoted in its place) with this password, and this user name when given, instead of
    /// the credentials of the first sentinel address. For a master with `requirepass` (or an
    /// ACL user) behind sentinels that have another password or none.
    ///
    /// # Errors
    ///
    /// [`build`](ClientBuilder::build) reports
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for another topology.
    ///
    /// Default: the credentials (and database) of the first sentinel address.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn example() -> redfour::Result<()> {
    /// let password = std::env::var("REDIS_PASSWORD").unwrap_or_default();
    /// let locks = redfour::Client::sentinel(["redis://10.0.0.1:26379"], "mymaster")
    ///     .master_credentials(None, password)
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn master_credentials(
        mut self,
        username: Option<&str>,
        password: impl Into<String>,
    ) -> Self {
        self.master_credentials = Some((username.map(str::to_owned), password.into()));
        self
    }

    /// Trusts these certificate authorities, and only these, for a `rediss://` URL: for a
    /// server whose certificate comes from a private CA.
    ///
    /// `pem` holds one or more PEM certificates (`-----BEGIN CERTIFICATE-----`), as in a CA
    /// file. Without this setting the system's root certificates are trusted. The subscription
    /// connection of waiters uses the same settings as the command connection.
    ///
    /// To present a client certificate as well (mutual TLS), build a
    /// [`redis::Client`] with [`redis::Client::build_with_tls`] and pass it to
    /// [`Client::from_redis_client`] instead.
    ///
    /// # Errors
    ///
    /// [`build`](ClientBuilder::build) reports
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) if `pem` holds no
    /// certificate or an unparsable one, if the URL is not `rediss://`, or if the builder came
    /// from [`Client::from_redis_client`] (that client carries its own TLS settings).
    ///
    /// Default: none (the system's root certificates).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let ca = std::fs::read("/etc/redis/tls/ca.crt")?;
    /// let locks = redfour::Client::builder("rediss://redis.internal:6380/")
    ///     .tls_root_certificates(ca)
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls_root_certificates(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_root_certificates = Some(pem.into());
        self
    }

    /// Adds the lock to the attributes of every lock metric (feature `metrics`): `lock`, the
    /// lock's key as Redis knows it (`{ns}:{id}`, `{ns:id}` on a cluster).
    ///
    /// Off by default because every lock name then makes a time series of its own in the
    /// exporter, for as long as the process lives: turn it on only when the locks are a few
    /// fixed names, never for ids made from user data or request ids. It also makes each
    /// record build its key at run time (a few allocations), where the keys of the default
    /// attributes are built at compile time. The crate docs'
    /// [Metrics](crate#metrics) section lists the metrics and their attributes.
    ///
    /// Default: off.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn example() -> redfour::Result<()> {
    /// let locks = redfour::Client::builder("redis://127.0.0.1:6379/")
    ///     .metric_lock_names(true)
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "metrics")]
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    pub fn metric_lock_names(mut self, on: bool) -> Self {
        self.config.metric_lock_names = on;
        self
    }

    /// Checks the settings and creates the client. No connection is opened yet.
    ///
    /// Needs no runtime: it can be called from synchronous code.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput), naming the setting, for:
    /// - timings: a zero [connect](ClientBuilder::connect_timeout) or
    ///   [response](ClientBuilder::response_timeout) timeout; a
    ///   [poll interval](ClientBuilder::max_poll_interval) outside 10 ms ..= 1 hour; a
    ///   [claim window](ClientBuilder::claim_window) outside 100 ms ..= 1 hour; a zero
    ///   [replica acknowledgement](ClientBuilder::replica_acks) timeout with acknowledgements
    ///   asked for; a [clock drift](ClientBuilder::clock_drift) share outside `0.0..0.5`; a zero
    ///   [node timeout](ClientBuilder::node_timeout);
    /// - the [namespace](ClientBuilder::namespace): empty, longer than [`MAX_ID_LEN`](crate::MAX_ID_LEN)
    ///   bytes, or holding `{` or `}` for [`Topology::Cluster`];
    /// - addresses: an unparsable URL; a `rediss://` URL without the `tls` feature, or with
    ///   `#insecure` without the `tls-insecure` feature; no address for Sentinel, Cluster or
    ///   Redlock; more than one for the standalone topology; an empty Sentinel service name;
    ///   Sentinel or cluster addresses the redis crate refuses;
    /// - combinations: [master credentials](ClientBuilder::master_credentials) with another
    ///   topology than Sentinel; replica acknowledgements with Redlock;
    ///   [TLS root certificates][tls-roots] that hold no usable
    ///   certificate, or given with another topology than standalone, with a URL that is not
    ///   `rediss://`, or with a builder from [`Client::from_redis_client`].
    ///
    /// With Redlock, each master's address is checked as a standalone client's would be.
    ///
    #[cfg_attr(
        feature = "tls",
        doc = "[tls-roots]: ClientBuilder::tls_root_certificates"
    )]
    #[cfg_attr(not(feature = "tls"), doc = "[tls-roots]: crate#features")]
    pub fn build(self) -> Result<Client> {
        if self.config.connect_timeout.is_zero() || self.config.response_timeout.is_zero() {
            return Err(Error::invalid("timeouts must be greater than zero"));
        }
        if self.config.claim_window < Duration::from_millis(100) {
            return Err(Error::invalid("the claim window must be at least 100 ms"));
        }
        if self.config.max_poll < Duration::from_millis(10)
            || self.config.max_poll > Duration::from_secs(3600)
        {
            return Err(Error::invalid(
                "the poll interval must be between 10 ms and 1 hour",
            ));
        }
        if self.config.claim_window > Duration::from_secs(3600) {
            return Err(Error::invalid("the claim window must be at most 1 hour"));
        }
        if self.config.replica_ack_timeout.is_zero() && self.config.replica_acks > 0 {
            return Err(Error::invalid(
                "the replica acknowledgement timeout must be greater than zero",
            ));
        }
        if self.config.drift.ppm >= 500_000 {
            return Err(Error::invalid(
                "the clock drift share must be at least 0 and less than 0.5",
            ));
        }
        if self.config.node_timeout.is_zero() {
            return Err(Error::invalid("the node timeout must be greater than zero"));
        }
        #[cfg(feature = "tls")]
        {
            // rustls needs a process-wide crypto provider; installing it twice is harmless.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let (topology, urls, given) = match self.source {
            Source::Urls(topology, urls) => (topology, urls, None),
            Source::Client(client) => (Topology::Standalone, Vec::new(), Some(*client)),
        };
        let (engine, address) = Engine::build(Plan {
            topology,
            urls,
            given,
            namespace: self.namespace,
            config: self.config,
            master_credentials: self.master_credentials,
            #[cfg(feature = "tls")]
            tls_root_certificates: self.tls_root_certificates,
        })?;
        let ctx = engine.context().clone();
        crate::metrics::describe();
        Ok(Client {
            inner: Arc::new(ClientInner {
                engine,
                ctx,
                hub: OnceCell::new(),
                address,
            }),
        })
    }
}

impl Client {
    /// A client for the Redis at `url` with every setting at its default.
    ///
    /// URLs look like `redis://[user][:password@]host[:port][/db]`; `rediss://` (TLS) needs the
    /// `tls` feature, and a private CA is trusted with
    /// [`ClientBuilder::tls_root_certificates`]. A Unix socket is
    /// `unix:///path/to.sock?pass=PASSWORD&db=N` (the redis crate's forms, `user=` too).
    /// Passwords in any of these are shown as `***` in messages, logs and `Debug` output.
    ///
    /// # Errors
    ///
    /// As [`ClientBuilder::build`].
    ///
    /// # Examples
    ///
    /// ```
    /// let locks = redfour::Client::new("redis://:secret@127.0.0.1:6380/2")?;
    /// // The password never shows in Debug output or error messages.
    /// assert!(!format!("{locks:?}").contains("secret"));
    /// # Ok::<(), redfour::Error>(())
    /// ```
    ///
    #[cfg_attr(
        feature = "tls",
        doc = "[`ClientBuilder::tls_root_certificates`]: ClientBuilder::tls_root_certificates"
    )]
    #[cfg_attr(
        not(feature = "tls"),
        doc = "[`ClientBuilder::tls_root_certificates`]: crate#features"
    )]
    pub fn new(url: &str) -> Result<Client> {
        Client::builder(url).build()
    }

    /// A builder for a client of the Redis at `url`.
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder::with_source(Source::Urls(Topology::Standalone, vec![url.into()]))
    }

    /// A builder for a client of the given topology at these addresses: the server's for
    /// [`Topology::Standalone`] (exactly one), the sentinels' for [`Topology::Sentinel`], seed
    /// nodes for [`Topology::Cluster`], every master for [`Topology::Redlock`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use redfour::{Client, Topology};
    /// # async fn example() -> redfour::Result<()> {
    /// let locks = Client::builder_with_topology(
    ///     Topology::Sentinel { service: "mymaster".into() },
    ///     ["redis://10.0.0.1:26379", "redis://10.0.0.2:26379", "redis://10.0.0.3:26379"],
    /// )
    /// .build()?;
    /// let guard = locks.lock("nightly-report").acquire().await?;
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    pub fn builder_with_topology<I, S>(topology: Topology, urls: I) -> ClientBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let urls = urls.into_iter().map(Into::into).collect();
        ClientBuilder::with_source(Source::Urls(topology, urls))
    }

    /// A builder for a client of the master that these sentinels monitor as `service`.
    /// Shorthand for [`builder_with_topology`](Client::builder_with_topology).
    pub fn sentinel<I, S>(sentinels: I, service: impl Into<String>) -> ClientBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Client::builder_with_topology(
            Topology::Sentinel {
                service: service.into(),
            },
            sentinels,
        )
    }

    /// A builder for a client of the Redis Cluster reached through these seed nodes.
    /// Shorthand for [`builder_with_topology`](Client::builder_with_topology).
    pub fn cluster<I, S>(seeds: I) -> ClientBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Client::builder_with_topology(Topology::Cluster, seeds)
    }

    /// A builder for a Redlock client over these independent masters (an odd number, 3 or 5
    /// usually). Shorthand for [`builder_with_topology`](Client::builder_with_topology).
    pub fn redlock<I, S>(masters: I) -> ClientBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Client::builder_with_topology(Topology::Redlock, masters)
    }

    /// A builder that reuses the connection settings of an existing [`redis::Client`].
    ///
    /// redfour opens its own connections from it (a subscription cannot share a command
    /// connection), as Node redfour does when given an existing client.
    pub fn from_redis_client(client: redis::Client) -> ClientBuilder {
        ClientBuilder::with_source(Source::Client(Box::new(client)))
    }

    /// The namespace of this client's keys.
    pub fn namespace(&self) -> &str {
        self.inner.ctx.ns.name()
    }

    /// Where this client connects, with any password redacted. Meant for messages.
    pub fn address(&self) -> &str {
        &self.inner.address
    }

    /// Waits until the clean-up this client runs in the background is done, or `limit` has
    /// passed; `true` when nothing is left pending.
    ///
    /// Dropping a [`LockGuard`](crate::LockGuard) without
    /// [`release`](crate::LockGuard::release), or dropping a pending acquire or wait, does
    /// not block: the release, the clean-up of an attempt whose answer was never read, and a
    /// waiter's exit from the fair queue are sent by background tasks. A process that exits
    /// right after such a drop (a command-line tool interrupted by a signal, a service
    /// shutting down) ends those tasks before they reach Redis, and what they would have
    /// cleaned up stays until it expires: a lock until its ttl, a queue entry until the
    /// claim window of the release that hands it the lock. Call `settle` before exiting to
    /// let them finish. It waits for the work scheduled before and during the call; it does
    /// not stop new work from being scheduled.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future only stops waiting; the clean-up goes on.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example() -> redfour::Result<()> {
    /// # use std::time::Duration;
    /// let locks = redfour::Client::new("redis://127.0.0.1:6379/")?;
    /// let wait = locks.lock("nightly-report").acquire();
    /// tokio::select! {
    ///     guard = wait => { let guard = guard?; /* ... */ guard.release().await?; }
    ///     _ = tokio::signal::ctrl_c() => {
    ///         // The wait was dropped: let it leave the queue before the process ends.
    ///         locks.settle(Duration::from_secs(2)).await;
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn settle(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.inner.ctx.cleanup.idle())
            .await
            .is_ok()
    }

    /// Opens the command connection now (if it is not open) and sends `PING`.
    ///
    /// With Redlock, `PING` goes to every master (each bounded by the node timeout) and
    /// succeeds as soon as a majority answered: a stalled minority does not hold it up.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable) when Redis cannot be reached
    /// (with Redlock, [`ErrorKind::QuorumLost`](crate::ErrorKind::QuorumLost) when a majority
    /// cannot), [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) when it does not answer in
    /// time, [`ErrorKind::AccessDenied`](crate::ErrorKind::AccessDenied) when it refuses the
    /// login, [`ErrorKind::UnknownService`](crate::ErrorKind::UnknownService) when no sentinel
    /// knows the service.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: `PING` changes nothing.
    pub async fn ping(&self) -> Result<()> {
        self.inner.engine.ping().await
    }

    /// Where this client's locks live.
    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Settings, names and identity shared by this client's engines.
    pub(crate) fn ctx(&self) -> &Context {
        &self.inner.ctx
    }

    /// What a wait of this client needs: its engine and its hub.
    pub(crate) fn waiting(&self) -> Waiting<'_> {
        Waiting {
            engine: &self.inner.engine,
            hub: &self.inner.hub,
        }
    }

    /// Every lock held in this client's namespace, and every foreign key where the namespace
    /// keeps its locks, sorted by id.
    ///
    /// The keys are found with `SCAN` (never `KEYS`), 250 keys a step, and each key found
    /// is read by a short read-only script (its type first; of a hash, only the fields a lock
    /// has, each up to 4 KiB), pipelined with the next step: one round trip per step, no
    /// large reply and no long command, however many keys the namespace or the database
    /// holds. `SCAN` walks every key of the database and filters after. A namespace of 100,000
    /// keys took 1.6 s, each command at most about 0.3 ms of the server's time (see the
    /// README's "Observing locks").
    ///
    /// Which keys: `NS:*` (Node redfour's layout), or `{NS:*` on a cluster, where every
    /// master is scanned and each lock's own counter and queue keys are skipped. A held lock
    /// is a [`ListingKind::Lock`]; a key there that holds something else (another type, a
    /// hash without a valid index or without expiry) is a [`ListingKind::Foreign`]: no error,
    /// and left as it is. The fair queue's keys and Node's counter are not listed.
    ///
    /// With Redlock every master is scanned, and a lock is listed when a majority of the
    /// masters hold it with the same index (with the shortest remaining ttl among them, as
    /// [`status`](Client::status) answers). A lock held by fewer (an acquire or a release
    /// under way, or what a failed acquire left, which expires with its ttl) is not listed; a
    /// key that holds foreign data on any master is listed as foreign, unless a majority hold
    /// a lock there.
    ///
    /// `SCAN` takes no snapshot: a lock taken or released during the listing may be listed or
    /// not, and during a cluster's resharding or failover a key may be missed. Each listing
    /// is as it was read.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Unavailable`] or [`ErrorKind::Timeout`] when Redis cannot be reached or
    /// does not answer (with Redlock, [`ErrorKind::QuorumLost`] when fewer than a majority of
    /// the masters could be listed); [`ErrorKind::AccessDenied`] when Redis refuses the login
    /// or a command: beyond those of the other operations, the ACL needs
    /// `+scan +hstrlen +llen +lpos` (and `+cluster|slots` on a cluster).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads. Dropping the future stops the listing.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example() -> redfour::Result<()> {
    /// let locks = redfour::Client::new("redis://127.0.0.1/")?;
    /// for lock in locks.list().await? {
    ///     let who = lock.holder.as_ref().and_then(|h| h.host.as_deref());
    ///     println!("{} {} held by {:?}, {:?} left", lock.id, lock.kind, who, lock.ttl);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// [`ListingKind::Lock`]: crate::ListingKind::Lock
    /// [`ListingKind::Foreign`]: crate::ListingKind::Foreign
    /// [`ErrorKind::Unavailable`]: crate::ErrorKind::Unavailable
    /// [`ErrorKind::Timeout`]: crate::ErrorKind::Timeout
    /// [`ErrorKind::QuorumLost`]: crate::ErrorKind::QuorumLost
    /// [`ErrorKind::AccessDenied`]: crate::ErrorKind::AccessDenied
    pub async fn list(&self) -> Result<Vec<Listing>> {
        let mut listings = self.engine().list().await?;
        listings.sort_by(|a, b| a.id.cmp(&b.id).then_with(|| a.key.cmp(&b.key)));
        listings.dedup_by(|a, b| a.key == b.key);
        Ok(listings)
    }

    /// Who holds the lock `id`, and the place in its queue of this client's waiter: what a
    /// waiting process shows its user. One read-only script call (one per master with
    /// Redlock); call it about once a second while a wait runs.
    ///
    /// The waiter is the one of this client's waits for `id` that started first, in whatever
    /// task ([`LockBuilder::acquire`] and [`wait_acquire_lock`](Client::wait_acquire_lock)
    /// alike). Finding its place costs the server a walk of the queue up to it.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for an empty id; Redis faults as [`list`](Client::list).
    /// Foreign data at the key is no error: it is answered as a [`ListingKind::Foreign`]
    /// listing.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example() -> redfour::Result<()> {
    /// use std::time::Duration;
    /// let locks = redfour::Client::new("redis://127.0.0.1/")?;
    /// let wait = locks.lock("nightly").acquire();
    /// tokio::pin!(wait);
    /// let guard = loop {
    ///     tokio::select! {
    ///         guard = &mut wait => break guard?,
    ///         _ = tokio::time::sleep(Duration::from_secs(1)) => {
    ///             let progress = locks.wait_progress("nightly").await?;
    ///             if let Some(place) = progress.place {
    ///                 eprintln!("waiting, place {place} in line");
    ///             }
    ///         }
    ///     }
    /// };
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// [`LockBuilder::acquire`]: crate::LockBuilder::acquire
    /// [`ErrorKind::InvalidInput`]: crate::ErrorKind::InvalidInput
    /// [`ListingKind::Foreign`]: crate::ListingKind::Foreign
    pub async fn wait_progress(&self, id: &str) -> Result<WaitProgress> {
        let key = self.ctx().ns.lock_key(id)?;
        let token = self.first_waiter_token(&key);
        let seen = self.engine().peek(id, &key, token.as_deref()).await?;
        Ok(WaitProgress {
            place: seen.place,
            lock: seen.listing,
        })
    }

    /// The queue token of this client's longest-registered waiter for the lock at `key`.
    pub(crate) fn first_waiter_token(&self, key: &str) -> Option<String> {
        self.inner.hub.get()?.first_token(key)
    }

    /// A snapshot of this client's activity: waits registered now, notices and handoffs
    /// delivered, renewals, leases lost, subscription reconnects, clean-up pending in the
    /// background. See [`Stats`](crate::Stats) for what each field counts.
    ///
    /// Cheap (a few atomic loads and one short lock of the waiters' table) and never touches
    /// Redis, so it can be polled by a health check or a metrics exporter.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example() -> redfour::Result<()> {
    /// let locks = redfour::Client::new("redis://127.0.0.1/")?;
    /// let guard = locks.lock("report").acquire().await?;
    /// guard.release().await?;
    /// assert_eq!(locks.stats().waiters, 0);
    /// # Ok(()) }
    /// ```
    pub fn stats(&self) -> crate::Stats {
        use crate::stats::Counters;
        let hub = self.inner.hub.get();
        let counters = &self.inner.ctx.counters;
        crate::Stats {
            waiters: hub.map_or(0, Hub::registrations),
            notices_delivered: hub.map_or(0, Hub::notices),
            handoffs_received: hub.map_or(0, Hub::handoffs),
            renewals: Counters::read(&counters.renewals),
            renewal_failures: Counters::read(&counters.renewal_failures),
            leases_lost: Counters::read(&counters.leases_lost),
            subscription_reconnects: hub.map_or(0, Hub::reconnects),
            background_cleanups_pending: self.inner.ctx.cleanup.pending(),
        }
    }
}

#[cfg(test)]
impl ClientInner {
    /// The engine alone, for the engine's own tests.
    pub(crate) fn into_engine(self) -> Engine {
        self.engine
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("address", &self.inner.address)
            .field("namespace", &self.inner.ctx.ns.name())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_rejects_bad_settings() {
        assert!(Client::builder("redis://h/")
            .namespace("")
            .build()
            .unwrap_err()
            .is_invalid_input());
        assert!(Client::builder("nonsense")
            .build()
            .unwrap_err()
            .is_invalid_input());
        assert!(Client::builder("redis://h/")
            .max_poll_interval(Duration::from_millis(1))
            .build()
            .unwrap_err()
            .is_invalid_input());
        assert!(Client::builder("redis://h/")
            .max_poll_interval(Duration::MAX)
            .build()
            .unwrap_err()
            .is_invalid_input());
        assert!(Client::builder("redis://h/")
            .response_timeout(Duration::ZERO)
            .build()
            .unwrap_err()
            .is_invalid_input());
    }

    #[test]
    fn bad_url_error_does_not_leak_password() {
        for url in [
            "redis://:topsecret@host:notaport/",
            "redis://user:topsecret@host:notaport/",
            "redis://topsecret@host:notaport/",
            "redis://:top/secret@host:1/",
            "redis://:top#secret@host:1/",
            "redis://:top?secret@host:1/",
            "redis://user:topsecret",
            "redis://host:1/topsecret",
            "redis://host:1/?password=topsecret&protocol=9",
            "rediss://host:1/#topsecret",
            "unix:///tmp/s?pass=topsecret&db=x",
            "redis+unix:///tmp/s?pass=topsecret&protocol=x",
            "valkey+unix:///tmp/s?p%61ss=topsecret&db=x",
            // redis-rs quotes an invalid protocol in its error.
            "unix:///tmp/s?protocol=topsecret",
            "unix://:topsecret@/tmp/s",
            "topsecret",
        ] {
            for topology in [
                Topology::Standalone,
                Topology::Sentinel {
                    service: "m".into(),
                },
                Topology::Cluster,
                Topology::Redlock,
            ] {
                let err = Client::builder_with_topology(topology.clone(), [url])
                    .build()
                    .unwrap_err();
                assert!(err.is_invalid_input(), "{url} {topology:?}: {err:?}");
                for shown in [err.to_string(), format!("{err:?}")] {
                    assert!(!shown.contains("secret"), "{url} {topology:?}: {shown}");
                }
            }
        }
        // The reason stays when the URL has to be hidden whole.
        let err = Client::new("redis://user:topsecret").unwrap_err();
        assert!(err.to_string().contains("`redis://***`"), "{err}");
        assert!(err.to_string().contains("invalid port number"), "{err}");
    }

    #[cfg(all(feature = "tls", not(feature = "tls-insecure")))]
    #[test]
    fn insecure_urls_need_the_feature() {
        let err = Client::new("rediss://127.0.0.1:1/#insecure").unwrap_err();
        assert!(err.is_invalid_input(), "{err:?}");
        assert!(err.to_string().contains("tls-insecure"), "{err}");
    }
}
