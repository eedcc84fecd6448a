//! The scenarios, their sizes, and what they share.

use std::time::{Duration, Instant};

use clap::ValueEnum;

use crate::report::Report;
use crate::stack::{Admin, Target};
use crate::Result;

mod contention;
mod handoff;
mod rtt;
mod server_cost;
mod throughput;
mod waiters;

/// A scenario of the bench, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Scenario {
    /// Round trip of `PING`.
    Rtt,
    /// Sequential acquire + release, redfour against the raw baseline.
    Uncontended,
    /// Concurrent acquire + release, one key per task, one client.
    Parallel,
    /// Server execution time of each lock step, redfour's scripts beside Node redfour's.
    #[value(name = "server_cost")]
    ServerCost,
    /// Latency from a release to the waiting client holding the lock.
    Handoff,
    /// Several clients contending for one key: throughput, fairness, wakeups.
    Contention,
    /// Thousands of waiters on one client: connections, memory, completion.
    Waiters,
}

impl Scenario {
    /// Every scenario, in running order.
    pub const ALL: [Scenario; 7] = [
        Scenario::Rtt,
        Scenario::Uncontended,
        Scenario::Parallel,
        Scenario::ServerCost,
        Scenario::Handoff,
        Scenario::Contention,
        Scenario::Waiters,
    ];

    /// The scenario's name, as in the JSON `scenario` field and `--scenarios`.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Rtt => "rtt",
            Scenario::Uncontended => "uncontended",
            Scenario::Parallel => "parallel",
            Scenario::ServerCost => "server_cost",
            Scenario::Handoff => "handoff",
            Scenario::Contention => "contention",
            Scenario::Waiters => "waiters",
        }
    }

    /// Runs the scenario.
    pub async fn run(self, ctx: &mut Ctx) -> Result<Report> {
        match self {
            Scenario::Rtt => rtt::run(ctx).await,
            Scenario::Uncontended => throughput::uncontended(ctx).await,
            Scenario::Parallel => throughput::parallel(ctx).await,
            Scenario::ServerCost => server_cost::run(ctx).await,
            Scenario::Handoff => handoff::run(ctx).await,
            Scenario::Contention => contention::run(ctx).await,
            Scenario::Waiters => waiters::run(ctx).await,
        }
    }
}

/// How big each scenario is.
#[derive(Debug, Clone)]
pub struct Params {
    /// Untimed `PING`s before sampling.
    pub rtt_warmup: usize,
    /// Timed `PING`s.
    pub rtt_samples: usize,
    /// A/B rounds of the throughput scenarios; each round runs one block of each side.
    pub ab_rounds: usize,
    /// The length of one throughput block.
    pub ab_block: Duration,
    /// Distinct keys the uncontended scenario cycles through.
    pub uncontended_keys: usize,
    /// Tasks (and keys) of the parallel scenario.
    pub parallel_tasks: usize,
    /// Steps of each batch of the server_cost scenario.
    pub server_cost_steps: usize,
    /// Rounds of the server_cost scenario (one batch of each kind of step per round).
    pub server_cost_rounds: usize,
    /// Untimed handoffs before sampling (they also open the waiter's subscription).
    pub handoff_warmup: usize,
    /// Timed handoffs.
    pub handoff_samples: usize,
    /// Workers of the contention scenario, each with its own client.
    pub contention_workers: usize,
    /// How long the contention loop runs.
    pub contention_time: Duration,
    /// Waiters (and locks) of the waiters scenario.
    pub waiters: usize,
    /// The bound on the whole waiters scenario.
    pub waiters_timeout: Duration,
}

impl Params {
    /// The sizes of a real measurement (about 25 s in all on a local server).
    pub fn full() -> Params {
        Params {
            rtt_warmup: 500,
            rtt_samples: 5000,
            ab_rounds: 6,
            ab_block: Duration::from_millis(500),
            uncontended_keys: 1000,
            parallel_tasks: 64,
            server_cost_steps: 700,
            server_cost_rounds: 7,
            handoff_warmup: 20,
            handoff_samples: 500,
            contention_workers: 8,
            contention_time: Duration::from_secs(5),
            waiters: 10_000,
            waiters_timeout: Duration::from_secs(120),
        }
    }

    /// Tiny sizes for a smoke run (`--quick`): checks that everything works, measures nothing
    /// worth comparing.
    pub fn quick() -> Params {
        Params {
            rtt_warmup: 20,
            rtt_samples: 200,
            ab_rounds: 2,
            ab_block: Duration::from_millis(100),
            uncontended_keys: 100,
            parallel_tasks: 64,
            server_cost_steps: 50,
            server_cost_rounds: 1,
            handoff_warmup: 3,
            handoff_samples: 20,
            contention_workers: 8,
            contention_time: Duration::from_secs(1),
            waiters: 200,
            waiters_timeout: Duration::from_secs(20),
        }
    }
}

/// What every scenario gets.
pub struct Ctx {
    /// Where to connect, and the run's key prefix.
    pub target: Target,
    /// The bench's own connection to the server.
    pub admin: Admin,
    /// Scenario sizes.
    pub params: Params,
}

impl Ctx {
    /// Deletes every key of the scenario `name` (its namespaces all start with
    /// `{prefix}-{name}`): the fencing counter, and whatever a failure left behind.
    pub async fn cleanup(&mut self, name: &str) -> Result<()> {
        let prefix = self.target.namespace(name);
        self.admin.delete_prefixed(&prefix).await
    }
}

/// Polls `condition` until it holds or `limit` passes; true if it held. Yields between polls,
/// so the tasks being waited for make progress even on a busy runtime.
pub async fn poll_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::task::yield_now().await;
    }
}
