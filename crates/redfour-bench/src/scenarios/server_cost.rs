//! `server_cost`: how much of the server's one thread each lock step takes, redfour's scripts
//! beside Node redfour's, from `INFO commandstats`.
//!
//! Redis runs every script on its single thread, so the server time of a step is what caps a
//! busy Redis however many clients there are. Each batch runs `server_cost_steps` steps of one
//! kind on fresh keys, 16 at a time on one connection (pipelined, as on a busy server: a server
//! woken for every single command runs each one slower), with nothing else running, and takes
//! the server's execution time of the batch's commands divided by the steps (a script's figure
//! includes the commands it calls). A round runs one batch of every kind in turn, and the
//! report gives each kind's least time over `server_cost_rounds` rounds: interference from the
//! rest of a shared machine only ever adds time, and it comes in spells that would otherwise
//! land on one kind and not another (the medians of the same runs swing by a third). The
//! targets are judged on ratios taken within each round (redfour's step against Node's, the
//! batches a fraction of a second apart), their median over the rounds.
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

use std::future::Future;
use std::sync::Arc;

use redis::aio::ConnectionManager;
use tokio::task::JoinSet;

use crate::report::Report;
use crate::scenarios::Ctx;
use crate::stack::{NodeLock, RawLock, BENCH_TTL};
use crate::stats::{median, round_to};
use crate::Result;

const NAME: &str = "server_cost";

/// Steps of a batch in flight at once.
const CONCURRENCY: usize = 16;

/// The library's fair acquire script, composed as the library composes it (its notice prelude
/// and shared functions first; see `ScriptSet` in the library's scripts.rs), to queue a waiter
/// that no client serves.
const FAIR_ACQUIRE: &str = concat!(
    include_str!("../../../redfour/src/scripts/fair_acquire_free.lua"),
    include_str!("../../../redfour/src/scripts/publish.lua"),
    include_str!("../../../redfour/src/scripts/lock.lua"),
    include_str!("../../../redfour/src/scripts/grant.lua"),
    include_str!("../../../redfour/src/scripts/fair_common.lua"),
    include_str!("../../../redfour/src/scripts/fair_acquire.lua"),
);

/// The kinds of step, in the order a round runs them.
const KINDS: usize = 8;
const ACQUIRE: usize = 0;
const RELEASE: usize = 1;
const HANDOFF: usize = 2;
const NODE_ACQUIRE: usize = 3;
const NODE_RELEASE: usize = 4;
const RAW_SET: usize = 5;
const RAW_RELEASE: usize = 6;
const PING: usize = 7;

/// Runs the rounds.
pub async fn run(ctx: &mut Ctx) -> Result<Report> {
    let n = ctx.params.server_cost_steps;
    let ns = ctx.target.namespace(NAME);
    let client = ctx.target.client(NAME)?;
    let node_ns = ctx.target.namespace(&format!("{NAME}-node"));
    let node = NodeLock::connect(&ctx.target, &node_ns).await?;
    let raw = RawLock::connect(&ctx.target).await?;
    let raw_ns = ctx.target.namespace(&format!("{NAME}-raw"));
    let mut conn = ctx.target.connection().await?;

    // Warm up: connections open, every script loaded, so that no batch pays a `NOSCRIPT`.
    let warm = client.acquire_lock("warm", BENCH_TTL).await?;
    client.release_lock("warm", warm.index).await?;
    node.clone().cycle(&format!("{node_ns}:warm")).await?;
    raw.clone().cycle(&format!("{raw_ns}:warm"), 0).await?;
    let fair_acquire = redis::Script::new(FAIR_ACQUIRE);
    fair_acquire.load_async(&mut conn).await?;
    let fair_acquire = Arc::new(fair_acquire);

    let fair = ctx.target.fair;
    let mut per_step: Vec<Vec<f64>> = vec![Vec::new(); KINDS];
    for round in 0..ctx.params.server_cost_rounds {
        let ids: Arc<[String]> = (0..n).map(|i| format!("k{round}-{i}")).collect();
        let mut usec = Usec::new(ctx, n);

        // redfour: acquire, release with nobody queued.
        usec.start(&["evalsha"]).await?;
        let held = spread(n, {
            let (client, ids) = (client.clone(), ids.clone());
            move |i| acquire(client.clone(), ids[i].clone())
        })
        .await?;
        usec.stop(&mut per_step[ACQUIRE]).await?;
        usec.start(&["evalsha"]).await?;
        spread(n, {
            let (client, ids, held) = (client.clone(), ids.clone(), Arc::new(held));
            move |i| release(client.clone(), ids[i].clone(), held[i])
        })
        .await?;
        usec.stop(&mut per_step[RELEASE]).await?;

        // redfour: every lock held again, one waiter queued behind each, released.
        let held = Arc::new(
            spread(n, {
                let (client, ids) = (client.clone(), ids.clone());
                move |i| acquire(client.clone(), ids[i].clone())
            })
            .await?,
        );
        if fair {
            spread(n, {
                let (conn, script, ids, ns) =
                    (conn.clone(), fair_acquire.clone(), ids.clone(), ns.clone());
                move |i| {
                    let (mut conn, script, ns, id) =
                        (conn.clone(), script.clone(), ns.clone(), ids[i].clone());
                    async move { queue_waiter(&mut conn, &script, &ns, &id, i).await }
                }
            })
            .await?;
        }
        usec.start(&["evalsha"]).await?;
        spread(n, {
            let (client, ids) = (client.clone(), ids.clone());
            move |i| release(client.clone(), ids[i].clone(), held[i])
        })
        .await?;
        usec.stop(&mut per_step[HANDOFF]).await?;

        // Node redfour's scripts.
        let keys: Arc<[String]> = ids.iter().map(|id| format!("{node_ns}:{id}")).collect();
        usec.start(&["evalsha"]).await?;
        let indexes = spread(n, {
            let (node, keys) = (node.clone(), keys.clone());
            move |i| {
                let (mut node, key) = (node.clone(), keys[i].clone());
                async move {
                    node.acquire(&key).await?.ok_or_else(|| {
                        format!("Node's acquire of the free key {key} failed").into()
                    })
                }
            }
        })
        .await?;
        usec.stop(&mut per_step[NODE_ACQUIRE]).await?;
        usec.start(&["evalsha"]).await?;
        spread(n, {
            let (node, keys, indexes) = (node.clone(), keys.clone(), Arc::new(indexes));
            move |i| {
                let (mut node, key, index) = (node.clone(), keys[i].clone(), indexes[i]);
                async move {
                    let released = node.release(&key, index).await?;
                    happened(released, || {
                        format!("Node's release of {key} did not release")
                    })
                }
            }
        })
        .await?;
        usec.stop(&mut per_step[NODE_RELEASE]).await?;

        // The raw baseline, and PING.
        let keys: Arc<[String]> = ids.iter().map(|id| format!("{raw_ns}:{id}")).collect();
        usec.start(&["set"]).await?;
        spread(n, {
            let (raw, keys) = (raw.clone(), keys.clone());
            move |i| {
                let (mut raw, key) = (raw.clone(), keys[i].clone());
                async move {
                    let acquired = raw.acquire(&key, i as u64).await?;
                    happened(acquired, || {
                        format!("raw acquire of the free key {key} failed")
                    })
                }
            }
        })
        .await?;
        usec.stop(&mut per_step[RAW_SET]).await?;
        usec.start(&["evalsha"]).await?;
        spread(n, {
            let (raw, keys) = (raw.clone(), keys.clone());
            move |i| {
                let (mut raw, key) = (raw.clone(), keys[i].clone());
                async move {
                    let deleted = raw.release(&key, i as u64).await?;
                    happened(deleted, || format!("raw release of {key} deleted nothing"))
                }
            }
        })
        .await?;
        usec.stop(&mut per_step[RAW_RELEASE]).await?;
        usec.start(&["ping"]).await?;
        spread(n, {
            let conn = conn.clone();
            move |_| {
                let mut conn = conn.clone();
                async move {
                    redis::cmd("PING").query_async::<()>(&mut conn).await?;
                    Ok(())
                }
            }
        })
        .await?;
        usec.stop(&mut per_step[PING]).await?;
    }

    if per_step.iter().any(Vec::is_empty) {
        return Err("the server does not report INFO commandstats".into());
    }
    let m = |kind: usize| round_to(per_step[kind].iter().copied().fold(f64::MAX, f64::min), 2);
    // Per round, redfour's step against Node's of the same round.
    let within = |ours: usize, node: usize| {
        let ratios: Vec<f64> = per_step[ours]
            .iter()
            .zip(&per_step[node])
            .filter(|(_, n)| **n > 0.0)
            .map(|(o, n)| o / n)
            .collect();
        (!ratios.is_empty()).then(|| round_to(median(&ratios), 3))
    };
    let round_ratios = match (
        within(ACQUIRE, NODE_ACQUIRE),
        within(RELEASE, NODE_RELEASE),
        within(HANDOFF, NODE_RELEASE),
    ) {
        (Some(a), Some(r), Some(h)) => Some((a, r, h)),
        _ => None,
    };
    Ok(Report::ServerCost {
        acquire_us: m(ACQUIRE),
        release_us: m(RELEASE),
        handoff_us: m(HANDOFF),
        node_acquire_us: m(NODE_ACQUIRE),
        node_release_us: m(NODE_RELEASE),
        floor_us: (m(RAW_SET), m(RAW_RELEASE), m(PING)),
        round_ratios,
    })
}

/// Reads the server's execution time around one batch.
struct Usec<'a> {
    ctx: &'a mut Ctx,
    steps: usize,
    names: &'static [&'static str],
    before: Option<u64>,
}

impl<'a> Usec<'a> {
    fn new(ctx: &'a mut Ctx, steps: usize) -> Self {
        Usec {
            ctx,
            steps,
            names: &[],
            before: None,
        }
    }

    /// Notes the summed `usec` of the commands `names` before a batch.
    async fn start(&mut self, names: &'static [&'static str]) -> Result<()> {
        self.names = names;
        self.before = self.ctx.admin.command_usec(names).await?;
        Ok(())
    }

    /// Adds the batch's µs per step to `into`, when the server reported both readings.
    async fn stop(&mut self, into: &mut Vec<f64>) -> Result<()> {
        let after = self.ctx.admin.command_usec(self.names).await?;
        into.extend(per_step(self.before, after, self.steps));
        Ok(())
    }
}

/// Runs `step(0)` … `step(n - 1)`, [`CONCURRENCY`] at a time; their results in order.
async fn spread<T, F, Fut>(n: usize, step: F) -> Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<T>> + Send + 'static,
{
    let mut set = JoinSet::new();
    for lane in 0..CONCURRENCY.min(n) {
        let step = step.clone();
        set.spawn(async move {
            let mut done = Vec::new();
            for i in (lane..n).step_by(CONCURRENCY) {
                done.push((i, step(i).await?));
            }
            Ok::<_, crate::BoxError>(done)
        });
    }
    let mut results: Vec<Option<T>> = (0..n).map(|_| None).collect();
    while let Some(lane) = set.join_next().await {
        for (i, result) in lane?? {
            results[i] = Some(result);
        }
    }
    results
        .into_iter()
        .map(|r| r.ok_or_else(|| "a step of the batch did not run".into()))
        .collect()
}

/// µs per step between two readings of the summed `usec`, when both exist.
fn per_step(before: Option<u64>, after: Option<u64>, steps: usize) -> Option<f64> {
    let spent = after?.checked_sub(before?)?;
    Some(round_to(spent as f64 / steps.max(1) as f64, 2))
}

/// `Ok` when the step did what it must on keys nobody else touches, the error `what` otherwise.
fn happened(done: bool, what: impl FnOnce() -> String) -> Result<()> {
    if done {
        Ok(())
    } else {
        Err(what().into())
    }
}

/// Takes the free lock `id`; its index.
async fn acquire(client: redfour::Client, id: String) -> Result<i64> {
    let lock = client.acquire_lock(&id, BENCH_TTL).await?;
    if !lock.success {
        return Err(format!("redfour's acquire of the free lock {id} failed").into());
    }
    Ok(lock.index)
}

/// Releases the lock `id` held with `index`.
async fn release(client: redfour::Client, id: String, index: i64) -> Result<()> {
    let released = client.release_lock(&id, index).await?;
    if released.result != redfour::ReleaseOutcome::Released {
        return Err(format!("redfour's release of {id} answered {}", released.result).into());
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
        .arg(format!("{ns}-release"))
        .arg("host")
        .arg("elsewhere")
        .invoke_async(conn)
        .await?;
    if !matches!(reply.first(), Some(redis::Value::Int(0))) {
        return Err(format!("the waiter on {id} did not queue: {reply:?}").into());
    }
    Ok(())
}
