//! `server_cost`: how much of the server's one thread each lock step takes, redfour's scripts
//! beside Node redfour's, from `INFO commandstats`.
//!
//! Redis runs every script on its single thread, so the server time of a step is what caps a
//! busy Redis however many clients there are. Each batch runs `server_cost_steps` steps of one
//! kind, one at a time on one connection, with nothing else running, and reports the server's
//! execution time of the batch's commands divided by the steps (a script's figure includes the
//! commands it calls):
//!
//! - `acquire_us`: redfour's `acquire_lock` of a free lock (the library's defaults: with the
//!   fair queue, the fair acquire script);
//! - `release_us`: redfour's `release_lock` with nobody queued;
//! - `handoff_us`: redfour's `release_lock` of a lock with one waiter queued behind it, which
//!   hands the lock over (the waiter is queued by the library's own fair acquire script, sent
//!   here directly with a token and a handoff channel nobody listens on, so that no client
//!   claims the lock in the background and adds its own scripts to the figure). With
//!   `--no-fair` nothing is queued, and this is a release that wakes everyone, as Node's does;
//! - `node_acquire_us`, `node_release_us`: Node redfour's two scripts (`stack::NodeLock`) on
//!   free keys of their own;
//! - (not in the JSON) the raw baseline's `SET NX PX` and compare-and-delete, and `PING`, the
//!   floor of any command.

use redis::aio::ConnectionManager;

use crate::report::Report;
use crate::scenarios::Ctx;
use crate::stack::{NodeLock, RawLock, BENCH_TTL};
use crate::stats::round_to;
use crate::Result;

const NAME: &str = "server_cost";

/// The library's fair acquire script, composed as the library composes it (its notice prelude
/// and shared functions first), to queue a waiter that no client serves.
const FAIR_ACQUIRE: &str = concat!(
    include_str!("../../../redfour/src/scripts/publish.lua"),
    include_str!("../../../redfour/src/scripts/lock.lua"),
    include_str!("../../../redfour/src/scripts/grant.lua"),
    include_str!("../../../redfour/src/scripts/fair_acquire_free.lua"),
    include_str!("../../../redfour/src/scripts/fair_common.lua"),
    include_str!("../../../redfour/src/scripts/fair_acquire.lua"),
);

/// Runs the batches.
pub async fn run(ctx: &mut Ctx) -> Result<Report> {
    let n = ctx.params.server_cost_steps;
    let ns = ctx.target.namespace(NAME);
    let client = ctx.target.client(NAME)?;
    let node_ns = ctx.target.namespace(&format!("{NAME}-node"));
    let mut node = NodeLock::connect(&ctx.target, &node_ns).await?;
    let mut raw = RawLock::connect(&ctx.target).await?;
    let raw_ns = ctx.target.namespace(&format!("{NAME}-raw"));
    let mut conn = ctx.target.connection().await?;

    // Warm up: connections open, every script loaded, so that no batch pays a `NOSCRIPT`.
    let warm = client.acquire_lock("warm", BENCH_TTL).await?;
    client.release_lock("warm", warm.index).await?;
    node.cycle(&format!("{node_ns}:warm")).await?;
    raw.cycle(&format!("{raw_ns}:warm"), 0).await?;
    let fair_acquire = redis::Script::new(FAIR_ACQUIRE);
    fair_acquire.load_async(&mut conn).await?;

    let ids: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();

    let (acquire_us, held) = {
        let before = ctx.admin.command_usec(&["evalsha"]).await?;
        let held = acquire_all(&client, &ids).await?;
        (
            per_step(before, ctx.admin.command_usec(&["evalsha"]).await?, n),
            held,
        )
    };

    let before = ctx.admin.command_usec(&["evalsha"]).await?;
    release_all(&client, &ids, &held).await?;
    let release_us = per_step(before, ctx.admin.command_usec(&["evalsha"]).await?, n);

    let held = acquire_all(&client, &ids).await?;
    if ctx.target.fair {
        for (i, id) in ids.iter().enumerate() {
            queue_waiter(&mut conn, &fair_acquire, &ns, id, i).await?;
        }
    }
    let before = ctx.admin.command_usec(&["evalsha"]).await?;
    release_all(&client, &ids, &held).await?;
    let handoff_us = per_step(before, ctx.admin.command_usec(&["evalsha"]).await?, n);

    let keys: Vec<String> = ids.iter().map(|id| format!("{node_ns}:{id}")).collect();
    let before = ctx.admin.command_usec(&["evalsha"]).await?;
    let mut indexes = Vec::with_capacity(n);
    for key in &keys {
        let index = node
            .acquire(key)
            .await?
            .ok_or_else(|| format!("Node's acquire of the free key {key} failed"))?;
        indexes.push(index);
    }
    let node_acquire_us = per_step(before, ctx.admin.command_usec(&["evalsha"]).await?, n);
    let before = ctx.admin.command_usec(&["evalsha"]).await?;
    for (key, index) in keys.iter().zip(&indexes) {
        if !node.release(key, *index).await? {
            return Err(format!("Node's release of {key} did not release").into());
        }
    }
    let node_release_us = per_step(before, ctx.admin.command_usec(&["evalsha"]).await?, n);

    let keys: Vec<String> = ids.iter().map(|id| format!("{raw_ns}:{id}")).collect();
    let before = ctx.admin.command_usec(&["set"]).await?;
    for (token, key) in keys.iter().enumerate() {
        if !raw.acquire(key, token as u64).await? {
            return Err(format!("raw acquire of the free key {key} failed").into());
        }
    }
    let set_us = per_step(before, ctx.admin.command_usec(&["set"]).await?, n);
    let before = ctx.admin.command_usec(&["evalsha"]).await?;
    for (token, key) in keys.iter().enumerate() {
        if !raw.release(key, token as u64).await? {
            return Err(format!("raw release of {key} deleted nothing").into());
        }
    }
    let cad_us = per_step(before, ctx.admin.command_usec(&["evalsha"]).await?, n);

    let before = ctx.admin.command_usec(&["ping"]).await?;
    for _ in 0..n {
        redis::cmd("PING").query_async::<()>(&mut conn).await?;
    }
    let ping_us = per_step(before, ctx.admin.command_usec(&["ping"]).await?, n);

    let known = |v: Option<f64>| v.ok_or("the server does not report INFO commandstats");
    Ok(Report::ServerCost {
        acquire_us: known(acquire_us)?,
        release_us: known(release_us)?,
        handoff_us: known(handoff_us)?,
        node_acquire_us: known(node_acquire_us)?,
        node_release_us: known(node_release_us)?,
        floor_us: (known(set_us)?, known(cad_us)?, known(ping_us)?),
    })
}

/// µs per step between two readings of the summed `usec`, when both exist.
fn per_step(before: Option<u64>, after: Option<u64>, steps: usize) -> Option<f64> {
    let spent = after?.checked_sub(before?)?;
    Some(round_to(spent as f64 / steps.max(1) as f64, 2))
}

/// Takes every lock in `ids` (all free), one at a time; their indexes.
async fn acquire_all(client: &redfour::Client, ids: &[String]) -> Result<Vec<i64>> {
    let mut held = Vec::with_capacity(ids.len());
    for id in ids {
        let lock = client.acquire_lock(id, BENCH_TTL).await?;
        if !lock.success {
            return Err(format!("redfour's acquire of the free lock {id} failed").into());
        }
        held.push(lock.index);
    }
    Ok(held)
}

/// Releases every lock in `ids` with its index, one at a time.
async fn release_all(client: &redfour::Client, ids: &[String], held: &[i64]) -> Result<()> {
    for (id, index) in ids.iter().zip(held) {
        let released = client.release_lock(id, *index).await?;
        if released.result != redfour::ReleaseOutcome::Released {
            return Err(format!("redfour's release of {id} answered {}", released.result).into());
        }
    }
    Ok(())
}

/// Queues waiter number `i` behind the held lock `id` with the library's fair acquire script,
/// the keys and arguments as the library passes them (the layout of `Namespace` in keys.rs).
async fn queue_waiter(
    conn: &mut ConnectionManager,
    script: &redis::Script,
    ns: &str,
    id: &str,
    i: usize,
) -> Result<()> {
    let reply: Vec<redis::Value> = script
        .key(format!("{ns}:{id}"))
        .key(format!("{ns}index"))
        .key(format!("{ns}-queue:{id}"))
        .key(format!("{ns}-waiters:{id}"))
        .arg(BENCH_TTL.as_millis() as u64)
        .arg(format!("waiter{i}"))
        .arg(60_000)
        .arg(format!("{ns}-nobody-listens"))
        .arg(5_000)
        .arg("host")
        .arg("elsewhere")
        .invoke_async(conn)
        .await?;
    if !matches!(reply.first(), Some(redis::Value::Int(0))) {
        return Err(format!("the waiter on {id} did not queue: {reply:?}").into());
    }
    Ok(())
}
