//! Exponential backoff: the one way this crate spaces out open-ended retries (reconnecting a
//! subscription, re-asking the sentinels, retrying an attempt while waiting). Two fixed
//! schedules are not backoffs and stay where they are used: a release's three quick retries
//! (`engine/direct.rs`) and a cluster subscriber's retry of one lock's channels (`hub.rs`).

use std::time::Duration;

/// Pauses that double from `first` up to `max`, and start again from `first` after
/// [`reset`](Backoff::reset) (a success).
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// `max` below `first` is taken as `first`: every pause is then `first`.
    pub(crate) fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max: max.max(first),
            next: first,
        }
    }

    /// The pause to take now; the one after it is twice as long, up to the maximum.
    pub(crate) fn next_pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        pause
    }

    /// Back to the first pause.
    pub(crate) fn reset(&mut self) {
        self.next = self.first;
    }

    /// Sleeps for the next pause.
    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.next_pause()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn doubles_up_to_the_maximum() {
        let mut b = Backoff::new(ms(25), ms(150));
        let pauses: Vec<u64> = (0..6).map(|_| b.next_pause().as_millis() as u64).collect();
        assert_eq!(pauses, [25, 50, 100, 150, 150, 150]);
    }

    #[test]
    fn reset_starts_again() {
        let mut b = Backoff::new(ms(50), ms(2000));
        b.next_pause();
        b.next_pause();
        assert_eq!(b.next_pause(), ms(200));
        b.reset();
        assert_eq!(b.next_pause(), ms(50));
    }

    #[test]
    fn a_maximum_below_the_first_pause_keeps_the_first() {
        let mut b = Backoff::new(ms(100), ms(10));
        assert_eq!(b.next_pause(), ms(100));
        assert_eq!(b.next_pause(), ms(100));
    }

    #[test]
    fn never_overflows() {
        let mut b = Backoff::new(Duration::MAX / 2, Duration::MAX);
        b.next_pause();
        let second = b.next_pause();
        assert!(second >= Duration::MAX / 2, "{second:?}");
        // Saturated: from then on, every pause is the same.
        assert_eq!(b.next_pause(), b.next_pause());
    }

    #[tokio::test(start_paused = true)]
    async fn wait_sleeps_the_next_pause() {
        let mut b = Backoff::new(ms(40), ms(1000));
        let start = tokio::time::Instant::now();
        b.wait().await;
        b.wait().await;
        assert_eq!(start.elapsed(), ms(120));
    }
}
