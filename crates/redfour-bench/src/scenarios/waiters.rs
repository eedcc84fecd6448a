//! `waiters`: thousands of waiters in one process, on one client.
//!
//! A holder client takes `n` locks (ttl 60 s, so none expires during the scenario). A second
//! client, created only now, starts `n` tokio tasks, each waiting on one of the locks with
//! `wait_acquire_lock` and no wait limit. Once every waiter is registered and has made its
//! first attempt, the scenario notes:
//!
//! - `connections`: the server connections that appeared since just before the waiting client
//!   was created (`CLIENT LIST` ids after minus before). The bench's admin connection and the
//!   holder's connection already existed then, so they are not counted.
//! - `rss_growth_mb`: the growth of this process's resident memory (`VmRSS`, MiB) from just
//!   before the waiters were spawned: the waiter tasks, their registrations and whatever the
//!   client keeps per waiter. Freed memory mostly stays with the allocator, so this also
//!   counts the peak of the burst of `n` first attempts in flight at once.
//!
//! Then the holder releases every lock and every waiter must acquire its own (and releases it
//! again); `all_acquired` says whether all did before the scenario's time bound.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::report::Report;
use crate::scenarios::Ctx;
use crate::stack::BENCH_TTL;
use crate::stats::{round_to, rss_bytes};
use crate::{BoxError, Result};

const NAME: &str = "waiters";

/// The holder's ttl: longer than the scenario may last.
const HOLD_TTL: Duration = Duration::from_secs(60);

/// How many of the holder's acquires and releases are in flight at once.
const LANES: usize = 64;

/// Runs the scenario within `waiters_timeout`.
pub async fn run(ctx: &mut Ctx) -> Result<Report> {
    let n = ctx.params.waiters;
    let deadline = Instant::now() + ctx.params.waiters_timeout;
    let holder = ctx.target.client(NAME)?;
    holder.ping().await?;
    let ids: Arc<[String]> = (0..n).map(|i| format!("w{i}")).collect();
    let indexes = hold_all(&holder, &ids).await?;

    let before = ctx.admin.client_ids().await?;
    let attempts_before = ctx.admin.evalsha_calls().await?;
    let waiting = ctx.target.client(NAME)?;
    let rss_before = rss_bytes();

    let mut set = JoinSet::new();
    for id in ids.iter() {
        let (waiting, id) = (waiting.clone(), id.clone());
        set.spawn(async move {
            let got = waiting.wait_acquire_lock(&id, BENCH_TTL, None).await?;
            if got.success {
                waiting.release_lock(&id, got.index).await?;
            }
            Ok::<bool, BoxError>(got.success)
        });
    }

    // Every waiter registered, then every first attempt executed: the steady state of `n`
    // parked waiters.
    let mut registered = false;
    while Instant::now() < deadline {
        if waiting.stats().waiters >= n {
            registered = true;
            break;
        }
        // Counting the registrations walks the hub's map: poll gently.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if let (true, Some(calls)) = (registered, attempts_before) {
        let limit = deadline.saturating_duration_since(Instant::now());
        ctx.admin
            .wait_for_evalsha_calls(calls + n as u64, limit)
            .await?;
    }
    let rss_after = rss_bytes();
    let after = ctx.admin.client_ids().await?;
    let connections = after.difference(&before).count();

    release_all(&holder, &ids, indexes).await?;
    let mut acquired = 0;
    let mut first_error = None;
    loop {
        match tokio::time::timeout_at(deadline.into(), set.join_next()).await {
            Ok(None) => break,
            Ok(Some(Ok(Ok(true)))) => acquired += 1,
            Ok(Some(Ok(Ok(false)))) => {}
            Ok(Some(Ok(Err(e)))) => {
                first_error.get_or_insert_with(|| e.to_string());
            }
            Ok(Some(Err(e))) => {
                first_error.get_or_insert_with(|| e.to_string());
            }
            Err(_) => {
                first_error.get_or_insert_with(|| {
                    format!(
                        "{} waiters still waiting at the time bound",
                        n - acquired.min(n)
                    )
                });
                break;
            }
        }
    }
    // Dropping the set aborts any waiter still pending.
    drop(set);
    if let Some(e) = first_error {
        eprintln!("waiters: {acquired} of {n} acquired; first problem: {e}");
    }

    Ok(Report::Waiters {
        waiters: n,
        connections,
        rss_growth_mb: rss_before
            .zip(rss_after)
            .map(|(b, a)| round_to((a as f64 - b as f64) / (1024.0 * 1024.0), 2)),
        all_acquired: acquired == n && registered,
    })
}

/// The holder takes every lock, `LANES` at a time; returns the indexes in the order of `ids`.
async fn hold_all(holder: &redfour::Client, ids: &Arc<[String]>) -> Result<Arc<[i64]>> {
    let mut set = JoinSet::new();
    for lane in 0..LANES {
        let (holder, ids) = (holder.clone(), ids.clone());
        set.spawn(async move {
            let mut held = Vec::new();
            for i in (lane..ids.len()).step_by(LANES) {
                let got = holder.acquire_lock(&ids[i], HOLD_TTL).await?;
                if !got.success {
                    return Err(
                        format!("the holder could not take the free lock {}", ids[i]).into(),
                    );
                }
                held.push((i, got.index));
            }
            Ok::<_, BoxError>(held)
        });
    }
    let mut indexes = vec![0; ids.len()];
    while let Some(done) = set.join_next().await {
        for (i, index) in done?? {
            indexes[i] = index;
        }
    }
    Ok(indexes.into())
}

/// The holder releases every lock, `LANES` at a time.
async fn release_all(
    holder: &redfour::Client,
    ids: &Arc<[String]>,
    indexes: Arc<[i64]>,
) -> Result<()> {
    let mut set = JoinSet::new();
    for lane in 0..LANES {
        let (holder, ids, indexes) = (holder.clone(), ids.clone(), indexes.clone());
        set.spawn(async move {
            for i in (lane..ids.len()).step_by(LANES) {
                let released = holder.release_lock(&ids[i], indexes[i]).await?;
                if released.result != redfour::ReleaseOutcome::Released {
                    return Err(format!(
                        "the holder's release of {} answered {}",
                        ids[i], released.result
                    )
                    .into());
                }
            }
            Ok::<(), BoxError>(())
        });
    }
    while let Some(done) = set.join_next().await {
        done??;
    }
    Ok(())
}
