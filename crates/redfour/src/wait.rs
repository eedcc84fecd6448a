//! Waiting for a lock, written once for every engine: the waiter registers with the hub
//! before its first attempt, sleeps until a release notice, a handoff, the holder's expiry or
//! a resubscription, and turns a lock handed to it by the fair queue into a lease.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::backoff::Backoff;
use crate::cleanup::OnDrop;
use tokio::sync::OnceCell;

use crate::engine::{Attempt, Meta};
use crate::engine::{Context, Engine};
use crate::error::{Error, Result};
use crate::hub::Hub;
use crate::outcome::RenewOutcome;

/// What a wait ended with.
pub(crate) enum Waited {
    Acquired {
        index: i64,
        ttl: Duration,
        deadline: Instant,
        /// A handed-over lock lives only for the claim window until claimed.
        claim: bool,
        immediate: bool,
    },
    GaveUp {
        pttl: Duration,
        waited: Duration,
    },
}

/// A handed-over lock whose claim is in flight; released by index if the claim never
/// completes.
fn unclaimed<'a>(
    engine: &'a Engine,
    key: &'a str,
    index: i64,
) -> OnDrop<i64, impl FnOnce(i64) + 'a> {
    OnDrop::new(index, move |index| engine.release_in_background(key, index))
}

/// What a wait needs: the engine, and the hub (started on first use) that wakes it.
pub(crate) struct Waiting<'a> {
    pub(crate) engine: &'a Engine,
    pub(crate) hub: &'a OnceCell<Hub>,
}

impl<'w> Waiting<'w> {
    fn engine(&self) -> &Engine {
        self.engine
    }

    fn ctx(&self) -> &Context {
        self.engine.context()
    }

    /// The client's notification hub, started on first use.
    pub(crate) async fn hub(&self) -> Result<&Hub> {
        if let Some(hub) = self.hub.get() {
            return Ok(hub);
        }
        // Boxed: starting the hub (connecting, setting up the queue's clean-up) happens once
        // per client, and should not size every waiter's future.
        Box::pin(self.hub.get_or_try_init(|| async {
            let subscriptions = self.engine.subscriptions().await?;
            let ctx = self.ctx();
            Ok(Hub::start(
                subscriptions,
                ctx.ns.clone(),
                ctx.config.connect_timeout,
                ctx.cleanup.clone(),
            ))
        }))
        .await
    }

    /// Waits for the lock: registered for notices before the first attempt, woken by a release
    /// notice (or, with the fair queue, by the lock being handed over), by the holder's expiry,
    /// or by the subscription going down or coming back (notices may have been lost).
    // Not an `async fn` on purpose: see the comment on the async block.
    #[allow(clippy::manual_async_fn)]
    pub(crate) fn wait_for<'a>(
        &'a self,
        key: &'a str,
        ttl_ms: u64,
        meta: &'a Meta,
        wait: Option<Duration>,
        force_claim: bool,
    ) -> impl Future<Output = Result<Waited>> + use<'a, 'w> {
        // An async block rather than an `async fn`: an `async fn` keeps its arguments twice
        // in its state (rust-lang/rust#62958), and this state is what every parked waiter
        // holds.
        async move {
            let started = Instant::now();
            // A wait too long to represent is a wait forever.
            let deadline = wait
                .filter(|w| !w.is_zero())
                .and_then(|w| started.checked_add(w));
            // The fair queue's hub needs the command connection: while Redis is unreachable,
            // retry as the attempts below would, until the wait runs out.
            let max_poll = self.ctx().config.max_poll;
            let mut backoff = Backoff::new(Duration::from_millis(50), max_poll);
            let hub = loop {
                match self.hub().await {
                    Ok(hub) => break hub,
                    Err(e) if e.is_transient() && deadline.is_none_or(|d| Instant::now() < d) => {
                        let pause = backoff.next_pause();
                        tracing::warn!(key, error = %e.report(), retry_in_ms = pause.as_millis() as u64, "cannot reach redis to wait; retrying");
                        let wake = Instant::now() + pause;
                        tokio::time::sleep_until(deadline.map_or(wake, |d| d.min(wake)).into())
                            .await;
                    }
                    Err(e) => return Err(e),
                }
            };
            let registration = hub.register(key);
            {
                let mut limit = self.ctx().config.connect_timeout;
                if let Some(d) = deadline {
                    limit = limit.min(d.saturating_duration_since(Instant::now()));
                }
                // If the subscription is not up in time, try anyway: the fallback timer still
                // wakes this waiter, and the resubscription will too.
                registration.ready(limit).await;
            }
            let ttl = Duration::from_millis(ttl_ms);
            let token = registration.token();
            let mut first = true;
            backoff.reset();
            let mut last_pttl = Duration::ZERO;
            // The send time of the last attempt that found the lock held by someone else, and the
            // newest holder index such attempts saw. A handoff notice with an index above every
            // holder seen is newer than all those attempts, so a lease counted from the last one's
            // send time is never too long; a notice with an index at or below one of them is stale
            // (that handoff ran out unclaimed and someone else took the lock).
            let mut last_held_sent = started;
            let mut newest_holder_seen = 0_i64;
            // Why the last attempt that came to a decision failed, when not because the lock was
            // held: reported if the wait runs out with it.
            let mut last_failure: Option<Error> = None;
            loop {
                let attempt = self.engine().attempt(key, ttl_ms, meta, token, deadline);
                let pause = match attempt.await {
                    Ok(Attempt::Acquired { index, ttl, sent }) => {
                        registration.finish();
                        return Ok(Waited::Acquired {
                            index,
                            ttl,
                            deadline: crate::lease::lease_deadline(
                                sent,
                                ttl,
                                self.ctx().config.drift,
                            ),
                            claim: false,
                            immediate: first,
                        });
                    }
                    Ok(Attempt::HandedOver { index, pttl, sent }) => {
                        let until =
                            crate::lease::lease_deadline(sent, pttl, self.ctx().config.drift);
                        if let Some(waited) = self
                            .settle_handoff(key, index, ttl, until, force_claim)
                            .await?
                        {
                            registration.finish();
                            return Ok(waited);
                        }
                        Duration::ZERO
                    }
                    Ok(Attempt::Held { pttl, sent, holder }) => {
                        last_held_sent = sent;
                        // Unknown holder: treat any later notice as possibly stale.
                        newest_holder_seen = newest_holder_seen.max(holder.unwrap_or(i64::MAX));
                        backoff.reset();
                        last_pttl = pttl;
                        last_failure = None;
                        // Wake just after the holder's expiry, in case it never releases.
                        (pttl + Duration::from_millis(1)).clamp(Duration::from_millis(5), max_poll)
                    }
                    Ok(Attempt::WonTooLate { sent, index, error }) => {
                        // As for a held lock: the lock this attempt gave up may be handed on.
                        last_held_sent = sent;
                        newest_holder_seen = newest_holder_seen.max(index.unwrap_or(i64::MAX));
                        last_pttl = Duration::ZERO;
                        // Slow servers: back off as from a failure.
                        let pause = backoff.next_pause();
                        tracing::debug!(key, error = %error.report(), retry_in_ms = pause.as_millis() as u64, "won too late while waiting; retrying");
                        last_failure = Some(error);
                        pause
                    }
                    // Only at the end of the wait: the last decided attempt speaks for it.
                    Ok(Attempt::Undecided) => Duration::ZERO,
                    Err(e) if e.is_transient() => {
                        if deadline.is_some_and(|d| Instant::now() >= d) {
                            return Err(e);
                        }
                        let pause = backoff.next_pause();
                        tracing::warn!(key, error = %e.report(), retry_in_ms = pause.as_millis() as u64, "acquire attempt failed while waiting; retrying");
                        last_failure = Some(e);
                        pause
                    }
                    Err(e) => return Err(e),
                };
                first = false;
                let now = Instant::now();
                if let Some(d) = deadline {
                    if now >= d {
                        if let Some(token) = token {
                            // Leave the queue now rather than from the registration's drop (a
                            // background chore): a process that gives up and exits at once, as
                            // the CLI's `wait` does, must not leave an entry that a release would
                            // hand the lock to. Boxed: once per wait, and it should not size the
                            // waiter's future.
                            Box::pin(self.engine().leave_queue(key, token)).await;
                            registration.left();
                        }
                        if let Some(e) = last_failure {
                            return Err(e);
                        }
                        return Ok(Waited::GaveUp {
                            pttl: last_pttl,
                            waited: now - started,
                        });
                    }
                }
                let wake_at = deadline.map_or(now + pause, |d| d.min(now + pause));
                tokio::select! {
                    _ = registration.notified() => {
                        if let Some(handoff) = registration.take_handoff() {
                            if handoff.index <= newest_holder_seen {
                                // Either way the next attempt tells where the lock is.
                                tracing::debug!(key, index = handoff.index, "ignoring a stale handoff notice");
                            } else {
                                tracing::trace!(key, index = handoff.index, "the lock was handed over");
                                let until = crate::lease::lease_deadline(last_held_sent, handoff.window, self.ctx().config.drift);
                                if let Some(waited) = self
                                    .settle_handoff(key, handoff.index, ttl, until, force_claim)
                                    .await?
                                {
                                    registration.finish();
                                    return Ok(waited);
                                }
                            }
                        } else {
                            tracing::trace!(key, "woken by a release notice or a change of the subscription");
                        }
                    }
                    _ = tokio::time::sleep_until(wake_at.into()) => {}
                }
            }
        }
    }

    /// Turns a lock handed to this waiter into a lease. The server keeps a handed-over lock
    /// for the claim window only; when the lease counted from `until` is too short to claim
    /// the full ttl in the background (or the caller has no guard to do it, `force_claim`),
    /// claim it now. `None`: the handoff was lost meanwhile, or the claim's outcome is unknown
    /// (the lock is then released by its index, which passes it on); keep waiting.
    async fn settle_handoff(
        &self,
        key: &str,
        index: i64,
        ttl: Duration,
        until: Instant,
        force_claim: bool,
    ) -> Result<Option<Waited>> {
        // Waits are for plain locks only so far; other primitives will pass their kind.
        crate::metrics::handoff(&self.ctx().config, crate::metrics::Kind::Lock, key);
        // `until` counts the server's window from this waiter's last attempt, which can be up
        // to a poll interval older than the handoff: when that leaves less than half the ttl
        // (or nothing), claim the full ttl, as for a ttl longer than the claim window.
        let remaining = until.saturating_duration_since(Instant::now());
        // With replica acknowledgements, a handed-over lock (written by the releaser) is held
        // only once its claim was acknowledged: claim it now, whatever the ttl.
        let acks = self.engine().claims_now();
        let claim = ttl > self.ctx().config.claim_window || remaining < ttl / 2 || acks;
        if !claim || (!force_claim && !acks && remaining >= Duration::from_millis(50)) {
            return Ok(Some(Waited::Acquired {
                index,
                ttl,
                deadline: until,
                claim,
                immediate: false,
            }));
        }
        // Until the answer is read, nobody else knows this lock is ours: if this future is
        // dropped, or the claim fails in transit, release it by index (it goes to the next
        // waiter) rather than leave it held for a full ttl with no holder.
        let unclaimed = unclaimed(self.engine, key, index);
        let sent = Instant::now();
        let ttl_ms = ttl.as_millis() as u64;
        // Boxed, as the attempts are (see `Engine::attempt`): a claim's state is as large as
        // an attempt's, and most handoffs need none.
        let claimed = Box::pin(self.engine().claim(key, index, ttl_ms)).await;
        match claimed {
            Ok(RenewOutcome::Renewed) => {
                unclaimed.disarm();
                Ok(Some(Waited::Acquired {
                    index,
                    ttl,
                    deadline: crate::lease::lease_deadline(sent, ttl, self.ctx().config.drift),
                    claim: false,
                    immediate: false,
                }))
            }
            Ok(_) => {
                unclaimed.disarm();
                tracing::debug!(
                    key,
                    index,
                    "a handed-over lock expired before it was claimed"
                );
                Ok(None)
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(key, index, error = %e.report(), "claiming a handed-over lock failed; passing it on");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}
