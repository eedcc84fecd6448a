//! The one error type of the crate and its kinds.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// What went wrong, in terms a caller can act on.
///
/// Query an [`Error`] with [`Error::kind`] or with its `is_*` methods. New kinds may be added in
/// minor releases, so a `match` needs a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller passed something unusable: an empty lock id, a ttl of zero or one beyond what
    /// Redis accepts, a bad URL or namespace. Nothing was sent to Redis.
    InvalidInput,
    /// Redis could not be reached (connection refused or dropped, the server is loading or
    /// read-only, the sentinels name no reachable master right now). If the connection dropped while the command was in
    /// flight, it may have run: an acquire that won this way is released in the background;
    /// a release or renewal can simply be retried. The command connection reconnects by itself
    /// for the next command.
    Unavailable,
    /// Redis did not answer in time. **The outcome is unknown**: the command may have run.
    Timeout,
    /// The data at a key is foreign or corrupt: a string where the lock hash should be, a
    /// counter that is not a number, a lock key without expiry or without an index. The key was
    /// left untouched.
    CorruptData,
    /// A server-side script failed in an unexpected way.
    Script,
    /// A bounded wait ran out while the lock was still held by someone else
    /// (see [`LockBuilder::acquire`](crate::LockBuilder::acquire)).
    NotAcquired,
    /// Any other error reported by Redis (for example `OOM`).
    Redis,
    /// An acquire won on the master was not acknowledged by as many replicas as
    /// [`ClientBuilder::replica_acks`](crate::ClientBuilder::replica_acks) asks for, in time; the
    /// lock was released. Transient: a waiting acquire keeps trying.
    NotReplicated,
    /// The lock was granted, but too late to be held: the answer (with Redlock, the answer of
    /// the majority) came after the lock's validity had run out, counted on this process's
    /// clock from the moment the request was sent (ttl less the drift margin; with one server
    /// and a ttl of a few ms, the whole ttl). What was granted was released: nobody holds the
    /// lock because of this attempt, and it is not held by someone else either. Slow or stalled
    /// servers (or a ttl too short for the round trips) cause it. Transient: a waiting acquire
    /// keeps trying until its wait runs out, and reports this if its last attempt ended so.
    ValidityExpired,
    /// With [`Topology::Redlock`](crate::Topology::Redlock): too few masters answered (or
    /// granted in time) to make a majority, because the others could not be reached or did not
    /// answer in time. What was won on a minority is released. A refinement of
    /// [`Unavailable`](ErrorKind::Unavailable) ([`Error::is_unavailable`] is true for it too),
    /// and as transient: a waiting acquire keeps trying while masters come back. When the
    /// masters that failed did so for a reason no retry mends (foreign data, a refused login),
    /// and they leave no majority possible, that master's own error is reported instead.
    QuorumLost,
    /// Redis refused this client: its login (a wrong password or user name, no password where
    /// one is required, a user that is disabled: `WRONGPASS`, `NOAUTH`, a refused `AUTH` or
    /// `HELLO`), or a command its ACL does not permit (`NOPERM`; with Redis 7.0, a script's
    /// command refused as "can't run this command"). Also when it is a sentinel that refused
    /// the login. **Not transient**: nothing changes until someone fixes the credentials or the
    /// ACL, so even a wait without a limit gives up at once with this error.
    AccessDenied,
    /// With [`Topology::Sentinel`](crate::Topology::Sentinel): every sentinel answered, and
    /// none of them monitors a master under the service name given (a mistyped name, or the
    /// wrong sentinels). **Not transient**: a wait without a limit gives up at once. When some
    /// sentinels could not be reached, or one knows the name but has no reachable master for
    /// it right now (a failover), the error is [`Unavailable`](ErrorKind::Unavailable) and
    /// transient instead.
    UnknownService,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::Unavailable => "redis unavailable",
            ErrorKind::Timeout => "timed out, outcome unknown",
            ErrorKind::CorruptData => "foreign or corrupt data",
            ErrorKind::Script => "script error",
            ErrorKind::NotAcquired => "lock not acquired",
            ErrorKind::Redis => "redis error",
            ErrorKind::NotReplicated => "not acknowledged by enough replicas",
            ErrorKind::ValidityExpired => "lock won too late, its validity had run out",
            ErrorKind::QuorumLost => "Redlock quorum lost",
            ErrorKind::AccessDenied => "redis refused access",
            ErrorKind::UnknownService => "unknown sentinel service",
        })
    }
}

/// The error type of every fallible operation in this crate.
///
/// It is small (one pointer), `Send + Sync + 'static`, and keeps the underlying
/// [`redis::RedisError`] (if any) as its [`source`](StdError::source). Its `Display` says what
/// went wrong (the kind, a message, the key) but not the cause: walk the source chain for that
/// (`anyhow`'s `{:#}` does), so that the cause is printed once.
///
/// # Examples
///
/// ```
/// let err = redfour::Client::builder("redis://127.0.0.1/")
///     .namespace("")
///     .build()
///     .unwrap_err();
/// assert!(err.is_invalid_input());
/// assert_eq!(err.kind(), redfour::ErrorKind::InvalidInput);
/// ```
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    message: String,
    key: Option<String>,
    holder_ttl: Option<Duration>,
    source: Option<BoxError>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            inner: Box::new(Inner {
                kind,
                message: message.into(),
                key: None,
                holder_ttl: None,
                source: None,
            }),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidInput, message)
    }

    pub(crate) fn with_key(mut self, key: impl Into<String>) -> Self {
        self.inner.key = Some(key.into());
        self
    }

    pub(crate) fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.inner.source = Some(source.into());
        self
    }

    pub(crate) fn not_acquired(key: &str, waited: Duration, holder_ttl: Duration) -> Self {
        let mut e = Error::new(
            ErrorKind::NotAcquired,
            format!(
                "still held by another holder after waiting {} ms (holder's remaining ttl {} ms)",
                waited.as_millis(),
                holder_ttl.as_millis()
            ),
        )
        .with_key(key);
        e.inner.holder_ttl = Some(holder_ttl);
        e
    }

    /// A lock granted after its validity ran out (and released): `took` from sending the
    /// request to the deciding answer, `validity` what the lock allowed. `by` says who granted.
    pub(crate) fn validity_expired(
        key: &str,
        by: &str,
        took: Duration,
        validity: Duration,
    ) -> Self {
        Error::new(
            ErrorKind::ValidityExpired,
            format!(
                "{by} granted the lock after {} ms, when its validity of {} ms had run out; it was released, and nobody holds it",
                took.as_millis(),
                validity.as_millis()
            ),
        )
        .with_key(key)
    }

    /// Whether a script found the fencing counter (not the lock) unusable.
    pub(crate) fn about_counter(err: &redis::RedisError) -> bool {
        matches!(
            err.code(),
            Some("REDFOUR_WRONGTYPE_COUNTER" | "REDFOUR_CORRUPT_COUNTER")
        )
    }

    /// Classifies an error of the Redis client.
    pub(crate) fn from_redis(err: redis::RedisError, key: Option<&str>) -> Self {
        use redis::{ErrorKind as RK, ServerErrorKind as SK};
        let code = err.code().map(str::to_owned);
        let (kind, message) = match (err.kind(), code.as_deref()) {
            (
                _,
                Some(
                    "REDFOUR_WRONGTYPE"
                    | "REDFOUR_CORRUPT"
                    | "REDFOUR_WRONGTYPE_COUNTER"
                    | "REDFOUR_CORRUPT_COUNTER",
                ),
            ) => (
                ErrorKind::CorruptData,
                script_detail(err.detail().unwrap_or("corrupt data")).to_owned(),
            ),
            (_, Some("WRONGTYPE")) => (
                ErrorKind::CorruptData,
                "a key holds a value of the wrong type".to_owned(),
            ),
            (_, Some(UNKNOWN_SERVICE)) => (
                ErrorKind::UnknownService,
                err.detail()
                    .unwrap_or("no sentinel knows the service")
                    .to_owned(),
            ),
            _ if err.is_timeout() => (
                ErrorKind::Timeout,
                "redis did not answer in time; the command may or may not have run".to_owned(),
            ),
            // Before any fault of reaching the server: a cluster client that could reach no
            // seed node reports an I/O error that carries the refusal of the last one.
            _ if refused_login(&err) => (
                ErrorKind::AccessDenied,
                "the login was refused: check the password and user name (or give them, if the server needs them)".to_owned(),
            ),
            _ if refused_command(&err) => (
                ErrorKind::AccessDenied,
                "a command of redfour is not permitted to this user (ACL)".to_owned(),
            ),
            (RK::Io | RK::ClusterConnectionNotFound, _) => {
                (ErrorKind::Unavailable, "cannot reach redis".to_owned())
            }
            // Between a master's failure and its replacement's promotion, the sentinels name
            // no usable master. (A service that no sentinel knows is told apart where the
            // sentinels are asked: see `UNKNOWN_SERVICE`.)
            (RK::MasterNameNotFoundBySentinel | RK::NoValidReplicasFoundBySentinel, _) => (
                ErrorKind::Unavailable,
                "the sentinels name no reachable master for the service right now".to_owned(),
            ),
            _ if err.is_connection_refusal()
                || err.is_connection_dropped()
                || err.is_io_error() =>
            {
                (ErrorKind::Unavailable, "cannot reach redis".to_owned())
            }
            (
                RK::Server(
                    SK::BusyLoading
                    | SK::ReadOnly
                    | SK::MasterDown
                    | SK::TryAgain
                    | SK::ClusterDown,
                ),
                _,
            ) => (
                ErrorKind::Unavailable,
                "redis cannot serve the request right now".to_owned(),
            ),
            // A script touched a key its node no longer has: the slot is being migrated.
            (RK::Server(SK::ResponseError), _)
                if err.detail().is_some_and(|d| d.contains("non local key")) =>
            {
                (
                    ErrorKind::Unavailable,
                    "the lock's slot is being migrated to another node; try again".to_owned(),
                )
            }
            (RK::Server(SK::ResponseError), _) | (RK::Extension, _) => {
                (ErrorKind::Script, "a redfour script failed".to_owned())
            }
            (RK::Parse | RK::UnexpectedReturnType, _) => (
                ErrorKind::CorruptData,
                "unexpected reply from redis".to_owned(),
            ),
            _ => (ErrorKind::Redis, "redis error".to_owned()),
        };
        let mut e = Error::new(kind, message);
        // That error was made here (see `conn.rs`), its text is the message: not a cause.
        if kind != ErrorKind::UnknownService {
            e = e.with_source(err);
        }
        if let Some(key) = key {
            e = e.with_key(key);
        }
        e
    }

    /// Keeps the source but states the error anew, e.g. to say where a connection failed.
    pub(crate) fn reclassify(mut self, kind: ErrorKind, message: impl Into<String>) -> Self {
        self.inner.kind = kind;
        self.inner.message = message.into();
        self
    }

    /// What went wrong, in words, without the kind, the key or the cause: the part of
    /// `Display` ("kind: message (key `k`)") a caller puts in sentences of its own.
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// The kind of error.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The Redis key involved, when there is one (e.g. the foreign key for
    /// [`ErrorKind::CorruptData`]).
    pub fn key(&self) -> Option<&str> {
        self.inner.key.as_deref()
    }

    /// For [`ErrorKind::NotAcquired`]: the holder's remaining ttl when the wait gave up.
    pub fn holder_ttl(&self) -> Option<Duration> {
        self.inner.holder_ttl
    }

    /// The caller passed unusable input; nothing was sent to Redis.
    pub fn is_invalid_input(&self) -> bool {
        self.kind() == ErrorKind::InvalidInput
    }

    /// Redis could not be reached: [`ErrorKind::Unavailable`], and with Redlock
    /// [`ErrorKind::QuorumLost`] (too few masters reached), which refines it.
    pub fn is_unavailable(&self) -> bool {
        matches!(self.kind(), ErrorKind::Unavailable | ErrorKind::QuorumLost)
    }

    /// Redlock: too few masters answered to make a majority (see [`ErrorKind::QuorumLost`]).
    pub fn is_quorum_lost(&self) -> bool {
        self.kind() == ErrorKind::QuorumLost
    }

    /// Redis refused this client's login or a command its ACL does not permit (see
    /// [`ErrorKind::AccessDenied`]); not transient.
    pub fn is_access_denied(&self) -> bool {
        self.kind() == ErrorKind::AccessDenied
    }

    /// No sentinel knows the service name (see [`ErrorKind::UnknownService`]); not transient.
    pub fn is_unknown_service(&self) -> bool {
        self.kind() == ErrorKind::UnknownService
    }

    /// Redis did not answer in time; the outcome of the command is unknown.
    pub fn is_timeout(&self) -> bool {
        self.kind() == ErrorKind::Timeout
    }

    /// The data at a key is foreign or corrupt; the key was left untouched.
    pub fn is_corrupt_data(&self) -> bool {
        self.kind() == ErrorKind::CorruptData
    }

    /// A server-side script failed unexpectedly.
    pub fn is_script(&self) -> bool {
        self.kind() == ErrorKind::Script
    }

    /// A bounded wait ran out while the lock was held by someone else.
    pub fn is_not_acquired(&self) -> bool {
        self.kind() == ErrorKind::NotAcquired
    }

    /// The lock was granted too late to be held, and released (see
    /// [`ErrorKind::ValidityExpired`]).
    pub fn is_validity_expired(&self) -> bool {
        self.kind() == ErrorKind::ValidityExpired
    }

    /// Whether trying again later may succeed without anyone changing anything: the errors a
    /// waiting acquire retries until its wait runs out (forever, without a limit).
    ///
    /// Transient: [`Unavailable`](ErrorKind::Unavailable) and
    /// [`QuorumLost`](ErrorKind::QuorumLost) (the server, or the masters, may come back),
    /// [`Timeout`](ErrorKind::Timeout) (it may answer faster next time; mind that the outcome
    /// of the command that timed out is unknown), [`NotReplicated`](ErrorKind::NotReplicated)
    /// and [`ValidityExpired`](ErrorKind::ValidityExpired) (the lock was released; the next
    /// grant may be acknowledged, or come in time).
    ///
    /// Not transient: everything else, because a retry meets the same answer until a person
    /// acts: [`InvalidInput`](ErrorKind::InvalidInput), [`CorruptData`](ErrorKind::CorruptData),
    /// [`Script`](ErrorKind::Script), [`Redis`](ErrorKind::Redis),
    /// [`AccessDenied`](ErrorKind::AccessDenied) (credentials or ACL to fix),
    /// [`UnknownService`](ErrorKind::UnknownService) (a service name to fix), and
    /// [`NotAcquired`](ErrorKind::NotAcquired) (the wait is over; waiting longer is the
    /// caller's choice). Kinds added later say where they fall in their docs.
    ///
    /// # Examples
    ///
    /// A retry loop of one's own around one-shot attempts:
    ///
    /// ```no_run
    /// # async fn example(locks: redfour::Client) -> redfour::Result<()> {
    /// use std::time::Duration;
    /// let guard = loop {
    ///     match locks.lock("report").try_acquire().await {
    ///         Ok(Some(guard)) => break guard,
    ///         Ok(None) => {}                        // held by someone else
    ///         Err(e) if e.is_transient() => {}      // Redis away for now: try again
    ///         Err(e) => return Err(e),              // a person has to act
    ///     }
    ///     tokio::time::sleep(Duration::from_millis(500)).await;
    /// };
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::Unavailable
                | ErrorKind::QuorumLost
                | ErrorKind::Timeout
                | ErrorKind::NotReplicated
                | ErrorKind::ValidityExpired
        )
    }
}

/// The code of the error the Sentinel connection makes when every sentinel answered that it
/// does not know the service (see `conn.rs`), read back here as [`ErrorKind::UnknownService`].
pub(crate) const UNKNOWN_SERVICE: &str = "REDFOUR_UNKNOWN_SERVICE";

/// A login refused by the server, in each way redis-rs reports one: `AuthenticationFailed`
/// for RESP2's `AUTH`, the server's own `WRONGPASS` (RESP3's `HELLO 3 AUTH`) or `NOAUTH` (no
/// password given), and inside the I/O error of a cluster client that reached no seed node,
/// which keeps only the text of the last refusal. Without a password, a server that needs one
/// answers a command of more than 10 arguments (a script call) with
/// `ERR Protocol error: unauthenticated multibulk length` (and a long argument with
/// `... unauthenticated bulk length`) before it gets to `NOAUTH`.
fn refused_login(err: &redis::RedisError) -> bool {
    const SIGNS: [&str; 6] = [
        "WRONGPASS",
        "NOAUTH",
        "AuthenticationFailed",
        "invalid username-password pair",
        "Authentication required",
        "Protocol error: unauthenticated",
    ];
    err.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(err.code(), Some("WRONGPASS" | "NOAUTH"))
        || err
            .detail()
            .is_some_and(|d| SIGNS.iter().any(|sign| d.contains(sign)))
}

/// A command the user's ACL does not permit: `NOPERM`, or (Redis 7.0) a plain `ERR` saying
/// that the user executing a script "can't run this command".
fn refused_command(err: &redis::RedisError) -> bool {
    err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm)
        || err.code() == Some("NOPERM")
        || err
            .detail()
            .is_some_and(|d| d.contains("can't run this command") || d.starts_with("NOPERM"))
}

/// The message of an error raised inside a script, without the location Redis appends
/// (`script: <sha>, on @user_script:12.`).
fn script_detail(detail: &str) -> &str {
    detail
        .split_once(" script: ")
        .map_or(detail, |(message, _)| message)
        .trim_end()
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("redfour::Error");
        d.field("kind", &self.inner.kind);
        d.field("message", &self.inner.message);
        if let Some(key) = &self.inner.key {
            d.field("key", key);
        }
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        d.finish()
    }
}

/// The kind, the message and the key, without the source: the cause is the next link of the
/// chain ([`std::error::Error::source`]), which reporters such as `anyhow` print themselves.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.inner.kind, self.inner.message)?;
        if let Some(key) = &self.inner.key {
            write!(f, " (key `{key}`)")?;
        }
        Ok(())
    }
}

impl Error {
    /// The error and its whole source chain on one line (`kind: message: cause: cause`), for
    /// the crate's own log lines, which have no reporter to walk the chain.
    pub(crate) fn report(&self) -> Report<'_> {
        Report(self)
    }
}

/// See [`Error::report`].
pub(crate) struct Report<'a>(&'a Error);

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last = self.0.to_string();
        f.write_str(&last)?;
        let mut cause = self.0.source();
        while let Some(next) = cause {
            let text = next.to_string();
            // Some errors (redis-rs's among them, and script errors quoted in ours) print their
            // source in their own text and return it from `source()` too: say it once.
            if !last.contains(&text) {
                write!(f, ": {text}")?;
            }
            last = text;
            cause = next.source();
        }
        Ok(())
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .source
            .as_ref()
            .map(|s| &**s as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_one_pointer() {
        assert_eq!(std::mem::size_of::<Error>(), std::mem::size_of::<usize>());
    }

    #[test]
    fn error_is_send_sync_static() {
        fn assert_impl<T: Send + Sync + 'static + StdError>() {}
        assert_impl::<Error>();
    }

    #[test]
    fn source_chain_keeps_the_redis_error() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let redis_err = redis::RedisError::from(io);
        let err = Error::from_redis(redis_err, Some("lock:a"));
        assert!(err.is_unavailable(), "{err:?}");
        assert_eq!(err.key(), Some("lock:a"));
        let source = err.source().expect("source kept");
        assert!(source.downcast_ref::<redis::RedisError>().is_some());
        // The cause is in the chain, not in the text: a reporter that prints the chain says
        // it once.
        let text = err.to_string();
        assert!(text.contains("lock:a"), "{text}");
        assert!(!text.contains("refused"), "{text}");
        assert!(source.to_string().contains("refused"), "{source}");
    }

    #[test]
    fn the_report_for_log_lines_carries_the_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = Error::from_redis(redis::RedisError::from(io), Some("lock:a"));
        let report = err.report().to_string();
        assert!(report.starts_with(&err.to_string()), "{report}");
        assert_eq!(report.matches("refused").count(), 1, "{report}");
        // An error without a source reports as its text.
        let plain = Error::invalid("bad ttl");
        assert_eq!(plain.report().to_string(), plain.to_string());
    }

    #[test]
    fn script_codes_map_to_corrupt_data() {
        let e = redis::make_extension_error(
            "REDFOUR_WRONGTYPE".into(),
            Some("lock key holds a string".into()),
        );
        assert!(!Error::about_counter(&e));
        let err = Error::from_redis(e, Some("lock:x"));
        assert!(err.is_corrupt_data(), "{err:?}");
        assert!(err.to_string().contains("holds a string"));
        for code in ["REDFOUR_WRONGTYPE_COUNTER", "REDFOUR_CORRUPT_COUNTER"] {
            let e = redis::make_extension_error(
                code.into(),
                Some("the counter is not an integer".into()),
            );
            assert!(Error::about_counter(&e), "{code}");
            assert!(Error::from_redis(e, None).is_corrupt_data(), "{code}");
        }
    }

    /// Every way redis-rs reports a refused login is `AccessDenied`, and not transient.
    #[test]
    fn a_refused_login_is_access_denied_in_every_form() {
        let resp3 = redis::make_extension_error(
            "WRONGPASS".into(),
            Some("invalid username-password pair or user is disabled.".into()),
        );
        let noauth =
            redis::make_extension_error("NOAUTH".into(), Some("Authentication required.".into()));
        let resp2 = redis::RedisError::from((
            redis::ErrorKind::AuthenticationFailed,
            "Password authentication failed",
        ));
        // A cluster client that reached no seed node keeps only the last refusal's text.
        let cluster = redis::RedisError::from((
            redis::ErrorKind::Io,
            "Failed to create initial connections",
            "\"WRONGPASS\": invalid username-password pair or user is disabled.".to_owned(),
        ));
        let cluster_resp2 = redis::RedisError::from((
            redis::ErrorKind::Io,
            "Failed to create initial connections",
            "Password authentication failed - AuthenticationFailed".to_owned(),
        ));
        let unauthenticated = redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError),
            "An error was signalled by the server",
            "Protocol error: unauthenticated multibulk length".to_owned(),
        ));
        // A sentinel that refused the login, as the sentinel client passes it on.
        let sentinel = redis::RedisError::from((
            redis::ErrorKind::AuthenticationFailed,
            "Password authentication failed",
        ));
        for (what, e) in [
            ("resp3", resp3),
            ("noauth", noauth),
            ("resp2", resp2),
            ("cluster", cluster),
            ("cluster resp2", cluster_resp2),
            ("no password, long command", unauthenticated),
            ("sentinel", sentinel),
        ] {
            let err = Error::from_redis(e, None);
            assert_eq!(err.kind(), ErrorKind::AccessDenied, "{what}: {err:?}");
            assert!(err.is_access_denied() && !err.is_transient(), "{what}");
            assert!(!err.is_unavailable(), "{what}");
            assert!(err.to_string().contains("password"), "{what}: {err}");
        }
        // A seed node that cannot be reached stays transient.
        let unreachable = redis::RedisError::from((
            redis::ErrorKind::Io,
            "Failed to create initial connections",
            "Connection refused (os error 111)".to_owned(),
        ));
        assert!(Error::from_redis(unreachable, None).is_transient());
    }

    #[test]
    fn a_command_refused_by_the_acl_is_access_denied() {
        let e = redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm),
            "An error was signalled by the server",
            "User reader has no permissions to run the 'evalsha' command".to_owned(),
        ));
        let err = Error::from_redis(e, Some("lock:x"));
        assert!(err.is_access_denied() && !err.is_transient(), "{err:?}");
        assert!(err.to_string().contains("refused"), "{err}");
    }

    #[test]
    fn an_unknown_service_is_not_transient_and_a_missing_master_is() {
        let unknown = redis::make_extension_error(
            UNKNOWN_SERVICE.into(),
            Some("none of the 3 sentinels monitors a master named `mymastr`".into()),
        );
        let err = Error::from_redis(unknown, None);
        assert!(err.is_unknown_service() && !err.is_transient(), "{err:?}");
        assert!(err.to_string().contains("`mymastr`"), "{err}");
        assert!(err.source().is_none(), "said once: {err:?}");
        // What redis-rs says when no sentinel names a usable master: during a failover too.
        let missing = redis::RedisError::from((
            redis::ErrorKind::MasterNameNotFoundBySentinel,
            "Master with given name not found in sentinel",
        ));
        let err = Error::from_redis(missing, None);
        assert!(err.is_unavailable() && err.is_transient(), "{err:?}");
    }

    #[test]
    fn transient_kinds() {
        for (kind, transient) in [
            (ErrorKind::InvalidInput, false),
            (ErrorKind::Unavailable, true),
            (ErrorKind::Timeout, true),
            (ErrorKind::CorruptData, false),
            (ErrorKind::Script, false),
            (ErrorKind::NotAcquired, false),
            (ErrorKind::Redis, false),
            (ErrorKind::NotReplicated, true),
            (ErrorKind::ValidityExpired, true),
            (ErrorKind::QuorumLost, true),
            (ErrorKind::AccessDenied, false),
            (ErrorKind::UnknownService, false),
        ] {
            assert_eq!(Error::new(kind, "x").is_transient(), transient, "{kind}");
        }
        let lost = Error::new(ErrorKind::QuorumLost, "1 of 3 masters answered");
        assert!(lost.is_quorum_lost() && lost.is_unavailable());
        assert!(!Error::new(ErrorKind::Unavailable, "x").is_quorum_lost());
    }

    #[test]
    fn a_command_refused_inside_a_script_is_access_denied() {
        let e = redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError),
            "An error was signalled by the server",
            "The user executing the script can't run this command or subcommand script: 1a2b, \
             on @user_script:182."
                .to_owned(),
        ));
        let err = Error::from_redis(e, Some("lock:x"));
        assert_eq!(err.kind(), ErrorKind::AccessDenied, "{err:?}");
        assert!(err.to_string().contains("refused"), "{err}");
    }

    #[test]
    fn script_locations_are_trimmed() {
        assert_eq!(
            script_detail("the counter is not an integer script: 1a2b, on @user_script:40."),
            "the counter is not an integer"
        );
        assert_eq!(script_detail("plain message"), "plain message");
    }

    #[test]
    fn kinds_are_queryable() {
        let e = Error::not_acquired("lock:a", Duration::from_millis(5), Duration::from_millis(7));
        assert!(e.is_not_acquired());
        assert!(!e.is_transient());
        assert_eq!(e.holder_ttl(), Some(Duration::from_millis(7)));
        assert!(Error::new(ErrorKind::Timeout, "t").is_transient());
        assert!(Error::invalid("x").is_invalid_input());
        let late = Error::validity_expired(
            "lock:a",
            "2 of 3 Redlock masters",
            Duration::from_millis(420),
            Duration::from_millis(297),
        );
        assert!(late.is_validity_expired() && late.is_transient());
        assert!(!late.is_not_acquired());
        let text = late.to_string();
        assert!(
            text.contains("420 ms") && text.contains("297 ms") && text.contains("nobody holds it"),
            "{text}"
        );
    }
}
