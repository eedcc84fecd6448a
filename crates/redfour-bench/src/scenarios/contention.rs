//! `contention`: several processes' worth of clients fighting over one lock.
//!
//! Each worker has its own [`redfour::Client`] (its own connection and subscription, as
//! separate processes would) and loops `lock(id).acquire()` (the guard API, no wait limit)
//! → `release()` with nothing in between, until the run time is over; a worker that is waiting when the time
//! runs out finishes that wait. Every release therefore hands the lock to one of the others,
//! so the acquisition rate is the handoff rate. Per worker, the acquisitions and the longest
//! single wait are kept; the clients' `stats().notices_delivered` counters give the wakeups.

use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::report::Report;
use crate::scenarios::Ctx;
use crate::stack::{ping_latencies, BENCH_TTL};
use crate::stats::{millis, round_to, Latencies};
use crate::{BoxError, Result};

const NAME: &str = "contention";
const ID: &str = "contended";

/// What one worker did.
struct Tally {
    acquisitions: u64,
    longest_wait: Duration,
    /// Every wait, for the distribution (the longest alone says little on a shared machine).
    waits: Vec<Duration>,
}

/// Runs the workers for `contention_time`.
pub async fn run(ctx: &mut Ctx) -> Result<Report> {
    let workers = ctx.params.contention_workers;
    let run_time = ctx.params.contention_time;

    let mut clients = Vec::with_capacity(workers);
    for w in 0..workers {
        let client = ctx.target.client(NAME)?;
        // Open the command connection and the subscription now, on a lock of its own, so the
        // timed loop starts warm.
        let warm = format!("warm{w}");
        let got = client
            .wait_acquire_lock(&warm, BENCH_TTL, Some(Duration::from_secs(5)))
            .await?;
        if !got.success {
            return Err(format!("the warm-up lock {warm} was not free").into());
        }
        client.release_lock(&warm, got.index).await?;
        clients.push(client);
    }
    let mut conn = ctx.target.connection().await?;
    let rtt = ping_latencies(&mut conn, ctx.params.rtt_warmup, ctx.params.rtt_samples).await?;
    let notices_before: u64 = clients.iter().map(|c| c.stats().notices_delivered).sum();

    // A common start a little ahead, so that spawning does not favour the first workers.
    let start = Instant::now() + Duration::from_millis(20);
    let end = start + run_time;
    let mut set = JoinSet::new();
    for client in &clients {
        let client = client.clone();
        set.spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            let mut tally = Tally {
                acquisitions: 0,
                longest_wait: Duration::ZERO,
                waits: Vec::new(),
            };
            while Instant::now() < end {
                let asked = Instant::now();
                let guard = client.lock(ID).ttl(BENCH_TTL).acquire().await?;
                let waited = asked.elapsed();
                tally.longest_wait = tally.longest_wait.max(waited);
                tally.waits.push(waited);
                tally.acquisitions += 1;
                guard.release().await?;
            }
            Ok::<Tally, BoxError>(tally)
        });
    }
    let mut tallies = Vec::with_capacity(workers);
    // Bounded: a lost wake-up falls back on the poll interval, so the stragglers finish soon
    // after the end; a stuck library must not hang the bench.
    let limit = end + Duration::from_secs(30);
    while let Some(done) = tokio::time::timeout_at(limit.into(), set.join_next())
        .await
        .map_err(|_| "the contention workers did not finish 30 s after their end time")?
    {
        tallies.push(done??);
    }
    let elapsed = start.elapsed();

    let notices: u64 = clients.iter().map(|c| c.stats().notices_delivered).sum();
    let total: u64 = tallies.iter().map(|t| t.acquisitions).sum();
    let per_worker = tallies.iter().map(|t| t.acquisitions);
    let waits = Latencies::new(tallies.iter().flat_map(|t| t.waits.clone()).collect());
    Ok(Report::Contention {
        workers,
        seconds: round_to(elapsed.as_secs_f64(), 3),
        handoffs_per_s: round_to(total as f64 / elapsed.as_secs_f64(), 1),
        min_acquisitions: per_worker.clone().min().unwrap_or(0),
        max_acquisitions: per_worker.max().unwrap_or(0),
        max_wait_ms: millis(
            tallies
                .iter()
                .map(|t| t.longest_wait)
                .max()
                .unwrap_or_default(),
        ),
        wakeups_per_handoff: if total == 0 {
            0.0
        } else {
            round_to((notices - notices_before) as f64 / total as f64, 3)
        },
        rtt_p50_us: rtt.p50_us(),
        wait_p99_ms: millis(waits.percentile(99.0)),
    })
}
