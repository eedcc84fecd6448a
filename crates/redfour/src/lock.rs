//! The idiomatic way to take a lock: [`Client::lock`] and its [`LockBuilder`], which hand out
//! [`LockGuard`]s.

use std::fmt;
use std::time::Duration;

use tracing::Instrument;

use crate::client::Client;
use crate::engine::{undecided, Attempt, Meta};
use crate::error::{Error, Result};
use crate::guard::LockGuard;
use crate::metrics::{Kind, Wait};
use crate::wait::Waited;

impl Client {
    /// Starts building a lock on `id`; finish with [`LockBuilder::acquire`] or
    /// [`LockBuilder::try_acquire`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example() -> redfour::Result<()> {
    /// use std::time::Duration;
    /// let locks = redfour::Client::new("redis://127.0.0.1/")?;
    /// let guard = locks
    ///     .lock("token-refresh")
    ///     .ttl(Duration::from_secs(30))
    ///     .wait(Duration::from_secs(10))
    ///     .acquire()
    ///     .await?;
    /// println!("holding with fencing index {}", guard.index());
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    pub fn lock(&self, id: impl Into<String>) -> LockBuilder {
        LockBuilder {
            client: self.clone(),
            id: id.into(),
            ttl: LockBuilder::DEFAULT_TTL,
            wait: None,
            keep_alive: false,
            meta: Meta::default(),
        }
    }
}

/// Settings for taking one lock; created by [`Client::lock`].
#[must_use = "a lock builder does nothing until `acquire()` or `try_acquire()` is awaited"]
pub struct LockBuilder {
    client: Client,
    id: String,
    ttl: Duration,
    wait: Option<Duration>,
    keep_alive: bool,
    meta: Meta,
}

impl fmt::Debug for LockBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockBuilder")
            .field("id", &self.id)
            .field("ttl", &self.ttl)
            .field("wait", &self.wait)
            .field("keep_alive", &self.keep_alive)
            .finish_non_exhaustive()
    }
}

impl LockBuilder {
    /// The ttl used when none is set.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

    /// How long the lock lives on the server unless renewed or released: the bound on how long
    /// a crashed holder blocks everyone. Between 1 ms and [`MAX_TTL`](crate::MAX_TTL).
    ///
    /// Default: 30 s.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The longest [`acquire`](LockBuilder::acquire) waits for the holder to let go. Zero means
    /// forever, as in Node redfour. A bound, kept within a small slack (see
    /// [`Client::wait_acquire_lock`]), also when servers stall.
    ///
    /// Default: forever.
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = Some(wait);
        self
    }

    /// Renew the lease in the background every ttl/3 while the guard lives; the guard's
    /// [`lost`](LockGuard::lost) signal fires if a renewal finds the lock missing or taken, or
    /// the lease deadline passes without a confirmed renewal.
    ///
    /// Default: off.
    pub fn keep_alive(mut self, on: bool) -> Self {
        self.keep_alive = on;
        self
    }

    /// A free-text description stored with the lock (shown by `status`), e.g. what the holder
    /// is doing.
    ///
    /// Default: none.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.meta.description = Some(description.into().into());
        self
    }

    /// Acquires the lock, waiting for the holder to let go (forever unless
    /// [`wait`](LockBuilder::wait) bounds it).
    ///
    /// The returned guard holds the lock until it is released, its lease ends, or it is
    /// dropped (then it is released in the background).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotAcquired`](crate::ErrorKind::NotAcquired) when a bounded wait ran out (the holder's remaining ttl is in
    /// [`Error::holder_ttl`]); [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for an empty id or a bad ttl (with
    /// Redlock, one the drift margin leaves no validity); [`ErrorKind::CorruptData`](crate::ErrorKind::CorruptData) for
    /// foreign data at the key; Redis faults that outlast the wait as
    /// [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable) or [`ErrorKind::Timeout`](crate::ErrorKind::Timeout), and locks still granted too late
    /// when it runs out as [`ErrorKind::ValidityExpired`](crate::ErrorKind::ValidityExpired) (the last attempt's reason is
    /// reported). Errors that are not [transient](crate::Error::is_transient) end the wait at once,
    /// also one without a limit: a refused login or command ([`ErrorKind::AccessDenied`](crate::ErrorKind::AccessDenied)), a
    /// service no sentinel knows ([`ErrorKind::UnknownService`](crate::ErrorKind::UnknownService)).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future deregisters the waiter, and a lock won by an attempt in
    /// flight is released in the background.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example() -> redfour::Result<()> {
    /// use std::time::Duration;
    /// let locks = redfour::Client::new("redis://127.0.0.1/")?;
    /// match locks.lock("nightly").wait(Duration::from_secs(5)).acquire().await {
    ///     Ok(guard) => {
    ///         // ... work ...
    ///         guard.release().await?;
    ///     }
    ///     Err(e) if e.is_not_acquired() => println!("busy: {e}"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn acquire(self) -> Result<LockGuard> {
        let key = self.client.ctx().ns.lock_key(&self.id)?;
        let ttl_ms = self.client.engine().acquire_ttl(self.ttl)?;
        let span = tracing::debug_span!(
            "redfour.wait",
            key,
            ttl_ms,
            wait_ms = self.wait.map(|w| w.as_millis() as u64)
        );
        let timer = Wait::start(&self.client.ctx().config, Kind::Lock, &key);
        let waited = self
            .client
            .waiting()
            .wait_for(&key, ttl_ms, &self.meta, self.wait, false)
            .instrument(span)
            .await;
        let waited = timer.end(waited)?;
        match waited {
            Waited::Acquired {
                index,
                ttl,
                deadline,
                claim,
                immediate,
            } => Ok(LockGuard::new(
                self.client,
                self.id,
                key,
                index,
                ttl,
                deadline,
                immediate,
                self.keep_alive,
                claim,
            )),
            Waited::GaveUp { pttl, waited } => Err(Error::not_acquired(&key, waited, pttl)),
        }
    }

    /// One attempt, no waiting: `Ok(None)` when someone else holds the lock.
    ///
    /// # Errors
    ///
    /// As [`acquire`](LockBuilder::acquire), without `NotAcquired`:
    /// [`ErrorKind::ValidityExpired`](crate::ErrorKind::ValidityExpired) when the lock was granted too late to be held (it was
    /// released; nobody holds it, so this is not `Ok(None)`).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a lock won by the attempt in flight is released in the background.
    pub async fn try_acquire(self) -> Result<Option<LockGuard>> {
        let key = self.client.ctx().ns.lock_key(&self.id)?;
        let ttl_ms = self.client.engine().acquire_ttl(self.ttl)?;
        let span = tracing::debug_span!("redfour.acquire", key, ttl_ms);
        let timer = Wait::attempt(&self.client.ctx().config, Kind::Lock, &key);
        let attempt = self
            .client
            .engine()
            .attempt(&key, ttl_ms, &self.meta, None, None)
            .instrument(span)
            .await;
        match timer.end(attempt)? {
            Attempt::Acquired { index, ttl, sent } => {
                let deadline =
                    crate::lease::lease_deadline(sent, ttl, self.client.ctx().config.drift);
                Ok(Some(LockGuard::new(
                    self.client,
                    self.id,
                    key,
                    index,
                    ttl,
                    deadline,
                    true,
                    self.keep_alive,
                    false,
                )))
            }
            // Only a waiter with a queue token can be handed a lock.
            Attempt::Held { .. } | Attempt::HandedOver { .. } => Ok(None),
            Attempt::WonTooLate { error, .. } => Err(error),
            // Only a waiting acquire has a cutoff.
            Attempt::Undecided => Err(undecided(&key)),
        }
    }
}
