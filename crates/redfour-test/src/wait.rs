//! Polling with a deadline, so tests wait for conditions rather than for fixed durations.

use std::future::Future;
use std::time::{Duration, Instant};

/// How long to sleep between two evaluations of the condition.
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// Calls `f` every few milliseconds until it returns `true` or `deadline` has passed.
///
/// `f` is always called at least once, even with a zero deadline. Returns whether `f` returned
/// `true`; a `false` result means the deadline passed first. Blocks the current thread, so inside
/// an async runtime use [`wait_until_async`] instead.
///
/// # Examples
///
/// ```
/// use redfour_test::wait_until;
/// use std::time::{Duration, Instant};
///
/// let start = Instant::now();
/// assert!(wait_until(Duration::from_secs(5), || start.elapsed() >= Duration::from_millis(20)));
/// assert!(!wait_until(Duration::from_millis(10), || false));
/// ```
pub fn wait_until(deadline: Duration, f: impl FnMut() -> bool) -> bool {
    wait_until_every(deadline, POLL_INTERVAL, f)
}

/// [`wait_until`] with the pause between two evaluations chosen by the caller: for conditions
/// that are costly to check (a Sentinel group's master is asked of every sentinel and node).
///
/// # Examples
///
/// ```
/// use redfour_test::wait_until_every;
/// use std::time::Duration;
///
/// let mut calls = 0;
/// assert!(!wait_until_every(Duration::from_millis(30), Duration::from_millis(10), || {
///     calls += 1;
///     false
/// }));
/// assert!((2..=5).contains(&calls), "{calls}");
/// ```
pub fn wait_until_every(deadline: Duration, every: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if f() {
            return true;
        }
        let now = Instant::now();
        if now >= end {
            return false;
        }
        std::thread::sleep(every.min(end - now));
    }
}

/// Awaits `f()` every few milliseconds until it yields `true` or `deadline` has passed.
///
/// The async counterpart of [`wait_until`]: `f` is called at least once, and the result tells
/// whether the condition became true before the deadline. Sleeps with [`tokio::time::sleep`] and
/// measures with [`tokio::time::Instant`], so it needs a Tokio runtime with the time driver
/// enabled and follows paused time in `#[tokio::test(start_paused = true)]` tests.
///
/// # Cancel safety
///
/// Dropping the future stops the polling; a future returned by `f` that was being awaited is
/// dropped with it. Nothing else is left behind.
///
/// # Panics
///
/// Panics if called outside a Tokio runtime, or in one without the time driver.
///
/// # Examples
///
/// ```
/// use redfour_test::wait_until_async;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let calls = AtomicUsize::new(0);
/// let reached = wait_until_async(Duration::from_secs(5), || async {
///     calls.fetch_add(1, Ordering::SeqCst) >= 3
/// })
/// .await;
/// assert!(reached);
/// # }
/// ```
pub async fn wait_until_async<F, Fut>(deadline: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if f().await {
            return true;
        }
        let now = tokio::time::Instant::now();
        if now >= end {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL.min(end - now)).await;
    }
}
