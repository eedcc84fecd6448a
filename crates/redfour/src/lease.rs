//! Lease arithmetic on the local monotonic clock: when a lease ends, how long a lock of a
//! given ttl stays valid, and whether an answer came back too late to count.
//!
//! Pure functions of `Instant`s and the [`Drift`] margin, shared by the engines (which judge
//! an attempt's answer), the wait loop (which counts a handoff's lease) and the guard (which
//! moves its deadline at each renewal).

use std::time::{Duration, Instant};

use crate::keys::Drift;

/// (time the acquire or renewal was sent) + ttl − drift margin, on the monotonic clock.
pub(crate) fn lease_deadline(sent: Instant, ttl: Duration, drift: Drift) -> Instant {
    sent + validity(ttl, drift)
}

/// How long a lock of `ttl` is valid from the moment its request was sent: ttl − drift
/// margin (Redlock's validity before the time the masters took is deducted), zero when the
/// margin eats the whole ttl.
pub(crate) fn validity(ttl: Duration, drift: Drift) -> Duration {
    ttl.saturating_sub(drift.of(ttl))
}

/// How long an answer granting a lock of `ttl` on one server may take and still count as
/// won: its validity, except for ttls so short that the drift margin would eat them whole
/// (a few ms), where it is the ttl itself.
pub(crate) fn validity_limit(ttl: Duration, drift: Drift) -> Duration {
    if ttl > drift.of(ttl) * 2 {
        validity(ttl, drift)
    } else {
        ttl
    }
}

/// Whether a lock acquired by a request sent at `sent` came back too late to be held (see
/// [`validity_limit`]).
pub(crate) fn won_too_late(sent: Instant, ttl: Duration, drift: Drift) -> bool {
    sent.elapsed() >= validity_limit(ttl, drift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_is_the_ttl_less_the_drift_margin() {
        let drift = Drift::default();
        assert_eq!(
            validity(Duration::from_millis(300), drift),
            Duration::from_millis(295)
        );
        assert_eq!(
            validity(Duration::from_secs(10), drift),
            Duration::from_millis(9_898)
        );
        assert_eq!(validity(Duration::from_millis(2), drift), Duration::ZERO);
        let sent = Instant::now();
        assert_eq!(
            lease_deadline(sent, Duration::from_millis(300), drift),
            sent + Duration::from_millis(295)
        );
    }

    #[test]
    fn a_single_server_judges_tiny_ttls_by_the_whole_ttl() {
        let drift = Drift::default();
        // The margin would eat them: the ttl itself is the limit.
        assert_eq!(
            validity_limit(Duration::from_millis(1), drift),
            Duration::from_millis(1)
        );
        assert_eq!(
            validity_limit(Duration::from_millis(4), drift),
            Duration::from_millis(4)
        );
        assert_eq!(
            validity_limit(Duration::from_millis(300), drift),
            Duration::from_millis(295)
        );
        let long_ago = Instant::now() - Duration::from_millis(5);
        assert!(won_too_late(long_ago, Duration::from_millis(4), drift));
        assert!(!won_too_late(Instant::now(), Duration::from_secs(1), drift));
    }
}
