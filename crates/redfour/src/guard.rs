//! The held lock.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::client::Client;
use crate::error::Result;
use crate::keys::{ttl_millis, Drift};
use crate::metrics::{End, Hold, Kind};
use crate::node::{ReleaseResponse, RenewResponse};
use crate::outcome::{ReleaseOutcome, RenewOutcome};
use crate::stats::Counters;

/// Why a lease ended while its guard was still alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LeaseLost {
    /// A renewal found the lock gone (it expired, or the server lost it in a restart).
    Missing,
    /// A renewal found the lock held by someone else.
    Conflict,
    /// The lease deadline passed without a confirmed renewal.
    Expired,
}

impl fmt::Display for LeaseLost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LeaseLost::Missing => "the lock is gone from the server",
            LeaseLost::Conflict => "someone else holds the lock",
            LeaseLost::Expired => "the lease deadline passed without a confirmed renewal",
        })
    }
}

/// Shared between the guard, its keep-alive task and `lost()` futures.
struct Lease {
    term: Mutex<Term>,
    /// Signalled at every successful renewal, so that keep-alive reschedules after one it did
    /// not make.
    renewed: tokio::sync::Notify,
    drift: Drift,
    lost: watch::Sender<Option<LeaseLost>>,
    /// The client's [`Stats`](crate::Stats) counters.
    counters: Arc<Counters>,
    /// The holding as the metrics see it (feature `metrics`).
    hold: Hold,
}

/// The lease as the latest renewal (or the acquire) set it.
#[derive(Clone, Copy)]
struct Term {
    deadline: Instant,
    /// What `ttl()` reports and what keep-alive renews with.
    ttl: Duration,
    /// When the renewal that set this term was sent (at first, when the guard was made).
    sent: Instant,
}

impl Lease {
    fn term(&self) -> Term {
        *crate::sync::lock(&self.term)
    }

    fn deadline(&self) -> Instant {
        self.term().deadline
    }

    fn ttl(&self) -> Duration {
        self.term().ttl
    }

    /// A renewal sent at `sent` with `ttl` succeeded. Renewals that overlap (keep-alive's and a
    /// `renew_with`) go out in order on one connection and the server applies the last one
    /// sent, so an answer to an earlier one that comes back later changes nothing.
    fn extend(&self, sent: Instant, ttl: Duration) {
        {
            let mut term = crate::sync::lock(&self.term);
            if sent < term.sent {
                return;
            }
            *term = Term {
                deadline: crate::lease::lease_deadline(sent, ttl, self.drift),
                ttl,
                sent,
            };
        }
        self.renewed.notify_one();
    }

    fn mark_lost(&self, why: LeaseLost) {
        self.lost.send_if_modified(|l| {
            if l.is_none() {
                // Counted before the watchers are woken, so that whoever sees the loss also
                // sees it counted.
                Counters::bump(&self.counters.leases_lost);
                self.hold.lost();
                *l = Some(why);
                true
            } else {
                false
            }
        });
    }

    fn lost_now(&self) -> Option<LeaseLost> {
        if let Some(l) = *self.lost.borrow() {
            return Some(l);
        }
        (Instant::now() >= self.deadline()).then_some(LeaseLost::Expired)
    }
}

/// A held lock. Obtained from [`LockBuilder::acquire`](crate::LockBuilder::acquire) or
/// [`LockBuilder::try_acquire`](crate::LockBuilder::try_acquire).
///
/// The lease is counted on this process's monotonic clock from the moment the acquire was
/// *sent*, minus the client's drift margin ([`ClientBuilder::clock_drift`](crate::ClientBuilder::clock_drift),
/// by default 1% of the ttl + 2 ms): [`deadline`](LockGuard::deadline) is therefore never
/// later than the server's expiry, as long as the clocks drift apart by less than that margin. Past it, another client may hold the lock;
/// pass [`index`](LockGuard::index) to the resources you write so they can reject stale
/// writers.
///
/// Release it with [`release`](LockGuard::release). Dropping the guard instead only
/// *schedules* a release on the current Tokio runtime (best effort: with no runtime, or if
/// the request fails, the lock stays until its ttl ends).
#[must_use = "the lock is released (in the background) as soon as the guard is dropped"]
pub struct LockGuard {
    client: Client,
    id: String,
    key: String,
    index: i64,
    immediate: bool,
    lease: Arc<Lease>,
    keep_alive: Option<JoinHandle<()>>,
    released: bool,
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("key", &self.key)
            .field("index", &self.index)
            .field("ttl", &self.ttl())
            .field("remaining", &self.remaining())
            .field("keep_alive", &self.keep_alive.is_some())
            .finish_non_exhaustive()
    }
}

impl LockGuard {
    /// `deadline` is the end of the lease as counted by the caller; `claim` says the server
    /// keeps the lock only for the fair queue's claim window until it is renewed to `ttl`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        client: Client,
        id: String,
        key: String,
        index: i64,
        ttl: Duration,
        deadline: Instant,
        immediate: bool,
        keep_alive: bool,
        claim: bool,
    ) -> LockGuard {
        let (lost, _) = watch::channel(None);
        let lease = Arc::new(Lease {
            term: Mutex::new(Term {
                deadline,
                ttl,
                sent: Instant::now(),
            }),
            renewed: tokio::sync::Notify::new(),
            drift: client.ctx().config.drift,
            lost,
            counters: client.ctx().counters.clone(),
            hold: Hold::start(&client.ctx().config, Kind::Lock, &key),
        });
        tracing::debug!(
            key,
            index,
            ttl_ms = ttl.as_millis() as u64,
            claim,
            "lock acquired"
        );
        let keep_alive = (keep_alive || claim).then(|| {
            let span = tracing::debug_span!("redfour.keep_alive", key, index);
            // A claim is due well before the claim window ends; renewals every ttl/3.
            let first = if claim {
                deadline.saturating_duration_since(Instant::now()) / 3
            } else {
                ttl / 3
            };
            tokio::spawn(
                keep_alive_loop(
                    client.clone(),
                    key.clone(),
                    index,
                    lease.clone(),
                    first,
                    keep_alive,
                )
                .instrument(span),
            )
        });
        LockGuard {
            client,
            id,
            key,
            index,
            immediate,
            lease,
            keep_alive,
            released: false,
        }
    }

    /// The lock id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The fencing index: strictly greater than the index of every earlier holder of any lock
    /// in this namespace. Give it to the resources you write, so that they reject a writer
    /// whose index is older than one they have seen.
    pub fn index(&self) -> i64 {
        self.index
    }

    /// The ttl the lock was acquired with, or last renewed with: a successful
    /// [`renew_with`](LockGuard::renew_with) changes it, and so changes what
    /// [`renew`](LockGuard::renew) and keep-alive renew with from then on. A failed or
    /// refused renewal leaves it as it was.
    pub fn ttl(&self) -> Duration {
        self.lease.ttl()
    }

    /// Whether the first attempt won (no waiting was needed).
    pub fn acquired_immediately(&self) -> bool {
        self.immediate
    }

    /// The end of the lease on this process's monotonic clock. Renewals move it.
    pub fn deadline(&self) -> Instant {
        self.lease.deadline()
    }

    /// Time left until [`deadline`](LockGuard::deadline), zero once it has passed.
    pub fn remaining(&self) -> Duration {
        self.deadline().saturating_duration_since(Instant::now())
    }

    /// Why the lease is over, if it is: a renewal found the lock missing or taken, or the
    /// deadline passed.
    pub fn lost_reason(&self) -> Option<LeaseLost> {
        self.lease.lost_now()
    }

    /// Whether the lease is over (see [`lost_reason`](LockGuard::lost_reason)).
    pub fn is_lost(&self) -> bool {
        self.lost_reason().is_some()
    }

    /// Resolves when the lease is lost: a renewal (by [`renew`](LockGuard::renew) or the
    /// keep-alive) answers `missing` or `conflict`, or the deadline passes without a
    /// confirmed renewal. Never resolves while the lease is healthy.
    ///
    /// The future owns what it needs (`'static`), so it can be moved into `select!` beside the
    /// work it guards.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only observes.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example(locks: redfour::Client) -> redfour::Result<()> {
    /// # async fn do_work() {}
    /// let guard = locks.lock("job").keep_alive(true).acquire().await?;
    /// tokio::select! {
    ///     _ = do_work() => guard.release().await.map(|_| ())?,
    ///     why = guard.lost() => eprintln!("stopped: lease lost ({why})"),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn lost(&self) -> impl Future<Output = LeaseLost> + Send + 'static {
        let lease = self.lease.clone();
        async move {
            let mut rx = lease.lost.subscribe();
            loop {
                if let Some(why) = *rx.borrow_and_update() {
                    return why;
                }
                let deadline = lease.deadline();
                if Instant::now() >= deadline {
                    lease.mark_lost(LeaseLost::Expired);
                    continue;
                }
                tokio::select! {
                    changed = rx.changed() => {
                        if changed.is_err() {
                            // The guard is gone: its lease ends at the deadline.
                            tokio::time::sleep_until(lease.deadline().into()).await;
                            return LeaseLost::Expired;
                        }
                    }
                    _ = tokio::time::sleep_until(deadline.into()) => {}
                }
            }
        }
    }

    /// Resets the lock's expiry to the guard's [`ttl`](LockGuard::ttl) and moves the deadline,
    /// if this guard still holds the lock. A `missing` or `conflict` answer marks the lease lost.
    ///
    /// # Errors
    ///
    /// Redis faults as [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable) or
    /// [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) (the deadline does not move; with
    /// Redlock, [`ErrorKind::QuorumLost`](crate::ErrorKind::QuorumLost) when too few masters
    /// answer); [`ErrorKind::AccessDenied`](crate::ErrorKind::AccessDenied) when Redis refuses
    /// the command; [`ErrorKind::CorruptData`](crate::ErrorKind::CorruptData) if the key was
    /// overwritten with foreign data.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future after the request was sent does not cancel it on the server, but
    /// the deadline only moves when the answer is read.
    pub async fn renew(&self) -> Result<RenewResponse> {
        self.renew_with(self.lease.ttl()).await
    }

    /// As [`renew`](LockGuard::renew), with another ttl. When the renewal succeeds, `ttl`
    /// becomes the guard's [`ttl`](LockGuard::ttl): later renewals, keep-alive's included,
    /// use it too (keep-alive also renews every `ttl`/3 from then on).
    ///
    /// # Errors
    ///
    /// As [`renew`](LockGuard::renew), plus [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput)
    /// for a bad ttl.
    ///
    /// # Cancel safety
    ///
    /// As [`renew`](LockGuard::renew).
    pub async fn renew_with(&self, ttl: Duration) -> Result<RenewResponse> {
        let ttl_ms = ttl_millis(ttl)?;
        let span =
            tracing::debug_span!("redfour.renew", key = self.key, index = self.index, ttl_ms);
        let result = renew_once(
            &self.client,
            &self.key,
            self.index,
            ttl,
            ttl_ms,
            &self.lease,
        )
        .instrument(span)
        .await?;
        let success = result == RenewOutcome::Renewed;
        Ok(RenewResponse {
            id: self.id.clone(),
            success,
            result,
            index: if success { self.index } else { -1 },
        })
    }

    /// Releases the lock (only if this guard still holds it: `conflict` means someone else
    /// does, and nothing was touched) and wakes the waiters.
    ///
    /// # Errors
    ///
    /// Redis faults as [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable) or
    /// [`ErrorKind::Timeout`](crate::ErrorKind::Timeout), after the retries that
    /// [`Client::release_lock`](crate::Client::release_lock) makes; the guard is consumed anyway
    /// and one more release is scheduled in the background.
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped, the guard it owns is dropped, which schedules a release in
    /// the background: the lock is released either way.
    pub async fn release(mut self) -> Result<ReleaseResponse> {
        if let Some(task) = self.keep_alive.take() {
            task.abort();
        }
        let span = tracing::debug_span!("redfour.release", key = self.key, index = self.index);
        let (result, index) = self
            .client
            .engine()
            .release(&self.key, self.index)
            .instrument(span)
            .await?;
        self.released = true;
        self.lease.hold.end(End::of_release(result));
        match result {
            ReleaseOutcome::Released => tracing::debug!(key = self.key, index, "lock released"),
            other => {
                tracing::info!(key = self.key, index = self.index, result = %other, "lock was no longer ours at release")
            }
        }
        Ok(ReleaseResponse {
            id: self.id.clone(),
            success: result != ReleaseOutcome::Conflict,
            result,
            index,
        })
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Some(task) = self.keep_alive.take() {
            task.abort();
        }
        self.lease.hold.end(End::Dropped);
        if !self.released {
            self.client
                .engine()
                .release_in_background(&self.key, self.index);
        }
    }
}

async fn renew_once(
    client: &Client,
    key: &str,
    index: i64,
    ttl: Duration,
    ttl_ms: u64,
    lease: &Lease,
) -> Result<RenewOutcome> {
    let sent = Instant::now();
    let result = client.engine().renew(key, index, ttl_ms).await;
    lease.hold.renewal(&result);
    let result = match result {
        Ok(result) => result,
        Err(e) => {
            Counters::bump(&lease.counters.renewal_failures);
            return Err(e);
        }
    };
    match result {
        RenewOutcome::Renewed => {
            Counters::bump(&lease.counters.renewals);
            lease.extend(sent, ttl);
        }
        RenewOutcome::Missing => {
            tracing::warn!(key, index, "lease lost: the lock is gone from the server");
            lease.mark_lost(LeaseLost::Missing);
        }
        RenewOutcome::Conflict => {
            tracing::warn!(key, index, "lease lost: someone else holds the lock");
            lease.mark_lost(LeaseLost::Conflict);
        }
    }
    Ok(result)
}

/// Renews every ttl/3 until the lease is lost (or, with `repeat` off, renews once: the claim
/// of a handed-over lock); never outlives its guard (aborted on drop). The ttl is the lease's
/// current one, read at each renewal, so that a `renew_with` in between sticks.
async fn keep_alive_loop(
    client: Client,
    key: String,
    index: i64,
    lease: Arc<Lease>,
    first: Duration,
    repeat: bool,
) {
    let mut next = Instant::now() + first;
    loop {
        let deadline = lease.deadline();
        tokio::select! {
            () = tokio::time::sleep_until(next.min(deadline).into()) => {}
            () = lease.renewed.notified() => {
                // A renewal succeeded meanwhile (`renew_with`, or this loop's own): the next
                // one is due a third of its ttl from now.
                next = Instant::now() + (lease.ttl() / 3).max(Duration::from_millis(1));
                continue;
            }
        }
        // Read after the sleep, so that a `renew_with` meanwhile sets the ttl renewed with.
        let ttl = lease.ttl();
        let period = (ttl / 3).max(Duration::from_millis(1));
        let Ok(ttl_ms) = ttl_millis(ttl) else { return };
        if lease.lost.borrow().is_some() {
            return;
        }
        if Instant::now() >= lease.deadline() {
            tracing::warn!(
                key,
                index,
                "lease lost: the deadline passed without a confirmed renewal"
            );
            lease.mark_lost(LeaseLost::Expired);
            return;
        }
        match renew_once(&client, &key, index, ttl, ttl_ms, &lease).await {
            Ok(RenewOutcome::Renewed) => {
                tracing::trace!(key, index, "lease renewed");
                if !repeat {
                    return;
                }
                next = Instant::now() + period;
            }
            Ok(_) => return,
            Err(e) => {
                // Try again soon; the deadline decides when the lease is lost.
                let retry = (period / 4).max(Duration::from_millis(10));
                tracing::warn!(key, index, error = %e.report(), retry_in_ms = retry.as_millis() as u64, "lease renewal failed");
                next = Instant::now() + retry;
            }
        }
    }
}
