//! The client handle and its builder.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use crate::conn::{Conn, Lane, SentinelConn, SentinelShared};
use crate::error::{Error, Result};
use crate::hub::{FairSetup, Hub, SubSource};
use crate::keys::{Layout, Namespace};

/// Acquire attempts one client keeps in flight at most.
const MAX_ATTEMPTS_IN_FLIGHT: usize = 256;

/// The default namespace, the same as Node redfour's.
pub const DEFAULT_NAMESPACE: &str = "lock";

/// How the Redis deployment behind a [`Client`] is laid out, and so how the client reaches it.
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
    pub(crate) backend: Backend,
    conn: OnceCell<Conn>,
    /// For acquires that wait for replica acknowledgements: `WAIT` blocks its connection, so
    /// it does not share the one that renewals and releases use.
    ack_conn: OnceCell<Conn>,
    pub(crate) hub: OnceCell<Hub>,
    pub(crate) ns: Namespace,
    pub(crate) config: Config,
    pub(crate) holder: HolderIdentity,
    /// Names this client's handoff channel and its waiters in fair queues.
    pub(crate) token: String,
    /// `{ns}-handoff:{token}`.
    pub(crate) handoff_channel: String,
    /// Numbers this client's acquire attempts.
    pub(crate) attempts: std::sync::atomic::AtomicU64,
    /// Bounds the acquire attempts in flight: thousands of waiters starting at once queue here
    /// instead of all holding a request buffer in the connection's pipeline.
    pub(crate) attempt_slots: tokio::sync::Semaphore,
    /// Clean-up work running in the background, for [`Client::settle`].
    pub(crate) cleanup: Arc<crate::cleanup::Cleanup>,
    /// The counters behind [`Client::stats`], shared with the guards' leases.
    pub(crate) counters: Arc<crate::stats::Counters>,
    address: String,
}

/// Where a client's connections go.
// One per client, behind its `Arc`: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Backend {
    Single(redis::Client),
    Sentinel(Arc<SentinelShared>),
    Cluster {
        client: redis::cluster::ClusterClient,
        /// The seed nodes, for the subscription's own cluster client.
        urls: Vec<String>,
    },
    /// One standalone client per master, and how many must agree.
    Redlock {
        nodes: Vec<Client>,
        quorum: usize,
    },
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
    fn of_this_process() -> Self {
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
    /// it leaves a free lock to the first queued waiter), and they learn of a lock handed to a
    /// queued waiter only through their own ttl timer. A Node release wakes this library's
    /// waiters as usual.
    ///
    /// Waiters that die stay in the queue until their entry expires on the server (three
    /// [poll intervals](ClientBuilder::max_poll_interval)); a lock handed to a waiter that
    /// never claims it expires after the [claim window](ClientBuilder::claim_window). The
    /// queue lives in two more keys per lock with waiters, `{ns}-queue:{id}` and
    /// `{ns}-waiters:{id}`, which vanish when nobody waits.
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
    ///   [TLS root certificates](ClientBuilder::tls_root_certificates) that hold no usable
    ///   certificate, or given with another topology than standalone, with a URL that is not
    ///   `rediss://`, or with a builder from [`Client::from_redis_client`].
    ///
    /// With Redlock, each master's address is checked as a standalone client's would be.
    pub fn build(mut self) -> Result<Client> {
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
        let mut config = self.config;
        let (topology, urls, given) = match self.source {
            Source::Urls(topology, urls) => (topology, urls, None),
            Source::Client(client) => (Topology::Standalone, Vec::new(), Some(client)),
        };
        let layout = match topology {
            Topology::Cluster => Layout::Cluster,
            _ => Layout::Node,
        };
        let ns = Namespace::with_layout(&self.namespace, layout)?;
        let standalone = matches!(topology, Topology::Standalone);
        if self.master_credentials.is_some() && !matches!(topology, Topology::Sentinel { .. }) {
            return Err(Error::invalid(
                "master credentials apply to the sentinel topology only",
            ));
        }
        if !standalone && urls.is_empty() {
            return Err(Error::invalid(format!(
                "the {} topology needs at least one address",
                topology.name()
            )));
        }
        #[cfg(feature = "tls")]
        if !standalone && self.tls_root_certificates.is_some() {
            return Err(Error::invalid(
                "TLS root certificates are only supported for the standalone topology",
            ));
        }
        let address = match &given {
            Some(client) => describe_connection(client),
            None => describe_urls(&topology, &urls),
        };
        let backend = match topology {
            Topology::Standalone => {
                let client = match given {
                    Some(client) => {
                        #[cfg(feature = "tls")]
                        if self.tls_root_certificates.is_some() {
                            return Err(Error::invalid(
                                "TLS root certificates cannot be added to an existing redis::Client: \
                                 build it with redis::Client::build_with_tls instead",
                            ));
                        }
                        *client
                    }
                    None => {
                        let [url] = &urls[..] else {
                            return Err(Error::invalid(format!(
                                "the standalone topology takes one address, not {}",
                                urls.len()
                            )));
                        };
                        let client = open_url(url)?;
                        #[cfg(feature = "tls")]
                        let client = match self.tls_root_certificates {
                            Some(pem) => with_root_certificates(client, pem)?,
                            None => client,
                        };
                        client
                    }
                };
                check_tls_support(&client)?;
                Backend::Single(client)
            }
            Topology::Sentinel { service } => {
                if service.is_empty() {
                    return Err(Error::invalid(
                        "the sentinel service name must not be empty",
                    ));
                }
                let mut infos = Vec::with_capacity(urls.len());
                for url in &urls {
                    let client = open_url(url)?;
                    check_tls_support(&client)?;
                    infos.push(client.get_connection_info().clone());
                }
                let sentinels = infos.clone();
                let mut node = redis::sentinel::SentinelNodeConnectionInfo::default();
                if let redis::ConnectionAddr::TcpTls { insecure, .. } = infos[0].addr() {
                    node = node.set_tls_mode(if *insecure {
                        redis::TlsMode::Insecure
                    } else {
                        redis::TlsMode::Secure
                    });
                }
                // The master gets the credentials and database of the first sentinel address
                // (sentinels and masters often share them; `redis://:pw@sentinel/2`), unless
                // it has its own.
                let mut settings = infos[0].redis_settings().clone();
                let db = settings.db();
                if let Some((username, password)) = self.master_credentials.take() {
                    settings = redis::RedisConnectionInfo::default()
                        .set_db(db)
                        .set_password(password);
                    if let Some(username) = username {
                        settings = settings.set_username(username);
                    }
                }
                node = node.set_redis_connection_info(settings);
                let sentinel = redis::sentinel::SentinelClient::build(
                    infos,
                    service.clone(),
                    Some(node),
                    redis::sentinel::SentinelServerType::Master,
                )
                .map_err(|e| {
                    Error::invalid("invalid sentinel addresses")
                        .with_source(crate::redact::config_error(e))
                })?;
                Backend::Sentinel(Arc::new(SentinelShared::new(
                    sentinel,
                    sentinels,
                    service,
                    config.connect_timeout,
                    config.response_timeout,
                    config.reconnect_retries,
                    db,
                )))
            }
            Topology::Cluster => {
                for url in &urls {
                    check_tls_support(&open_url(url)?)?;
                }
                let client = cluster_builder(&urls, &config).build().map_err(|e| {
                    Error::invalid("invalid cluster addresses")
                        .with_source(crate::redact::config_error(e))
                })?;
                Backend::Cluster { client, urls }
            }
            Topology::Redlock => {
                if config.replica_acks > 0 {
                    return Err(Error::invalid(
                        "replica acknowledgements do not apply to Redlock (its masters have no replicas of each other)",
                    ));
                }
                // Waiters poll or are woken by any master's release notice; a fair queue would
                // need the masters to agree on its order, which Redlock cannot give.
                config.fair = false;
                let mut nodes = Vec::with_capacity(urls.len());
                for url in &urls {
                    let node = ClientBuilder {
                        source: Source::Urls(Topology::Standalone, vec![url.clone()]),
                        namespace: self.namespace.clone(),
                        config: config.clone(),
                        master_credentials: None,
                        #[cfg(feature = "tls")]
                        tls_root_certificates: None,
                    }
                    .build()?;
                    nodes.push(node);
                }
                let quorum = nodes.len() / 2 + 1;
                Backend::Redlock { nodes, quorum }
            }
        };
        let token = client_token();
        let handoff_channel = match layout {
            Layout::Node => ns.handoff_channel(&token, "").into_owned(),
            // Per lock in the cluster layout; see `ClientInner::handoff_channel_for`.
            Layout::Cluster => String::new(),
        };
        Ok(Client {
            inner: Arc::new(ClientInner {
                backend,
                conn: OnceCell::new(),
                ack_conn: OnceCell::new(),
                hub: OnceCell::new(),
                ns,
                config,
                token,
                handoff_channel,
                attempts: std::sync::atomic::AtomicU64::new(0),
                attempt_slots: tokio::sync::Semaphore::new(MAX_ATTEMPTS_IN_FLIGHT),
                holder: HolderIdentity::of_this_process(),
                cleanup: Arc::default(),
                counters: Arc::default(),
                address,
            }),
        })
    }
}

impl ClientInner {
    /// The channel on which this client hears that the lock at `key` was handed to one of its
    /// waiters.
    pub(crate) fn handoff_channel_for<'a>(&'a self, key: &str) -> std::borrow::Cow<'a, str> {
        match self.ns.layout() {
            Layout::Node => std::borrow::Cow::Borrowed(&self.handoff_channel),
            Layout::Cluster => self.ns.handoff_channel(&self.token, key),
        }
    }

    /// The scripts of this client's layout.
    pub(crate) fn scripts(&self) -> &'static crate::scripts::ScriptSet {
        match self.ns.layout() {
            Layout::Node => &crate::scripts::NODE,
            Layout::Cluster => &crate::scripts::CLUSTER,
        }
    }

    /// The masters of a Redlock client, and how many of them make a majority.
    pub(crate) fn redlock(&self) -> Option<(&[Client], usize)> {
        match &self.backend {
            Backend::Redlock { nodes, quorum } => Some((nodes, *quorum)),
            _ => None,
        }
    }
}

fn open_url(url: &str) -> Result<redis::Client> {
    redis::Client::open(url).map_err(|e| {
        let shown = crate::redact::url(url);
        let message = match crate::redact::parse_problem(url) {
            // The URL is hidden then: say at least why it does not parse.
            Some(problem) => format!("invalid redis URL `{shown}` ({problem})"),
            None => format!("invalid redis URL `{shown}`"),
        };
        Error::invalid(message).with_source(crate::redact::config_error(e))
    })
}

fn cluster_builder(urls: &[String], config: &Config) -> redis::cluster::ClusterClientBuilder {
    redis::cluster::ClusterClientBuilder::new(urls.to_vec())
        .connection_timeout(config.connect_timeout)
        .response_timeout(config.response_timeout)
        .retries(config.reconnect_retries.min(u32::MAX as usize) as u32)
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
        self.inner.ns.name()
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
        let all = async {
            self.inner.cleanup.idle().await;
            if let Some((nodes, _)) = self.inner.redlock() {
                // A Redlock client's releases run on its masters' clients.
                for node in nodes {
                    node.inner.cleanup.idle().await;
                }
            }
        };
        tokio::time::timeout(limit, all).await.is_ok()
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
        if let Some((nodes, quorum)) = self.inner.redlock() {
            // Reachable when a majority is: that is what an acquire needs.
            return crate::redlock::ping(nodes, quorum).await;
        }
        let mut conn = self.connection().await?;
        redis::cmd("PING")
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| Error::from_redis(e, None))
    }

    /// The shared command connection, opened on first use.
    pub(crate) async fn connection(&self) -> Result<Conn> {
        self.connection_on(Lane::Commands).await
    }

    /// The connection for acquires that `WAIT` for replicas, opened on first use.
    pub(crate) async fn ack_connection(&self) -> Result<Conn> {
        self.connection_on(Lane::Acks).await
    }

    async fn connection_on(&self, lane: Lane) -> Result<Conn> {
        let cell = match lane {
            Lane::Commands => &self.inner.conn,
            Lane::Acks => &self.inner.ack_conn,
        };
        let conn = cell
            .get_or_try_init(|| async {
                let config = &self.inner.config;
                let opened = match &self.inner.backend {
                    Backend::Single(client) => {
                        let manager = ConnectionManagerConfig::new()
                            .set_connection_timeout(Some(config.connect_timeout))
                            .set_response_timeout(Some(config.response_timeout))
                            .set_number_of_retries(config.reconnect_retries)
                            .set_max_delay(Duration::from_secs(2));
                        ConnectionManager::new_with_config(client.clone(), manager)
                            .await
                            .map(Conn::Single)
                    }
                    // Resolved through the sentinels at the first command, and again after a
                    // failure that may mean the master moved.
                    Backend::Sentinel(shared) => {
                        shared.watch_failovers();
                        Ok(Conn::Sentinel(SentinelConn {
                            shared: shared.clone(),
                            lane,
                        }))
                    }
                    Backend::Cluster { client, .. } => {
                        client.get_async_connection().await.map(Conn::Cluster)
                    }
                    Backend::Redlock { .. } => {
                        return Err(Error::new(
                            crate::ErrorKind::InvalidInput,
                            "a Redlock client has no single command connection",
                        ))
                    }
                };
                opened.map_err(|e| {
                    let err = Error::from_redis(e, None);
                    // A handshake reply that does not parse means the peer is not a Redis
                    // server (a wrong port, an HTTP proxy): it cannot be reached, and no key
                    // was read, so it is not CorruptData.
                    if err.is_timeout() || err.is_unavailable() || err.is_corrupt_data() {
                        err.reclassify(
                            crate::ErrorKind::Unavailable,
                            format!("cannot connect to redis at {}", self.inner.address),
                        )
                    } else if err.is_access_denied() {
                        // Say which server refused the login.
                        let message =
                            format!("{} (redis at {})", err.message(), self.inner.address);
                        err.reclassify(crate::ErrorKind::AccessDenied, message)
                    } else {
                        err
                    }
                })
            })
            .await?;
        Ok(conn.clone())
    }

    /// The client's notification hub, started on first use.
    pub(crate) async fn hub(&self) -> Result<&Hub> {
        self.inner
            .hub
            .get_or_try_init(|| async {
                let fair = if self.inner.config.fair {
                    Some(FairSetup {
                        handoff_channel: match self.inner.ns.layout() {
                            Layout::Node => Some(self.inner.handoff_channel.clone()),
                            Layout::Cluster => None,
                        },
                        client_token: self.inner.token.clone(),
                        conn: self.connection().await?,
                        claim_window_ms: self.inner.config.claim_window.as_millis() as u64,
                        scripts: self.inner.scripts(),
                    })
                } else {
                    None
                };
                let source = match &self.inner.backend {
                    Backend::Single(client) => SubSource::Fixed(vec![client.clone()]),
                    Backend::Sentinel(shared) => SubSource::Sentinel(shared.clone()),
                    Backend::Cluster { urls, .. } => {
                        SubSource::Cluster(cluster_builder(urls, &self.inner.config))
                    }
                    Backend::Redlock { nodes, .. } => SubSource::Fixed(
                        nodes
                            .iter()
                            .filter_map(|node| match &node.inner.backend {
                                Backend::Single(client) => Some(client.clone()),
                                _ => None,
                            })
                            .collect(),
                    ),
                };
                Ok(Hub::start(
                    source,
                    self.inner.ns.clone(),
                    self.inner.config.connect_timeout,
                    fair,
                    self.inner.cleanup.clone(),
                ))
            })
            .await
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
        let counters = &self.inner.counters;
        crate::Stats {
            waiters: hub.map_or(0, Hub::registrations),
            notices_delivered: hub.map_or(0, Hub::notices),
            handoffs_received: hub.map_or(0, Hub::handoffs),
            renewals: Counters::read(&counters.renewals),
            renewal_failures: Counters::read(&counters.renewal_failures),
            leases_lost: Counters::read(&counters.leases_lost),
            subscription_reconnects: hub.map_or(0, Hub::reconnects),
            background_cleanups_pending: self.inner.cleanup.pending(),
        }
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("address", &self.inner.address)
            .field("namespace", &self.inner.ns.name())
            .finish_non_exhaustive()
    }
}

/// A token unique to this client among all clients of a Redis: host, pid, start time and a
/// per-process sequence number, without spaces (it travels in space-separated notices).
fn client_token() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let host: String = HolderIdentity::of_this_process()
        .host
        .chars()
        .map(|c| {
            if c.is_whitespace() || c == '/' {
                '_'
            } else {
                c
            }
        })
        .collect();
    format!("{host}.{}.{nanos:x}.{seq}", std::process::id())
}

/// `client` (a `rediss://` one) trusting the CAs in `pem` instead of the system's.
#[cfg(feature = "tls")]
fn with_root_certificates(client: redis::Client, pem: Vec<u8>) -> Result<redis::Client> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    let info = client.get_connection_info().clone();
    if !matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }) {
        return Err(Error::invalid(
            "TLS root certificates were given for a URL that is not rediss://",
        ));
    }
    let mut found = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        cert.map_err(|e| {
            Error::invalid("the TLS root certificates are not valid PEM").with_source(e)
        })?;
        found += 1;
    }
    if found == 0 {
        return Err(Error::invalid(
            "no certificate in the TLS root certificates (expected PEM: -----BEGIN CERTIFICATE-----)",
        ));
    }
    redis::Client::build_with_tls(
        info,
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        },
    )
    .map_err(|e| Error::invalid("unusable TLS root certificates").with_source(e))
}

/// Rejects at build time what would otherwise fail at the first connection, less clearly: TLS
/// without the feature that brings it, and `#insecure` (no certificate verification) unless
/// it was opted into at build time.
fn check_tls_support(client: &redis::Client) -> Result<()> {
    let redis::ConnectionAddr::TcpTls { insecure, .. } = client.get_connection_info().addr() else {
        return Ok(());
    };
    if cfg!(not(feature = "tls")) {
        return Err(Error::invalid(
            "rediss:// (TLS) needs redfour's `tls` feature",
        ));
    }
    if *insecure && cfg!(not(feature = "tls-insecure")) {
        return Err(Error::invalid(
            "`#insecure` in a rediss:// URL (no certificate verification) needs redfour's \
             `tls-insecure` feature",
        ));
    }
    Ok(())
}

fn describe_urls(topology: &Topology, urls: &[String]) -> String {
    let shown: Vec<String> = urls.iter().map(|u| crate::redact::url(u)).collect();
    match topology {
        Topology::Standalone => shown.join(","),
        Topology::Sentinel { service } => {
            format!("sentinel {service} via {}", shown.join(","))
        }
        other => format!("{} {}", other.name(), shown.join(",")),
    }
}

fn describe_connection(client: &redis::Client) -> String {
    let info = client.get_connection_info();
    format!("{}/{}", info.addr(), info.redis_settings().db())
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
