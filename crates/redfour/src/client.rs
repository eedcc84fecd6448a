//! The client handle and its builder.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use crate::error::{Error, Result};
use crate::hub::{FairSetup, Hub};
use crate::keys::Namespace;

/// Acquire attempts one client keeps in flight at most.
const MAX_ATTEMPTS_IN_FLIGHT: usize = 256;

/// The default namespace, the same as Node redfour's.
pub const DEFAULT_NAMESPACE: &str = "lock";

/// A cheap-to-clone handle to a Redis server, through which locks are taken.
///
/// A `Client` owns two connections at most, whatever the number of locks and waiters: one
/// multiplexed, reconnecting connection for commands, and (from the first wait on) one
/// subscription to the namespace's release channel, shared by all waiters. Both are opened
/// lazily, on first use; [`Client::ping`] opens the command connection eagerly.
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
    pub(crate) redis: redis::Client,
    conn: OnceCell<ConnectionManager>,
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
    address: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Duration,
    pub(crate) reconnect_retries: usize,
    pub(crate) max_poll: Duration,
    pub(crate) fair: bool,
    pub(crate) claim_window: Duration,
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
    Url(String),
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
    /// PEM certificates to trust instead of the system's, for `rediss://` URLs.
    #[cfg(feature = "tls")]
    tls_root_certificates: Option<Vec<u8>>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let address = match &self.source {
            Source::Url(url) => redact_url(url),
            Source::Client(c) => describe_connection(c),
        };
        let mut d = f.debug_struct("ClientBuilder");
        d.field("address", &address)
            .field("namespace", &self.namespace)
            .field("config", &self.config);
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
            },
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
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for an unparsable URL, an
    /// empty namespace, zero timeouts or a poll interval under 10 ms; a `rediss://` URL without
    /// the `tls` feature, or with `#insecure` without the `tls-insecure` feature; unusable
    /// [TLS root certificates](ClientBuilder::tls_root_certificates).
    pub fn build(self) -> Result<Client> {
        let ns = Namespace::new(&self.namespace)?;
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
        let (redis, address) = match self.source {
            Source::Url(url) => {
                let shown = redact_url(&url);
                let client = redis::Client::open(url.as_str()).map_err(|e| {
                    Error::invalid(format!("invalid redis URL `{shown}`")).with_source(e)
                })?;
                #[cfg(feature = "tls")]
                let client = match self.tls_root_certificates {
                    Some(pem) => with_root_certificates(client, pem)?,
                    None => client,
                };
                (client, shown)
            }
            Source::Client(client) => {
                #[cfg(feature = "tls")]
                if self.tls_root_certificates.is_some() {
                    return Err(Error::invalid(
                        "TLS root certificates cannot be added to an existing redis::Client: \
                         build it with redis::Client::build_with_tls instead",
                    ));
                }
                let shown = describe_connection(&client);
                (*client, shown)
            }
        };
        check_tls_support(&redis)?;
        let token = client_token();
        let handoff_channel = ns.handoff_channel(&token);
        #[cfg(feature = "tls")]
        {
            // rustls needs a process-wide crypto provider; installing it twice is harmless.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        Ok(Client {
            inner: Arc::new(ClientInner {
                redis,
                conn: OnceCell::new(),
                hub: OnceCell::new(),
                ns,
                config: self.config,
                token,
                handoff_channel,
                attempts: std::sync::atomic::AtomicU64::new(0),
                attempt_slots: tokio::sync::Semaphore::new(MAX_ATTEMPTS_IN_FLIGHT),
                holder: HolderIdentity::of_this_process(),
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
    /// [`ClientBuilder::tls_root_certificates`].
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
        ClientBuilder::with_source(Source::Url(url.into()))
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

    /// Opens the command connection now (if it is not open) and sends `PING`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable) when Redis cannot be reached,
    /// [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) when it does not answer in time.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: `PING` changes nothing.
    pub async fn ping(&self) -> Result<()> {
        let mut conn = self.connection().await?;
        redis::cmd("PING")
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| Error::from_redis(e, None))
    }

    /// The shared command connection, opened on first use.
    pub(crate) async fn connection(&self) -> Result<ConnectionManager> {
        let conn = self
            .inner
            .conn
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.inner.config.connect_timeout))
                    .set_response_timeout(Some(self.inner.config.response_timeout))
                    .set_number_of_retries(self.inner.config.reconnect_retries)
                    .set_max_delay(Duration::from_secs(2));
                ConnectionManager::new_with_config(self.inner.redis.clone(), config)
                    .await
                    .map_err(|e| {
                        let err = Error::from_redis(e, None);
                        // A handshake reply that does not parse means the peer is not a Redis
                        // server (a wrong port, an HTTP proxy): it cannot be reached, and no key
                        // was read, so it is not CorruptData.
                        if err.is_timeout() || err.is_unavailable() || err.is_corrupt_data() {
                            err.reclassify(
                                crate::ErrorKind::Unavailable,
                                format!("cannot connect to redis at {}", self.inner.address),
                            )
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
                        handoff_channel: self.inner.handoff_channel.clone(),
                        client_token: self.inner.token.clone(),
                        conn: self.connection().await?,
                        claim_window_ms: self.inner.config.claim_window.as_millis() as u64,
                    })
                } else {
                    None
                };
                Ok(Hub::start(
                    self.inner.redis.clone(),
                    self.inner.ns.clone(),
                    self.inner.config.connect_timeout,
                    fair,
                ))
            })
            .await
    }

    /// How many wait registrations this client currently holds (for tests and diagnostics).
    #[doc(hidden)]
    pub fn waiter_registrations(&self) -> usize {
        self.inner.hub.get().map_or(0, Hub::registrations)
    }

    /// How many release notices this client's hub has handed to its waiters so far (for the
    /// benchmark and diagnostics).
    #[doc(hidden)]
    pub fn notices_delivered(&self) -> u64 {
        self.inner.hub.get().map_or(0, Hub::notices)
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

/// The URL with any password replaced by `***`, for messages and `Debug`.
///
/// Everything before the last `@` counts as user info, even past a `/`, `?` or `#`: a password
/// with such a character left unencoded makes the URL invalid, and its error message shows it
/// redacted all the same. (A `@` in a path or fragment over-redacts, which is harmless.)
fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let Some(at) = rest.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    let redacted = match userinfo.split_once(':') {
        Some((user, _)) if !user.contains(['/', '?', '#']) => format!("{user}:***"),
        // `redis://secret@host` puts the password where a user name would be.
        _ => "***".to_owned(),
    };
    format!("{}://{}@{}", &url[..scheme_end], redacted, &rest[at + 1..])
}

fn describe_connection(client: &redis::Client) -> String {
    let info = client.get_connection_info();
    format!("{}/{}", info.addr(), info.redis_settings().db())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(
            redact_url("redis://user:pw@host:1/2"),
            "redis://user:***@host:1/2"
        );
        assert_eq!(redact_url("redis://:pw@host/0"), "redis://:***@host/0");
        assert_eq!(redact_url("rediss://pw@host"), "rediss://***@host");
        assert_eq!(
            redact_url("rediss://u:pw@host:1/0#insecure"),
            "rediss://u:***@host:1/0#insecure"
        );
        // Unencoded `/`, `?`, `#` and `@` in a password (an invalid URL) stay hidden too.
        assert_eq!(redact_url("redis://:pa/ss@host"), "redis://:***@host");
        assert_eq!(redact_url("redis://u:p?w#d@host"), "redis://u:***@host");
        assert_eq!(redact_url("redis://u:p@ss@host"), "redis://u:***@host");
        assert_eq!(redact_url("redis://pa/ss@host"), "redis://***@host");
    }

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
        ] {
            let err = Client::new(url).unwrap_err();
            assert!(err.is_invalid_input(), "{url}: {err:?}");
            for shown in [err.to_string(), format!("{err:?}")] {
                assert!(!shown.contains("secret"), "{url}: {shown}");
            }
        }
    }

    #[cfg(all(feature = "tls", not(feature = "tls-insecure")))]
    #[test]
    fn insecure_urls_need_the_feature() {
        let err = Client::new("rediss://127.0.0.1:1/#insecure").unwrap_err();
        assert!(err.is_invalid_input(), "{err:?}");
        assert!(err.to_string().contains("tls-insecure"), "{err}");
    }
}
