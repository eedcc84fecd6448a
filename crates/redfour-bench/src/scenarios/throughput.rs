//! `uncontended` and `parallel`: how many acquire + release cycles per second redfour does on
//! free keys, against the raw baseline (`SET NX PX` + compare-and-delete) on the same stack,
//! and (`parallel`) against Node redfour's own two scripts on the same stack. On a topology
//! other than one server only redfour's side runs (the baselines are one-server locks): it is
//! compared with the baselines of the same run's standalone server.
//!
//! The sides run in alternating blocks (A B, B A, A B, … with two sides; A B C, C B A, … with
//! three) so that slow drifts of the machine (another build starting, CPU frequency) hit all
//! alike, and the medians of the per-block rates are reported. A short untimed block of each
//! side comes first: it opens the connections and loads the scripts.

use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::report::Report;
use crate::scenarios::{Ctx, Params};
use crate::stack::{redfour_cycle, NodeLock, RawLock};
use crate::stats::{median, round_to};
use crate::Result;

/// Which side of the comparison a block measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Redfour,
    Raw,
    /// Node redfour's acquire and release scripts (`stack::NodeLock`).
    Node,
}

/// One block of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Block {
    side: Side,
    len: Duration,
    /// False for the warm-up blocks.
    timed: bool,
}

/// An untimed warm-up block of each side, then `ab_rounds` rounds of one block per side, in
/// the order given in even rounds and reversed in odd ones, so that no side always runs first
/// or last.
fn schedule(p: &Params, sides: &[Side]) -> Vec<Block> {
    let warmup = p.ab_block / 4;
    let mut blocks: Vec<Block> = sides
        .iter()
        .map(|&side| Block {
            side,
            len: warmup,
            timed: false,
        })
        .collect();
    for round in 0..p.ab_rounds {
        let mut order = sides.to_vec();
        if round % 2 == 1 {
            order.reverse();
        }
        blocks.extend(order.into_iter().map(|side| Block {
            side,
            len: p.ab_block,
            timed: true,
        }));
    }
    blocks
}

impl Side {
    /// The commands this side sends (lower case, as `INFO commandstats` names them): the
    /// server time they took is this side's server time. Commands that scripts call are
    /// included in the script's own figure.
    fn commands(self) -> &'static [&'static str] {
        match self {
            Side::Redfour | Side::Node => &["evalsha"],
            Side::Raw => &["set", "evalsha"],
        }
    }
}

/// The per-block rates and server times of one side.
#[derive(Default)]
struct SideRates {
    rates: Vec<f64>,
    server_us: Vec<f64>,
}

/// The per-block rates and server times of each side, reduced to their medians.
#[derive(Default)]
struct Rates {
    redfour: SideRates,
    raw: SideRates,
    node: SideRates,
}

impl Rates {
    /// Records one block: `cycles` in `elapsed`, and the server's execution time for the
    /// block's commands, µs, when the server reports it.
    fn record(&mut self, block: Block, cycles: u64, elapsed: Duration, server_us: Option<u64>) {
        if !block.timed || cycles == 0 {
            return;
        }
        let side = match block.side {
            Side::Redfour => &mut self.redfour,
            Side::Raw => &mut self.raw,
            Side::Node => &mut self.node,
        };
        side.rates.push(cycles as f64 / elapsed.as_secs_f64());
        side.server_us
            .extend(server_us.map(|us| us as f64 / cycles as f64));
    }

    /// (redfour, raw, node) median cycles per second; 0 for a side that did not run.
    fn medians(&self) -> (f64, f64, f64) {
        let m = |s: &SideRates| round_to(median(&s.rates), 1);
        (m(&self.redfour), m(&self.raw), m(&self.node))
    }

    /// (redfour, raw) median server µs per cycle, when every block of both reported it.
    fn server_medians(&self) -> Option<(f64, f64)> {
        let complete = |s: &SideRates| !s.rates.is_empty() && s.server_us.len() == s.rates.len();
        if !complete(&self.redfour) || !complete(&self.raw) {
            return None;
        }
        Some((
            round_to(median(&self.redfour.server_us), 2),
            round_to(median(&self.raw.server_us), 2),
        ))
    }

    /// Node's median server µs per cycle, when every Node block reported it.
    fn node_server_median(&self) -> Option<f64> {
        let s = &self.node;
        (!s.rates.is_empty() && s.server_us.len() == s.rates.len())
            .then(|| round_to(median(&s.server_us), 2))
    }
}

/// The server's execution time for `side`'s commands so far, µs.
async fn server_usec(ctx: &mut Ctx, side: Side) -> Result<Option<u64>> {
    ctx.admin.command_usec(side.commands()).await
}

/// The server time spent between two readings, when both exist.
fn spent(before: Option<u64>, after: Option<u64>) -> Option<u64> {
    Some(after?.saturating_sub(before?))
}

/// One client, one cycle at a time, on keys `u0`, `u1`, … `u{n-1}`, `u0`, …
pub async fn uncontended(ctx: &mut Ctx) -> Result<Report> {
    const NAME: &str = "uncontended";
    let client = ctx.target.client(NAME)?;
    client.ping().await?;
    let mut raw = if ctx.target.has_baselines() {
        Some(RawLock::connect(&ctx.target).await?)
    } else {
        None
    };
    let sides: &[Side] = match raw {
        Some(_) => &[Side::Redfour, Side::Raw],
        None => &[Side::Redfour],
    };
    let ids: Vec<String> = (0..ctx.params.uncontended_keys)
        .map(|i| format!("u{i}"))
        .collect();
    let raw_ns = ctx.target.namespace(&format!("{NAME}-raw"));
    let raw_keys: Vec<String> = ids.iter().map(|id| format!("{raw_ns}:{id}")).collect();

    let mut rates = Rates::default();
    // Goes on across blocks: it rotates the keys and makes every raw token unique.
    let mut cycle = 0u64;
    for block in schedule(&ctx.params, sides) {
        let usec_before = server_usec(ctx, block.side).await?;
        let start = Instant::now();
        let end = start + block.len;
        let first = cycle;
        while Instant::now() < end {
            let slot = (cycle % ids.len() as u64) as usize;
            match block.side {
                Side::Redfour => redfour_cycle(&client, &ids[slot]).await?,
                Side::Raw => match &mut raw {
                    Some(raw) => raw.cycle(&raw_keys[slot], cycle).await?,
                    None => return Err("no raw baseline on this topology".into()),
                },
                Side::Node => return Err("the uncontended scenario has no Node side".into()),
            }
            cycle += 1;
        }
        let elapsed = start.elapsed();
        let usec = spent(usec_before, server_usec(ctx, block.side).await?);
        rates.record(block, cycle - first, elapsed, usec);
    }

    let (cycles_per_s, raw_cycles_per_s, _) = rates.medians();
    Ok(Report::Uncontended {
        cycles_per_s,
        raw_cycles_per_s: raw.is_some().then_some(raw_cycles_per_s),
        server_us: rates.server_medians(),
    })
}

/// `tasks` tokio tasks sharing one client (one connection), each cycling on its own key.
pub async fn parallel(ctx: &mut Ctx) -> Result<Report> {
    const NAME: &str = "parallel";
    let tasks = ctx.params.parallel_tasks;
    let client = ctx.target.client(NAME)?;
    client.ping().await?;
    let raw_ns = ctx.target.namespace(&format!("{NAME}-raw"));
    let node_ns = ctx.target.namespace(&format!("{NAME}-node"));
    let baselines = if ctx.target.has_baselines() {
        Some((
            RawLock::connect(&ctx.target).await?,
            NodeLock::connect(&ctx.target, &node_ns).await?,
        ))
    } else {
        None
    };
    let sides: &[Side] = match baselines {
        Some(_) => &[Side::Redfour, Side::Raw, Side::Node],
        None => &[Side::Redfour],
    };

    let mut rates = Rates::default();
    for block in schedule(&ctx.params, sides) {
        let usec_before = server_usec(ctx, block.side).await?;
        let start = Instant::now();
        let end = start + block.len;
        let mut set = JoinSet::new();
        for task in 0..tasks {
            let id = format!("p{task}");
            match block.side {
                Side::Redfour => {
                    let client = client.clone();
                    set.spawn(async move {
                        let mut n = 0u64;
                        while Instant::now() < end {
                            redfour_cycle(&client, &id).await?;
                            n += 1;
                        }
                        Ok::<u64, crate::BoxError>(n)
                    });
                }
                Side::Raw => {
                    let Some((raw, _)) = &baselines else {
                        return Err("no raw baseline on this topology".into());
                    };
                    let mut raw = raw.clone();
                    let key = format!("{raw_ns}:{id}");
                    // Tokens unique per task and cycle: the task number in the high bits.
                    let base = (task as u64) << 40;
                    set.spawn(async move {
                        let mut n = 0u64;
                        while Instant::now() < end {
                            raw.cycle(&key, base + n).await?;
                            n += 1;
                        }
                        Ok::<u64, crate::BoxError>(n)
                    });
                }
                Side::Node => {
                    let Some((_, node)) = &baselines else {
                        return Err("no Node baseline on this topology".into());
                    };
                    let mut node = node.clone();
                    let key = format!("{node_ns}:{id}");
                    set.spawn(async move {
                        let mut n = 0u64;
                        while Instant::now() < end {
                            node.cycle(&key).await?;
                            n += 1;
                        }
                        Ok::<u64, crate::BoxError>(n)
                    });
                }
            }
        }
        let mut cycles = 0;
        while let Some(done) = set.join_next().await {
            cycles += done??;
        }
        let elapsed = start.elapsed();
        let usec = spent(usec_before, server_usec(ctx, block.side).await?);
        rates.record(block, cycles, elapsed, usec);
    }

    let (cycles_per_s, raw_cycles_per_s, node_cycles_per_s) = rates.medians();
    let measured = baselines.is_some();
    Ok(Report::Parallel {
        tasks,
        cycles_per_s,
        raw_cycles_per_s: measured.then_some(raw_cycles_per_s),
        node_cycles_per_s: measured.then_some(node_cycles_per_s),
        server_us: rates.server_medians(),
        node_server_us: rates.node_server_median(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_alternates_after_warmup() {
        let blocks = schedule(&Params::full(), &[Side::Redfour, Side::Raw]);
        let timed: Vec<Side> = blocks.iter().filter(|b| b.timed).map(|b| b.side).collect();
        assert_eq!(blocks.iter().filter(|b| !b.timed).count(), 2);
        assert_eq!(
            &timed[..4],
            &[Side::Redfour, Side::Raw, Side::Raw, Side::Redfour]
        );
        let redfour = timed.iter().filter(|s| **s == Side::Redfour).count();
        assert_eq!(redfour * 2, timed.len());

        let sides = [Side::Redfour, Side::Raw, Side::Node];
        let blocks = schedule(&Params::full(), &sides);
        let timed: Vec<Side> = blocks.iter().filter(|b| b.timed).map(|b| b.side).collect();
        assert_eq!(blocks.iter().filter(|b| !b.timed).count(), 3);
        assert_eq!(
            &timed[..6],
            &[
                Side::Redfour,
                Side::Raw,
                Side::Node,
                Side::Node,
                Side::Raw,
                Side::Redfour
            ]
        );
        for side in sides {
            assert_eq!(
                timed.iter().filter(|s| **s == side).count() * 3,
                timed.len()
            );
        }
    }
}
