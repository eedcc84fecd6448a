//! Small statistics helpers: percentiles of latency samples, medians of rates, and the
//! process's resident set size.

use std::time::Duration;

/// Latency samples, sorted once so that percentiles are cheap.
#[derive(Debug, Clone)]
pub struct Latencies {
    sorted: Vec<Duration>,
}

impl Latencies {
    /// Sorts the samples. An empty set is allowed; its percentiles are zero.
    pub fn new(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        Latencies { sorted: samples }
    }

    /// The nearest-rank percentile `p` (0 < p ≤ 100): the smallest sample such that at least
    /// `p` percent of the samples are less than or equal to it.
    pub fn percentile(&self, p: f64) -> Duration {
        if self.sorted.is_empty() {
            return Duration::ZERO;
        }
        let n = self.sorted.len();
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        self.sorted[rank.clamp(1, n) - 1]
    }

    /// The median, in microseconds.
    pub fn p50_us(&self) -> f64 {
        micros(self.percentile(50.0))
    }

    /// The 99th percentile, in microseconds.
    pub fn p99_us(&self) -> f64 {
        micros(self.percentile(99.0))
    }

    /// Every sample in microseconds, in ascending order.
    pub fn sorted_us(&self) -> Vec<f64> {
        self.sorted.iter().map(|d| d.as_secs_f64() * 1e6).collect()
    }
}

/// A duration in microseconds, rounded to 0.1 µs for the report.
pub fn micros(d: Duration) -> f64 {
    round_to(d.as_secs_f64() * 1e6, 1)
}

/// A duration in milliseconds, rounded to 0.01 ms for the report.
pub fn millis(d: Duration) -> f64 {
    round_to(d.as_secs_f64() * 1e3, 2)
}

/// `value` rounded to `decimals` decimal places (keeps the JSON short and readable).
pub fn round_to(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// The median of `values` (the mean of the two middle ones for an even count); 0 when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// This process's resident set size in bytes (`VmRSS` in `/proc/self/status`); `None` where
/// that file does not exist (not Linux) or cannot be parsed.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let l = Latencies::new((1..=100).rev().map(Duration::from_micros).collect());
        assert_eq!(l.percentile(50.0), Duration::from_micros(50));
        assert_eq!(l.percentile(99.0), Duration::from_micros(99));
        assert_eq!(l.percentile(100.0), Duration::from_micros(100));
        assert_eq!(l.percentile(0.1), Duration::from_micros(1));
        assert_eq!(Latencies::new(Vec::new()).percentile(50.0), Duration::ZERO);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn rounding() {
        assert_eq!(micros(Duration::from_nanos(12_345)), 12.3);
        assert_eq!(millis(Duration::from_micros(1_236)), 1.24);
    }

    #[test]
    fn reads_own_rss_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(rss_bytes().is_some_and(|b| b > 0));
        }
    }
}
