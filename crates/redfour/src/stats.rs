//! [`Client::stats`](crate::Client::stats): a snapshot of what a client has been doing.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a [`Client`](crate::Client)'s activity, from
/// [`Client::stats`](crate::Client::stats).
///
/// The counters (`u64` fields) only grow, from zero when the client was built; take two
/// snapshots and subtract to see a rate. The gauges (`waiters`,
/// `background_cleanups_pending`) are the state at the moment of the snapshot. Every field is
/// read on its own (`Relaxed`), so a snapshot taken while the client works is not one instant
/// across fields. Clones of a client share its counters; separate clients do not.
///
/// More fields may come in later versions (the struct is `#[non_exhaustive]`).
///
/// # Examples
///
/// ```no_run
/// # async fn example(locks: redfour::Client) {
/// let stats = locks.stats();
/// if stats.leases_lost > 0 || stats.subscription_reconnects > 0 {
///     eprintln!("redfour: {stats:?}");
/// }
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Waits registered right now: one per pending [`acquire`](crate::LockBuilder::acquire)
    /// with a wait (and [`wait_acquire_lock`](crate::Client::wait_acquire_lock)), from its
    /// first attempt until it wins, gives up or is dropped. Zero once no wait is pending: a
    /// value that stays above the number of waits you expect points at leaked futures.
    pub waiters: usize,
    /// Notices handed to this client's waiters so far: a release notice wakes every waiter of
    /// the released lock (one notice each), a handoff notice wakes the one waiter it names.
    /// Without the fair queue a release costs one notice per waiter of that lock; with it,
    /// one.
    pub notices_delivered: u64,
    /// Locks handed straight to one of this client's waiters by a release (the fair queue's
    /// handoff), counted when the notice reaches a waiter that is still registered. A waiter
    /// then claims the lock with one renewal (counted in `renewals` when it succeeds).
    pub handoffs_received: u64,
    /// Successful renewals by this client's guards: [`LockGuard::renew`](crate::LockGuard::renew),
    /// [`renew_with`](crate::LockGuard::renew_with), keep-alive and handoff claims.
    /// [`Client::renew_lock`](crate::Client::renew_lock) is not a guard's and is not counted.
    pub renewals: u64,
    /// Renewals by this client's guards that ended in an error (Redis unreachable, a timeout,
    /// foreign data in the key; with Redlock, no majority answered): the lease was not
    /// extended. Keep-alive retries soon after each; the lease is lost only when
    /// its deadline passes first (then counted in `leases_lost`).
    pub renewal_failures: u64,
    /// Leases of this client's guards that ended while the guard was alive: a renewal found
    /// the lock missing (expired, deleted, lost in a restart) or held by someone else, or the
    /// keep-alive or a [`lost`](crate::LockGuard::lost) future saw the deadline pass without
    /// a confirmed renewal. Counted once per guard. A guard nobody renews or watches is not
    /// counted when its deadline merely passes.
    pub leases_lost: u64,
    /// Times the waiters' subscription to release notices came back after it had been up and
    /// dropped (a server restart, a failover, a broken connection); each Redlock master's
    /// subscription counts on its own. Notices sent while it was down are lost, so every
    /// waiter tries again at each reconnection. The command connection reconnects by itself
    /// inside the redis crate and is not counted; neither are the reconnections of a
    /// cluster's subscription connection, which the cluster client makes itself.
    pub subscription_reconnects: u64,
    /// Clean-up work running in the background right now: releases scheduled by dropped
    /// guards, clean-up after dropped acquires, waiters leaving the fair queue, handed-over
    /// locks passed on. [`Client::settle`](crate::Client::settle) waits for it to reach zero.
    pub background_cleanups_pending: usize,
}

/// The counters a client's guards bump, shared by the clones of a client. Increments are
/// `Relaxed`: they order nothing, and happen outside every lock.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) renewals: AtomicU64,
    pub(crate) renewal_failures: AtomicU64,
    pub(crate) leases_lost: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn read(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
