//! The Node-shaped API: Node redfour's `acquireLock`, `waitAcquireLock`, `releaseLock` and
//! `renewLock` one to one, with their answers, plus a read-only `status`.

use std::time::Duration;

use tracing::Instrument;

use crate::client::Client;
use crate::engine::{undecided, Attempt, Meta};
use crate::error::Result;
use crate::keys::{check_index, ttl_millis};
use crate::metrics::{Kind, Wait};
use crate::outcome::{LockStatus, ReleaseOutcome, RenewOutcome};
use crate::wait::Waited;

/// The answer to an acquire: Node redfour's `acquireLock` / `waitAcquireLock` response.
///
/// When `success` is false, the lock is held by someone else: `index` is -1 and `ttl` is the
/// holder's remaining ttl.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AcquireResponse {
    /// The lock id, as given.
    pub id: String,
    /// Whether the lock was acquired.
    pub success: bool,
    /// The fencing index of the new holder, or -1 when not acquired.
    pub index: i64,
    /// The lock's ttl when acquired; the holder's remaining ttl when not.
    pub ttl: Duration,
    /// True when the first attempt won (always equal to `success` for a one-shot acquire).
    pub immediate: bool,
}

/// The answer to a release: Node redfour's `releaseLock` response.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReleaseResponse {
    /// The lock id, as given.
    pub id: String,
    /// True for [`ReleaseOutcome::Released`] and [`ReleaseOutcome::Expired`].
    pub success: bool,
    /// What happened.
    pub result: ReleaseOutcome,
    /// The released index; the current holder's index on conflict; -1 when expired. These are
    /// Node redfour's answers (a renewal's conflict answers -1 instead: see
    /// [`RenewResponse::index`]).
    pub index: i64,
}

/// The answer to a renewal: Node redfour's `renewLock` response.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RenewResponse {
    /// The lock id, as given.
    pub id: String,
    /// True only for [`RenewOutcome::Renewed`].
    pub success: bool,
    /// What happened.
    pub result: RenewOutcome,
    /// The caller's index when renewed, -1 otherwise: also on conflict, where a release names
    /// the holder's index ([`ReleaseResponse::index`]). Both are Node redfour's answers, kept
    /// for wire compatibility; [`Client::status`] tells who holds the lock.
    pub index: i64,
}

impl Client {
    /// Node's `acquireLock(id, ttl)`: one attempt, one round trip.
    ///
    /// On success the lock is held until `ttl` runs out or it is released with
    /// [`release_lock`](Client::release_lock) and the returned index. When someone else holds
    /// it, `success` is false and `ttl` is the holder's remaining ttl: that is an outcome, not
    /// an error. A lock granted too late to be held (the answer came after its validity had
    /// run out: ttl less the drift margin, counted from the request; the whole ttl for ttls of
    /// a few ms on one server) is released at once and reported as
    /// [`ErrorKind::ValidityExpired`](crate::ErrorKind::ValidityExpired): nobody holds it, and trying again may win. Prefer
    /// [`lock`](Client::lock), whose guard tracks the lease for you.
    ///
    /// With Redlock, the attempt is decided as soon as the masters' answers allow: a majority
    /// granted (the others are heard until their
    /// [node timeout](crate::ClientBuilder::node_timeout), never past a quarter of the
    /// validity), or a majority answered and no majority of grants is possible any more. A
    /// stalled minority costs an acquire that much at most, and does not eat its validity.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for an empty id or a ttl under 1 ms or over
    /// [`MAX_TTL`](crate::MAX_TTL), and with Redlock for a ttl that the drift margin leaves no
    /// validity (2 ms or less by default); [`ErrorKind::ValidityExpired`](crate::ErrorKind::ValidityExpired) for a lock granted
    /// too late (released); [`ErrorKind::CorruptData`](crate::ErrorKind::CorruptData) when the key holds foreign data (left
    /// untouched); [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable) or [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) for Redis faults (with
    /// Redlock, [`ErrorKind::QuorumLost`](crate::ErrorKind::QuorumLost) when too few masters answer);
    /// [`ErrorKind::AccessDenied`](crate::ErrorKind::AccessDenied) when Redis refuses the login or a command (ACL);
    /// [`ErrorKind::UnknownService`](crate::ErrorKind::UnknownService) when no sentinel knows the service.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. If the future is dropped after the request was sent and the lock is won on
    /// the server anyway, it is released in the background, not left held until its ttl.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example() -> redfour::Result<()> {
    /// use std::time::Duration;
    /// let locks = redfour::Client::new("redis://127.0.0.1/")?;
    /// let lock = locks.acquire_lock("report", Duration::from_secs(60)).await?;
    /// if lock.success {
    ///     // ... work ...
    ///     locks.release_lock("report", lock.index).await?;
    /// } else {
    ///     println!("held by someone else for {:?} more", lock.ttl);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn acquire_lock(&self, id: &str, ttl: Duration) -> Result<AcquireResponse> {
        let key = self.ctx().ns.lock_key(id)?;
        let ttl_ms = self.engine().acquire_ttl(ttl)?;
        let span = tracing::debug_span!("redfour.acquire", key, ttl_ms);
        let timer = Wait::attempt(&self.ctx().config, Kind::Lock, &key);
        let attempt = self
            .engine()
            .attempt(&key, ttl_ms, &Meta::default(), None, None)
            .instrument(span)
            .await;
        let attempt = timer.end(attempt)?;
        Ok(match attempt {
            Attempt::Acquired { index, ttl, .. } => AcquireResponse {
                id: id.to_owned(),
                success: true,
                index,
                ttl,
                immediate: true,
            },
            // Only a waiter with a queue token can be handed a lock.
            Attempt::Held { pttl, .. } | Attempt::HandedOver { pttl, .. } => AcquireResponse {
                id: id.to_owned(),
                success: false,
                index: -1,
                ttl: pttl,
                immediate: false,
            },
            Attempt::WonTooLate { error, .. } => return Err(error),
            // Only a waiting acquire has a cutoff.
            Attempt::Undecided => return Err(undecided(&key)),
        })
    }

    /// Node's `waitAcquireLock(id, ttl, waitTtl)`: acquire, waiting up to `wait` for the holder
    /// to let go (`None` or zero: wait forever).
    ///
    /// The waiter is woken by the holder's release notice (pub/sub, shared by every waiter of
    /// this client), or when the holder's ttl runs out, or after a reconnect. When the wait
    /// runs out, one last attempt is made and its answer returned: `success` false with the
    /// holder's remaining ttl. `immediate` tells whether the first attempt won.
    ///
    /// The wait is a bound. With Redlock, no attempt listens for the masters past the end of
    /// the wait plus 100 ms (or the node timeout, if shorter): the answer comes at most that
    /// late, plus one round trip when a majority had granted the lock by then (its adoption).
    /// On a single server the last attempt takes one round trip (up to the response timeout
    /// when the server stalls).
    ///
    /// # Errors
    ///
    /// As [`acquire_lock`](Client::acquire_lock). While waiting, Redis being unreachable and
    /// locks granted too late are retried (with backoff) until the wait runs out; if the last
    /// attempt that came to a decision failed that way, its error is returned
    /// ([`ErrorKind::ValidityExpired`](crate::ErrorKind::ValidityExpired), [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable), ...) rather than an answer.
    /// Errors that are not [transient](crate::Error::is_transient), such as a refused login
    /// ([`ErrorKind::AccessDenied`](crate::ErrorKind::AccessDenied)) or an unknown Sentinel service
    /// ([`ErrorKind::UnknownService`](crate::ErrorKind::UnknownService)), end the wait at once, also one without a limit.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. Dropping the future deregisters the waiter; if an attempt already won on
    /// the server, the lock is released in the background.
    pub async fn wait_acquire_lock(
        &self,
        id: &str,
        ttl: Duration,
        wait: Option<Duration>,
    ) -> Result<AcquireResponse> {
        let key = self.ctx().ns.lock_key(id)?;
        let ttl_ms = self.engine().acquire_ttl(ttl)?;
        let span = tracing::debug_span!(
            "redfour.wait",
            key,
            ttl_ms,
            wait_ms = wait.map(|w| w.as_millis() as u64)
        );
        let timer = Wait::start(&self.ctx().config, Kind::Lock, &key);
        let waited = self
            .waiting()
            .wait_for(&key, ttl_ms, &Meta::default(), wait, true)
            .instrument(span)
            .await;
        let waited = timer.end(waited)?;
        Ok(match waited {
            // Claimed already (`force_claim`): the ttl is what the server keeps.
            Waited::Acquired {
                index,
                ttl,
                immediate,
                ..
            } => AcquireResponse {
                id: id.to_owned(),
                success: true,
                index,
                ttl,
                immediate,
            },
            Waited::GaveUp { pttl, .. } => AcquireResponse {
                id: id.to_owned(),
                success: false,
                index: -1,
                ttl: pttl,
                immediate: false,
            },
        })
    }

    /// Node's `releaseLock(lock)`: releases the lock only if `index` is the current holder's.
    ///
    /// `released` deletes the lock and wakes waiters; `expired` means there was nothing to
    /// release (success); `conflict` means someone else holds it now, and nothing is touched.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for an empty id or an index under 1;
    /// [`ErrorKind::CorruptData`](crate::ErrorKind::CorruptData) when the key holds foreign data (left untouched);
    /// [`ErrorKind::AccessDenied`](crate::ErrorKind::AccessDenied) when Redis refuses the login or the command (ACL);
    /// [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable) / [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) for Redis faults, once four tries
    /// have failed: after a transient fault (unreachable, timed out) the release is sent up to
    /// three more times, 0, 50 and 200 ms apart, while the connection reconnects by itself
    /// (after a timeout the lock may or may not have been released; retrying is safe). Any
    /// other error ends it at once. When an earlier try broke off and a later one answers, the
    /// later one's answer is returned: `expired` or `conflict` may then mean that an earlier
    /// try released the lock. With Redlock each master gets these tries, and the release fails
    /// only when no master answered.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future after the request was sent does not cancel it: the lock may still
    /// be released. Retrying is safe: a second release answers `expired` or `conflict`.
    pub async fn release_lock(&self, id: &str, index: i64) -> Result<ReleaseResponse> {
        let key = self.ctx().ns.lock_key(id)?;
        check_index(index)?;
        let span = tracing::debug_span!("redfour.release", key, index);
        let (result, idx) = self
            .engine()
            .release(&key, index)
            .instrument(span.clone())
            .await?;
        span.in_scope(|| tracing::debug!(%result, holder_index = idx, "release"));
        Ok(ReleaseResponse {
            id: id.to_owned(),
            success: result != ReleaseOutcome::Conflict,
            result,
            index: idx,
        })
    }

    /// Node's `renewLock(lock, ttl)`: resets the lock's expiry to `ttl`, only for the holder
    /// with `index`.
    ///
    /// # Errors
    ///
    /// As [`release_lock`](Client::release_lock), plus [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for a bad
    /// ttl.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future after the request was sent does not cancel it; retrying is safe.
    pub async fn renew_lock(&self, id: &str, index: i64, ttl: Duration) -> Result<RenewResponse> {
        let key = self.ctx().ns.lock_key(id)?;
        check_index(index)?;
        let ttl_ms = ttl_millis(ttl)?;
        let span = tracing::debug_span!("redfour.renew", key, index, ttl_ms);
        let result = self
            .engine()
            .renew(&key, index, ttl_ms)
            .instrument(span.clone())
            .await?;
        span.in_scope(|| tracing::debug!(%result, "renew"));
        let success = result == RenewOutcome::Renewed;
        Ok(RenewResponse {
            id: id.to_owned(),
            success,
            result,
            index: if success { index } else { -1 },
        })
    }

    /// Who holds the lock `id`, with which index, for how much longer, and the holder's
    /// metadata (host, pid, description, acquired-at). One round trip, read-only.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::CorruptData`](crate::ErrorKind::CorruptData) when the key holds something other than a lock, a lock
    /// without an index, or a lock without expiry; Redis faults as usual.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it changes nothing.
    pub async fn status(&self, id: &str) -> Result<LockStatus> {
        let key = self.ctx().ns.lock_key(id)?;
        self.engine().status(id, &key).await
    }
}
