//! A run: a real Redis deployment (one redis-server, a Sentinel group or a Redis Cluster, see
//! [`Topology`]), the resource, worker processes contending for one lock, faults injected on a
//! seeded schedule, then the checker over the merged logs and a look at what the run left on
//! the servers.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redfour_test::{Proxy, RedisCluster, RedisServer, SentinelGroup};

use crate::check::{check, Bounds, Report};
use crate::events::{read_dir, Event, Log, What};
use crate::node::NodeSetup;
use crate::resource::Resource;
use crate::BoxError;

/// The fault a scenario injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// None: contention only.
    None,
    /// The holder's process is frozen (`SIGSTOP`) for 1.5 ttl, then continued.
    FreezeHolder,
    /// The holder's process is killed (`SIGKILL`) and a new worker takes its place.
    KillHolder,
    /// redis-server is killed and restarted on the same port; whether the locks survive
    /// depends on the server's persistence settings.
    RestartRedis,
    /// Every subscription connection is killed (`CLIENT KILL TYPE pubsub`): notices are lost.
    KillSubscriptions,
    /// The server stops answering every client (`CLIENT PAUSE … ALL`) for longer than the
    /// library's response timeout: acquires, renewals and releases time out mid-flight.
    PauseClients,
    /// The workers reach Redis through a proxy that now and then holds the server's replies
    /// for longer than the ttl.
    DelayReplies,
    /// redis-server itself is frozen (`SIGSTOP`) for 1.5 ttl, then continued.
    FreezeRedis,
    /// Through a proxy, all traffic is held (a black hole) for longer than the response
    /// timeout, then delivered.
    BlackHole,
    /// Through a proxy, every connection is dropped at once.
    DropConnections,
    /// `SCRIPT FLUSH`: the server forgets the scripts, every client must reload them.
    ScriptFlush,
    /// Now and then a `redfour run` of the real CLI joins the contention and is killed
    /// (`SIGKILL`) a moment later: while waiting, while holding, or after it finished.
    KillCli,
    /// Each step draws one of the faults above (all but restarting a server without
    /// persistence, where exclusion cannot hold).
    Mixed,
    /// A worker that is waiting (not the holder) is killed: its attempt is cut off mid-flight
    /// and its queue entry stays behind until it expires.
    KillWaiter,
    /// Each step freezes (`SIGSTOP` for 1.5 ttl, then `SIGCONT`) or kills (`SIGKILL`, and a
    /// new worker of the same side takes its place) a worker: mostly (4 in 5) the holder,
    /// whichever side it is on, else a waiter. In a mixed fleet (see
    /// [`Scenario::node_workers`]) the steps aim at the Rust and the Node side in turn: the
    /// holder on the side aimed at if it holds within a second (else whoever holds), a waiter
    /// of that side; the aim passes to the other side once this one was hit. Waiters are
    /// killed at most once per 3 s (frozen otherwise).
    HoldersAndWaiters,
    /// `SENTINEL FAILOVER` while a worker holds the lock: a replica is promoted, the old master
    /// goes on accepting writes until the sentinels turn it into a replica of the new one
    /// (about 11 s with the test kit's settings, during which the next failover cannot start).
    /// [`Topology::Sentinel`] only.
    SentinelFailover,
    /// The hash slot of the lock's keys is moved to another master while workers contend, as
    /// `redis-cli --cluster reshard` does it: the slot marked migrating / importing (`ASK`,
    /// `TRYAGAIN`), its keys moved with `MIGRATE`, then handed over (`MOVED`).
    /// [`Topology::Cluster`] only.
    ClusterReshard,
}

impl Fault {
    /// Whether this fault can be injected into a deployment of `topology`. Faults that act on
    /// the one redis-server (restarts, freezes, pauses, the proxy's, script flushes, the CLI's
    /// single URL) need [`Topology::Standalone`]; faults on the workers apply to every topology.
    pub fn applies_to(self, topology: Topology) -> bool {
        match self {
            Fault::None
            | Fault::FreezeHolder
            | Fault::KillHolder
            | Fault::KillWaiter
            | Fault::HoldersAndWaiters => true,
            Fault::SentinelFailover => {
                matches!(topology, Topology::Sentinel { replicas, .. } if replicas > 0)
            }
            Fault::ClusterReshard => {
                matches!(topology, Topology::Cluster { masters } if masters >= 2)
            }
            Fault::RestartRedis
            | Fault::KillSubscriptions
            | Fault::PauseClients
            | Fault::DelayReplies
            | Fault::FreezeRedis
            | Fault::BlackHole
            | Fault::DropConnections
            | Fault::ScriptFlush
            | Fault::KillCli
            | Fault::Mixed => topology == Topology::Standalone,
        }
    }
}

/// The Redis deployment a scenario runs against, and so the [`redfour::Topology`] its workers
/// use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// One redis-server (started with [`Scenario::redis_args`]), behind a proxy for the
    /// network faults. Every fault but [`Fault::SentinelFailover`] and
    /// [`Fault::ClusterReshard`].
    Standalone,
    /// The test kit's `SentinelGroup`: a master, `replicas` replicas, `sentinels` sentinels;
    /// workers use `Topology::Sentinel`. `redis_args` do not apply.
    Sentinel {
        /// Replicas of the master.
        replicas: usize,
        /// Sentinel processes.
        sentinels: usize,
    },
    /// The test kit's `RedisCluster` of `masters` masters without replicas; workers use
    /// `Topology::Cluster` (every node a seed). `redis_args` do not apply.
    Cluster {
        /// Masters, among which the hash slots are split.
        masters: usize,
    },
}

/// After the last fault that moved the lock to another server ([`Fault::SentinelFailover`],
/// [`Fault::ClusterReshard`]), the run goes on until this many more fenced writes were accepted
/// (progress on the new server)...
pub const AFTER_MOVE_WRITES: usize = 3;
/// ...within this long (otherwise the run ends, and the test's progress check fails)...
pub const AFTER_MOVE_DEADLINE: Duration = Duration::from_secs(30);
/// ...and for at least this long.
pub const AFTER_MOVE_TAIL: Duration = Duration::from_secs(2);

/// How long a fair queue's keys live after the last waiter joined (or refreshed its place):
/// twice an entry's lifetime, three of the library's default poll intervals (2 s).
pub const QUEUE_LIFETIME: Duration = Duration::from_secs(12);

/// One scenario of the suite.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Its name on the command line.
    pub name: &'static str,
    /// What it shows, in a line.
    pub about: &'static str,
    /// Worker processes (Rust, `redfour-chaos worker`).
    pub workers: usize,
    /// Node redfour worker processes (`interop/chaos-worker.js`) beside them, on the same lock:
    /// a mixed fleet. [`Topology::Standalone`] only (Node redfour knows one server), and the
    /// run needs `node` and `interop/node_modules` (see [`crate::node`]). Node redfour cannot
    /// renew: the hold must be well below the ttl.
    pub node_workers: usize,
    /// The lock's ttl.
    pub ttl: Duration,
    /// Time in the critical section.
    pub hold: Duration,
    /// The longest one wait may take.
    pub wait: Duration,
    /// The fault.
    pub fault: Fault,
    /// Extra redis-server arguments.
    pub redis_args: &'static [&'static str],
    /// The longest the lock may stay free while someone waits.
    pub free_bound: Duration,
    /// The rules whose violations are expected (Redis cannot promise them here).
    pub allowed: &'static [char],
    /// The workers' claim window (the library's default when `None`).
    pub claim_window: Option<Duration>,
    /// Every Nth round of a worker is a one-shot attempt instead of a wait.
    pub one_shot_every: Option<u64>,
    /// The workers' think time: their pause after each release before they ask again.
    pub think: Duration,
    /// The deployment, and the topology the workers use.
    pub topology: Topology,
    /// The workers' `replica_acks` (replicas, timeout); off when `None`.
    pub replica_acks: Option<(u32, Duration)>,
}

/// Every scenario.
pub fn all() -> Vec<Scenario> {
    let base = Scenario {
        name: "contention",
        about: "contention, no faults: exclusion, fencing, only-the-holder, liveness",
        workers: 5,
        node_workers: 0,
        ttl: Duration::from_millis(1000),
        hold: Duration::from_millis(5),
        wait: Duration::from_secs(5),
        fault: Fault::None,
        redis_args: &[],
        free_bound: Duration::from_millis(500),
        allowed: &[],
        claim_window: None,
        one_shot_every: Some(4),
        think: Duration::ZERO,
        topology: Topology::Standalone,
        replica_acks: None,
    };
    vec![
        base.clone(),
        Scenario {
            name: "freeze-holder",
            about: "the holder frozen past its ttl: its late write is rejected by fencing, its keep-alive reports the lease lost",
            ttl: Duration::from_millis(500),
            hold: Duration::from_millis(60),
            fault: Fault::FreezeHolder,
            free_bound: Duration::from_millis(1500),
            ..base.clone()
        },
        Scenario {
            name: "kill-holder",
            about: "the holder killed: the lock is free again within its ttl, no orphan renews it",
            ttl: Duration::from_millis(500),
            hold: Duration::from_millis(30),
            fault: Fault::KillHolder,
            free_bound: Duration::from_millis(1500),
            ..base.clone()
        },
        Scenario {
            name: "restart-volatile",
            about: "redis restarted without persistence: holders learn `missing`, indexes keep increasing; exclusion cannot hold",
            ttl: Duration::from_millis(600),
            hold: Duration::from_millis(300),
            fault: Fault::RestartRedis,
            free_bound: Duration::from_millis(3000),
            allowed: &['V'],
            ..base.clone()
        },
        Scenario {
            name: "restart-aof",
            about: "redis restarted with appendfsync always: locks survive the restart",
            ttl: Duration::from_millis(600),
            hold: Duration::from_millis(300),
            fault: Fault::RestartRedis,
            redis_args: &["--appendonly", "yes", "--appendfsync", "always"],
            free_bound: Duration::from_millis(3000),
            ..base.clone()
        },
        Scenario {
            name: "pause-clients",
            about: "CLIENT PAUSE past the response timeout: timeouts are outcomes unknown, never a double grant",
            ttl: Duration::from_millis(2000),
            hold: Duration::from_millis(100),
            wait: Duration::from_secs(10),
            fault: Fault::PauseClients,
            // One-shot attempts only (5 ms apart), so that some are in flight when a pause hits.
            one_shot_every: Some(1),
            // The pause itself, then at most one claim of a lock an abandoned attempt won.
            free_bound: Duration::from_millis(6000),
            ..base.clone()
        },
        Scenario {
            name: "delay-replies",
            about: "replies held up past the ttl (proxy): leases count from the request, a lock won too late is not held",
            ttl: Duration::from_millis(400),
            // Past the first renewal (at ttl / 3), so that delayed renewals cost leases.
            hold: Duration::from_millis(200),
            fault: Fault::DelayReplies,
            one_shot_every: Some(2),
            free_bound: Duration::from_millis(3000),
            ..base.clone()
        },
        Scenario {
            name: "freeze-redis",
            about: "redis-server frozen (SIGSTOP) past the ttl: leases end on the client's clock, nobody holds an expired lock",
            ttl: Duration::from_millis(500),
            hold: Duration::from_millis(100),
            fault: Fault::FreezeRedis,
            free_bound: Duration::from_millis(3000),
            ..base.clone()
        },
        Scenario {
            name: "black-hole",
            about: "all traffic held past the response timeout (proxy): outcomes unknown, no double grant",
            ttl: Duration::from_millis(2000),
            hold: Duration::from_millis(100),
            wait: Duration::from_secs(10),
            fault: Fault::BlackHole,
            one_shot_every: Some(2),
            free_bound: Duration::from_millis(6000),
            ..base.clone()
        },
        Scenario {
            name: "drop-connections",
            about: "every connection dropped at once (proxy): clients reconnect, resubscribe and go on",
            hold: Duration::from_millis(20),
            fault: Fault::DropConnections,
            free_bound: Duration::from_millis(2500),
            ..base.clone()
        },
        Scenario {
            name: "script-flush",
            about: "SCRIPT FLUSH under contention: scripts are reloaded on NOSCRIPT, nothing else changes",
            hold: Duration::from_millis(5),
            fault: Fault::ScriptFlush,
            ..base.clone()
        },
        Scenario {
            name: "kill-cli",
            about: "the redfour CLI killed in the middle of `run` (waiting or holding): no lock outlives its ttl or the claim window",
            ttl: Duration::from_millis(500),
            hold: Duration::from_millis(20),
            fault: Fault::KillCli,
            // A CLI killed while queued is handed the lock in its turn and holds it for the
            // CLI's claim window (the library's default, 5 s); two may stand in line.
            free_bound: Duration::from_millis(11_000),
            ..base.clone()
        },
        Scenario {
            name: "mixed",
            about: "a random fault at each step (holders and waiters frozen or killed, restarts with appendfsync always, pauses, delays, black holes, dropped connections, lost notices, script flushes)",
            ttl: Duration::from_millis(500),
            hold: Duration::from_millis(50),
            wait: Duration::from_secs(10),
            fault: Fault::Mixed,
            redis_args: &["--appendonly", "yes", "--appendfsync", "always"],
            claim_window: Some(Duration::from_millis(1000)),
            one_shot_every: Some(3),
            // A pause or a black hole (up to 3.8 s), then a claim window or two.
            free_bound: Duration::from_millis(6500),
            ..base.clone()
        },
        Scenario {
            name: "kill-waiter",
            about: "waiters killed mid-wait: their queue entries are skipped or their handoffs expire after the claim window",
            hold: Duration::from_millis(30),
            fault: Fault::KillWaiter,
            claim_window: Some(Duration::from_millis(1000)),
            // A dead waiter at the head of the queue is handed the lock and holds it for the
            // claim window; two may stand in line.
            free_bound: Duration::from_millis(3000),
            ..base.clone()
        },
        Scenario {
            name: "kill-subscriptions",
            about: "subscriptions killed (lost notices): every waiter still gets the lock within the fallback bound",
            hold: Duration::from_millis(20),
            fault: Fault::KillSubscriptions,
            free_bound: Duration::from_millis(2500),
            ..base.clone()
        },
        Scenario {
            name: "mixed-fleet",
            about: "3 Rust and 3 Node redfour workers on one lock, holders and now and then waiters frozen or killed on both sides: both libraries keep exclusion, fencing and liveness together, and both sides get the lock",
            workers: 3,
            node_workers: 3,
            ttl: Duration::from_millis(500),
            // Node redfour cannot renew: a tenth of the ttl, as the other kill and freeze
            // scenarios hold it.
            hold: Duration::from_millis(50),
            fault: Fault::HoldersAndWaiters,
            // Think time. A Node worker that asks again the moment its release answers gets the
            // lock back before the waiters its release notice woke (Node redfour does not
            // queue), and keeps it for many holdings in a row: without a pause the Rust side
            // had 3-53 % of the holdings. With 20 ms between a release and the next request,
            // as a service doing other work has, the shares show how the two libraries'
            // waiters share the lock.
            think: Duration::from_millis(20),
            // Waits only (a one-shot attempt does not queue): a queue that empties now and
            // then would hand Node waiters the lock without any turn, hiding whether the turns
            // work.
            one_shot_every: None,
            // The waits that end the longest gaps: a queued Rust waiter killed or frozen is
            // handed the lock in its turn and leaves it unclaimed for min(ttl, claim window) =
            // 500 ms, and two may stand in line; a worker frozen or killed between winning
            // and logging leaves a lock nobody sees for a ttl. Then the waiters look again: a
            // Node waiter after max(the holder's remaining ttl, 100 ms) from its last look, a
            // Rust waiter after the remaining ttl + 1 ms. The rest is margin for two shared
            // cores.
            free_bound: Duration::from_millis(1500),
            ..base.clone()
        },
        Scenario {
            name: "sentinel-failover",
            about: "SENTINEL FAILOVER while the lock is held (workers on Sentinel, WAIT for 1 replica): exclusion and fencing hold, work goes on after the failover",
            topology: Topology::Sentinel {
                replicas: 1,
                sentinels: 3,
            },
            replica_acks: Some((1, Duration::from_millis(500))),
            // One renewal per holding (at ttl / 3 = 1 s): a holder renews through the
            // promotion, and a renewal lost to the old master (sent before the `+switch-master`,
            // about a second after the promotion) still leaves the new master's copy of the lock
            // alive past the holder's release. Four workers: at the end, each queued waiter
            // still takes its turn of `hold` before it stops.
            workers: 4,
            ttl: Duration::from_millis(3000),
            hold: Duration::from_millis(1100),
            wait: Duration::from_secs(10),
            fault: Fault::SentinelFailover,
            // From the promotion until the old master is a replica again (about 11 s), the new
            // master has no replica: a fresh acquire is not acknowledged and is given up. (The
            // fair queue's handoffs go on meanwhile, as they do not wait for replicas; the
            // bound allows for a library whose handoffs do.) A lock released on the old master
            // after the promotion stays on the new one until its ttl.
            free_bound: Duration::from_millis(14_000),
            ..base.clone()
        },
        Scenario {
            name: "cluster-reshard",
            about: "the lock's hash slot moved between masters again and again while contended (ASK, TRYAGAIN, MOVED): exclusion, fencing, progress",
            topology: Topology::Cluster { masters: 3 },
            hold: Duration::from_millis(20),
            fault: Fault::ClusterReshard,
            // While the slot migrates, a script on the lock's keys runs only where all of
            // them are: attempts on a free lock get TRYAGAIN until the slot is handed over
            // (a migration takes 0.3-0.7 s here), and are retried with backoff.
            free_bound: Duration::from_millis(2500),
            ..base
        },
    ]
}

/// Finds a scenario by name.
pub fn find(name: &str) -> Option<Scenario> {
    all().into_iter().find(|s| s.name == name)
}

/// What the workers of one [`Side`] did in a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SideOutcome {
    /// Acquisitions (`acquire_ok`) by its workers.
    pub acquisitions: usize,
    /// Those of its holdings that ended with a release answering `released`.
    pub released: usize,
    /// Its acquisitions that came next after a holding of the other side that ended with
    /// `released`: the lock passed from one side to the other at a release.
    pub took_over: usize,
    /// Faults that hit its workers (`stop` and `kill`; not the kills at the end of a run).
    pub faults: usize,
    /// Those of them that hit a holder (between its `acquire_ok` and its `release_done`).
    pub holders_hit: usize,
}

impl SideOutcome {
    fn of(events: &[Event], side: Side) -> SideOutcome {
        let mut out = SideOutcome::default();
        // Every holding in acquisition order: its holder's side, and whether it was released.
        let mut holdings: Vec<(Option<Side>, bool)> = Vec::new();
        // Who holds, as the history goes: from `acquire_ok` to `release_done`.
        let mut holding: BTreeMap<&str, usize> = BTreeMap::new();
        for e in events {
            match &e.what {
                What::AcquireOk { .. } => {
                    holding.insert(e.who.as_str(), holdings.len());
                    holdings.push((Side::of(&e.who), false));
                }
                What::ReleaseDone { outcome, .. } => {
                    if let Some(h) = holding.remove(e.who.as_str()) {
                        holdings[h].1 = outcome == "released";
                    }
                }
                What::Fault { kind, target }
                    if (kind == "stop" || kind == "kill") && Side::of(target) == Some(side) =>
                {
                    out.faults += 1;
                    if holding.contains_key(target.as_str()) {
                        out.holders_hit += 1;
                    }
                }
                _ => {}
            }
        }
        let ours = |h: &(Option<Side>, bool)| h.0 == Some(side);
        out.acquisitions = holdings.iter().filter(|h| ours(h)).count();
        out.released = holdings.iter().filter(|h| ours(h) && h.1).count();
        out.took_over = holdings
            .windows(2)
            .filter(|w| ours(&w[1]) && w[0].1 && w[0].0.is_some_and(|s| s != side))
            .count();
        out
    }
}

/// What a run found.
#[derive(Debug)]
pub struct Outcome {
    /// The checker's report (violations of the allowed rules included).
    pub report: Report,
    /// Critical sections entered.
    pub enters: usize,
    /// Increments of the unfenced counter that overlapping holders lost.
    pub lost_updates: i64,
    /// Lock or queue keys still on the server one ttl after the run.
    pub keys_left: Vec<String>,
    /// Acquisitions after the last fault (for a failover or a migration: after it completed).
    pub acquired_after_faults: usize,
    /// The fair queue's entries hash, when it held nothing but the outsiders' turn state once
    /// the rest was gone, and how long it had left to live then (a mixed fleet only: not
    /// counted as left behind while it expires within [`QUEUE_LIFETIME`]).
    pub turn_state_left: Option<(String, Duration)>,
    /// What the Rust workers did.
    pub rust: SideOutcome,
    /// What the Node workers did (all zero without any).
    pub node: SideOutcome,
    /// Where the logs are, when they were kept (the run failed, or it was asked to).
    pub kept: Option<PathBuf>,
}

impl Outcome {
    /// The violations of rules this scenario promises, plus keys left behind.
    pub fn failures(&self, scenario: &Scenario) -> Vec<String> {
        let mut failures: Vec<String> = self
            .report
            .violations
            .iter()
            .filter(|v| !scenario.allowed.contains(&v.rule))
            .map(|v| {
                format!(
                    "{}: {}\n    {}",
                    v.rule,
                    v.message,
                    v.context.join("\n    ")
                )
            })
            .collect();
        if !self.keys_left.is_empty() {
            failures.push(format!(
                "R: keys left on the server one ttl after the run: {:?}",
                self.keys_left
            ));
        }
        failures
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.report)?;
        write!(
            f,
            "critical sections {}, acquisitions after the last fault {}, unfenced updates lost {}, keys left {:?}",
            self.enters, self.acquired_after_faults, self.lost_updates, self.keys_left
        )?;
        if let Some((key, pttl)) = &self.turn_state_left {
            write!(
                f,
                ", turn state alone in {key} (expires in {} ms)",
                pttl.as_millis()
            )?;
        }
        if self.node != SideOutcome::default() {
            for (name, side) in [("Rust", &self.rust), ("Node", &self.node)] {
                write!(
                    f,
                    ", {name} workers: {} acquisitions ({} straight after a release by the other side), {} released, {} faults ({} on a holder)",
                    side.acquisitions, side.took_over, side.released, side.faults, side.holders_hit
                )?;
            }
        }
        match &self.kept {
            Some(dir) => writeln!(f, ", logs kept in {}", dir.display()),
            None => writeln!(f),
        }
    }
}

/// The lock every worker contends for.
const LOCK: &str = "the-lock";

/// The library a worker runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// This library (`redfour-chaos worker`), named `w1`, `w2`, …
    Rust,
    /// Node redfour 1.0.5 (`interop/chaos-worker.js`), named `n1`, `n2`, …
    Node,
}

impl Side {
    /// The side of the worker named `who` in a log, `None` for anything but a worker.
    pub fn of(who: &str) -> Option<Side> {
        let side = match who.as_bytes().first()? {
            b'w' => Side::Rust,
            b'n' => Side::Node,
            _ => return None,
        };
        let number = &who[1..];
        (!number.is_empty() && number.bytes().all(|b| b.is_ascii_digit())).then_some(side)
    }

    fn prefix(self) -> char {
        match self {
            Side::Rust => 'w',
            Side::Node => 'n',
        }
    }
}

struct Worker {
    name: String,
    side: Side,
    child: Child,
}

/// The running servers of a scenario's [`Topology`]. Faults that act on the one redis-server
/// get it through [`Deployment::server`], which only a standalone deployment has.
// One per run: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Deployment {
    /// One redis-server, and the proxy in front of it for the faults that need one.
    Standalone {
        server: RedisServer,
        proxy: Option<Proxy>,
    },
    Sentinel(SentinelGroup),
    Cluster(RedisCluster),
}

impl Deployment {
    /// Starts the servers. The kit's Sentinel group and cluster panic, with every process's
    /// log, when they cannot start or settle.
    fn start(scenario: &Scenario) -> Result<Deployment, BoxError> {
        Ok(match scenario.topology {
            Topology::Standalone => {
                let server = RedisServer::try_start_with_args(scenario.redis_args)?;
                let proxy = match scenario.fault {
                    Fault::DelayReplies
                    | Fault::BlackHole
                    | Fault::DropConnections
                    | Fault::Mixed => Some(Proxy::start(
                        format!("127.0.0.1:{}", server.port()).parse()?,
                    )?),
                    _ => None,
                };
                Deployment::Standalone { server, proxy }
            }
            Topology::Sentinel {
                replicas,
                sentinels,
            } => Deployment::Sentinel(SentinelGroup::start(replicas, sentinels)),
            Topology::Cluster { masters } => Deployment::Cluster(RedisCluster::start(masters, 0)),
        })
    }

    /// The standalone server's URL as clients reach it (through the proxy, if there is one).
    fn url(&self) -> Option<String> {
        match self {
            Deployment::Standalone { server, proxy } => {
                Some(proxy.as_ref().map_or_else(|| server.url(), |p| p.url()))
            }
            _ => None,
        }
    }

    /// The worker arguments that say where Redis is and how it is laid out.
    fn worker_args(&self) -> Vec<String> {
        let (mut args, urls) = match self {
            Deployment::Standalone { .. } => (Vec::new(), self.url().into_iter().collect()),
            Deployment::Sentinel(group) => (
                vec![
                    "--topology".to_owned(),
                    "sentinel".to_owned(),
                    "--service".to_owned(),
                    group.service().to_owned(),
                ],
                group.sentinel_urls(),
            ),
            Deployment::Cluster(cluster) => (
                vec!["--topology".to_owned(), "cluster".to_owned()],
                cluster.seed_urls(),
            ),
        };
        for url in urls {
            args.push("--url".to_owned());
            args.push(url);
        }
        args
    }

    /// The one redis-server, for the faults that act on it.
    fn server(&mut self) -> Result<&mut RedisServer, BoxError> {
        match self {
            Deployment::Standalone { server, .. } => Ok(server),
            _ => Err("this fault needs the standalone topology".into()),
        }
    }

    fn proxy(&self) -> Option<&Proxy> {
        match self {
            Deployment::Standalone { proxy, .. } => proxy.as_ref(),
            _ => None,
        }
    }

    /// The key of lock `id` and its fencing counter, as the workers' topology lays them out.
    fn lock_keys(&self, ns: &str, id: &str) -> (String, String) {
        match self {
            Deployment::Cluster(_) => (format!("{{{ns}:{id}}}"), format!("{{{ns}:{id}}}:index")),
            _ => (format!("{ns}:{id}"), format!("{ns}index")),
        }
    }

    /// A `KEYS` pattern for every key of namespace `ns`.
    fn keys_pattern(&self, ns: &str) -> String {
        match self {
            Deployment::Cluster(_) => format!("{{{ns}:*"),
            _ => format!("{ns}*"),
        }
    }

    /// Runs a command about one key on the master that has it; `None` if none answered.
    fn cmd_on_key(&self, args: &[&str]) -> Option<redis::Value> {
        match self {
            Deployment::Standalone { server, .. } => server.try_cmd(args).ok(),
            Deployment::Sentinel(group) => group.master().try_cmd(args).ok(),
            // The master that serves the key's slot answers; the others answer MOVED (and, while
            // the slot migrates, the source ASK once the key left it, the target MOVED).
            Deployment::Cluster(cluster) => {
                cluster.nodes().iter().find_map(|n| n.try_cmd(args).ok())
            }
        }
    }

    /// How long the entries hash `key` of a fair queue has to live when all it holds is the
    /// state of the outsiders' turns (the field `turn`, see "Outsiders' turns" in the library's
    /// `fair_common.lua`) and it expires within [`QUEUE_LIFETIME`]; `None` otherwise (gone, or
    /// anything else in it, or no expiry in sight). The state outlives the last waiter: the
    /// hash expires as the queue does, [`QUEUE_LIFETIME`] after the last waiter joined.
    fn turn_state(&self, key: &str) -> Option<Duration> {
        let redis::Value::Array(fields) = self.cmd_on_key(&["HKEYS", key])? else {
            return None;
        };
        let only_turn = matches!(&fields[..], [redis::Value::BulkString(f)] if f == b"turn");
        let redis::Value::Int(pttl) = self.cmd_on_key(&["PTTL", key])? else {
            return None;
        };
        let pttl = Duration::from_millis(u64::try_from(pttl).ok()?);
        (only_turn && !pttl.is_zero() && pttl <= QUEUE_LIFETIME).then_some(pttl)
    }

    /// Every server's log (the sentinels' too), for a kept run.
    fn logs(&self) -> String {
        match self {
            Deployment::Standalone { server, .. } => server.log(),
            Deployment::Sentinel(group) => group.logs(),
            Deployment::Cluster(cluster) => cluster.logs(),
        }
    }

    /// The keys matching `pattern` on every master; `None` if one could not be asked.
    fn keys(&self, pattern: &str) -> Option<Vec<String>> {
        let nodes: Vec<&RedisServer> = match self {
            Deployment::Standalone { server, .. } => vec![server],
            Deployment::Sentinel(group) => vec![group.master()],
            // KEYS answers for the node's own keys; without replicas every node is a master.
            Deployment::Cluster(cluster) => cluster.nodes().iter().collect(),
        };
        let mut found = Vec::new();
        for node in nodes {
            let redis::Value::Array(keys) = node.try_cmd(&["KEYS", pattern]).ok()? else {
                return None;
            };
            found.extend(keys.into_iter().filter_map(|k| match k {
                redis::Value::BulkString(b) => String::from_utf8(b).ok(),
                _ => None,
            }));
        }
        Some(found)
    }
}

struct Run<'a> {
    scenario: &'a Scenario,
    worker_bin: &'a Path,
    dir: PathBuf,
    /// Where Redis is, as worker arguments (`--url …`, and `--topology` when not standalone).
    redis: Vec<String>,
    namespace: String,
    resource: String,
    workers: Vec<Worker>,
    spawned: usize,
    chaos: Log,
    /// `node` and the Node worker, for a mixed fleet.
    node: Option<NodeSetup>,
}

impl Run<'_> {
    fn spawn_worker(&mut self, side: Side) -> Result<(), BoxError> {
        self.spawned += 1;
        let name = format!("{}{}", side.prefix(), self.spawned);
        let out = fs::File::create(self.dir.join(format!("{name}.out")))?;
        let child = match side {
            Side::Rust => self.rust_worker(&name)?,
            Side::Node => self.node_worker(&name)?,
        }
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()?;
        self.workers.push(Worker { name, side, child });
        Ok(())
    }

    /// The flags both kinds of worker take: where Redis, the lock, the resource, the log and
    /// the stop file are, and the lock's timing.
    fn worker_args(&self, name: &str) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = self.redis.iter().map(Into::into).collect();
        let ms = |d: Duration| d.as_millis().to_string();
        for (flag, value) in [
            ("--namespace", self.namespace.clone()),
            ("--lock", LOCK.to_owned()),
            ("--ttl-ms", ms(self.scenario.ttl)),
            ("--hold-ms", ms(self.scenario.hold)),
            ("--wait-ms", ms(self.scenario.wait)),
            ("--resource", self.resource.clone()),
            ("--who", name.to_owned()),
            ("--think-ms", ms(self.scenario.think)),
        ] {
            args.push(flag.into());
            args.push(value.into());
        }
        for (flag, path) in [
            ("--log", self.dir.join(format!("{name}.log"))),
            ("--stop-file", self.dir.join("stop")),
        ] {
            args.push(flag.into());
            args.push(path.into());
        }
        args
    }

    /// The command of the Node worker `name`: the Rust worker's flags for a standalone Redis.
    fn node_worker(&self, name: &str) -> Result<Command, BoxError> {
        let node = self
            .node
            .as_ref()
            .ok_or("a Node worker needs the Node setup")?;
        let mut cmd = Command::new(&node.node);
        cmd.arg(&node.worker).args(self.worker_args(name));
        Ok(cmd)
    }

    fn rust_worker(&self, name: &str) -> Result<Command, BoxError> {
        let mut cmd = Command::new(self.worker_bin);
        cmd.arg("worker")
            .args(self.worker_args(name))
            .args(
                self.scenario
                    .claim_window
                    .map(|w| vec!["--claim-window-ms".to_owned(), w.as_millis().to_string()])
                    .unwrap_or_default(),
            )
            .args(
                self.scenario
                    .one_shot_every
                    .map(|n| vec!["--one-shot-every".to_owned(), n.to_string()])
                    .unwrap_or_default(),
            )
            .args(
                self.scenario
                    .replica_acks
                    .map(|(n, timeout)| {
                        vec![
                            "--replica-acks".to_owned(),
                            n.to_string(),
                            "--replica-ack-timeout-ms".to_owned(),
                            timeout.as_millis().to_string(),
                        ]
                    })
                    .unwrap_or_default(),
            );
        Ok(cmd)
    }

    /// Kills worker `i` (`SIGKILL`) and starts a new one on its side in its place.
    fn kill_and_replace(&mut self, i: usize) -> Result<(), BoxError> {
        let mut w = self.workers.remove(i);
        w.child.kill()?;
        self.fault("kill", &w.name)?;
        w.child.wait()?;
        self.spawn_worker(w.side)
    }

    /// Freezes worker `i` (`SIGSTOP`) for `how_long`, then lets it go on (`SIGCONT`).
    fn freeze(&self, i: usize, how_long: Duration) -> Result<(), BoxError> {
        let w = &self.workers[i];
        signal(&w.child, Signal::SIGSTOP)?;
        self.fault("stop", &w.name)?;
        thread::sleep(how_long);
        signal(&w.child, Signal::SIGCONT)?;
        self.fault("cont", &w.name)?;
        Ok(())
    }

    fn fault(&self, kind: &str, target: &str) -> Result<(), BoxError> {
        Ok(self.chaos.record(What::Fault {
            kind: kind.to_owned(),
            target: target.to_owned(),
        })?)
    }

    /// The worker holding the lock now: from the holder's pid, which this library writes into
    /// the lock hash; for a hash without one (Node redfour writes only the index), the Node
    /// worker whose last acquisition in its log has the hash's index. (A holder that has not
    /// logged its acquisition yet is not found: nobody seems to hold.)
    fn holder(&self, deployment: &Deployment) -> Option<usize> {
        let (key, _) = deployment.lock_keys(&self.namespace, LOCK);
        let fields = match deployment.cmd_on_key(&["HMGET", &key, "pid", "index"])? {
            redis::Value::Array(fields) => fields,
            _ => return None,
        };
        let text = |v: Option<&redis::Value>| match v {
            Some(redis::Value::BulkString(b)) => std::str::from_utf8(b).ok().map(str::to_owned),
            _ => None,
        };
        if let Some(pid) = text(fields.first()).and_then(|p| p.parse::<u32>().ok()) {
            return self.workers.iter().position(|w| w.child.id() == pid);
        }
        let index = text(fields.get(1))?.parse::<i64>().ok()?;
        self.workers.iter().position(|w| {
            w.side == Side::Node
                && last_acquired(&self.dir.join(format!("{}.log", w.name))) == Some(index)
        })
    }

    /// The holder, if one on `side` holds within a second (under contention the lock changes
    /// hands every few tens of ms, but one side may keep it for a while).
    fn holder_on(&self, deployment: &Deployment, side: Side) -> Option<usize> {
        let mut found = None;
        // A condition, polled: the holder on that side.
        redfour_test::wait_until_every(Duration::from_secs(1), Duration::from_millis(10), || {
            found = self
                .holder(deployment)
                .filter(|i| self.workers[*i].side == side);
            found.is_some()
        });
        found
    }

    /// A worker on `side` that does not hold the lock, drawn at random; one of the other side
    /// when `side` has none.
    fn waiter_on(&self, deployment: &Deployment, side: Side, rng: &mut StdRng) -> Option<usize> {
        let holder = self.holder(deployment);
        let waiters = |side: Option<Side>| -> Vec<usize> {
            (0..self.workers.len())
                .filter(|i| Some(*i) != holder && side.is_none_or(|s| self.workers[*i].side == s))
                .collect()
        };
        let mut candidates = waiters(Some(side));
        if candidates.is_empty() {
            candidates = waiters(None);
        }
        (!candidates.is_empty()).then(|| candidates[rng.random_range(0..candidates.len())])
    }

    fn holder_name(&self, deployment: &Deployment) -> String {
        self.holder(deployment)
            .map_or_else(|| "nobody".to_owned(), |i| self.workers[i].name.clone())
    }
}

impl Drop for Run<'_> {
    /// A run cut short (an error, or a panic of the test kit) leaves no worker behind to
    /// contend forever for servers that are gone; after a complete run they have all exited.
    fn drop(&mut self) {
        for w in &mut self.workers {
            if matches!(w.child.try_wait(), Ok(None)) {
                let _ = w.child.kill();
                let _ = w.child.wait();
            }
        }
    }
}

/// The index of the last `acquire_ok` in the log at `path`.
fn last_acquired(path: &Path) -> Option<i64> {
    let log = fs::read_to_string(path).ok()?;
    log.lines()
        .rev()
        .filter(|line| line.contains("\"acquire_ok\""))
        .find_map(
            |line| match serde_json::from_str::<Event>(line).ok()?.what {
                What::AcquireOk { index, .. } => Some(index),
                _ => None,
            },
        )
}

/// The `redfour` CLI binary, which cargo builds next to this crate's binary (`cargo build
/// -p redfour-cli`; a workspace build or test does it).
pub fn cli_bin(worker_bin: &Path) -> Result<PathBuf, BoxError> {
    let cli = worker_bin.with_file_name("redfour");
    if cli.is_file() {
        Ok(cli)
    } else {
        Err(format!(
            "the kill-cli scenario needs the redfour CLI at {} (cargo build -p redfour-cli)",
            cli.display()
        )
        .into())
    }
}

fn signal(child: &Child, sig: Signal) -> Result<(), BoxError> {
    let pid = i32::try_from(child.id())?;
    Ok(kill(Pid::from_raw(pid), sig)?)
}

/// The time of day (UTC) now, as the servers' logs print it, to match a fault with them.
fn wall_clock() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let ms = now.as_millis() % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03} UTC",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// Runs `scenario` for `duration` with the fault schedule drawn from `seed`. `worker_bin` is
/// this crate's binary (its `worker` subcommand). The logs go to a fresh directory, kept if
/// `keep` or if the run found a failure.
///
/// A fault that moves the lock to another server (a failover, a migration) is not cut short
/// when the time is up: the last one completes, then the run goes on until the workers made
/// progress again ([`AFTER_MOVE_WRITES`], [`AFTER_MOVE_TAIL`]).
pub fn run(
    scenario: &Scenario,
    worker_bin: &Path,
    duration: Duration,
    seed: u64,
    keep: bool,
) -> Result<Outcome, BoxError> {
    if !scenario.fault.applies_to(scenario.topology) {
        return Err(format!(
            "{}: the fault {:?} does not apply to the topology {:?}",
            scenario.name, scenario.fault, scenario.topology
        )
        .into());
    }
    if scenario.node_workers > 0 && scenario.topology != Topology::Standalone {
        return Err(format!(
            "{}: Node redfour workers need the standalone topology",
            scenario.name
        )
        .into());
    }
    let node = match scenario.node_workers {
        0 => None,
        _ => Some(crate::node::find().map_err(|why| format!("{}: {why}", scenario.name))?),
    };
    let tmp = tempfile::Builder::new()
        .prefix("redfour-chaos-")
        .tempdir()?;
    let mut deployment = Deployment::start(scenario)?;
    let resource = Resource::start(Log::open(&tmp.path().join("resource.log"), "resource")?)?;
    let mut run = Run {
        scenario,
        worker_bin,
        dir: tmp.path().to_owned(),
        redis: deployment.worker_args(),
        namespace: format!("chaos{seed}"),
        resource: resource.addr().to_string(),
        workers: Vec::new(),
        spawned: 0,
        chaos: Log::open(&tmp.path().join("chaos.log"), "chaos")?,
        node,
    };
    for _ in 0..scenario.workers {
        run.spawn_worker(Side::Rust)?;
    }
    for _ in 0..scenario.node_workers {
        run.spawn_worker(Side::Node)?;
    }

    let mut rng = StdRng::seed_from_u64(seed);
    let end = Instant::now() + duration;
    // The first fault waits for the workers to be at work: a first fenced write accepted.
    if !redfour_test::wait_until(Duration::from_secs(15), || resource.highest() > 0) {
        return Err("no worker got through a critical section within 15 s of starting".into());
    }
    const MIXABLE: [Fault; 11] = [
        Fault::FreezeHolder,
        Fault::KillHolder,
        Fault::KillWaiter,
        Fault::RestartRedis,
        Fault::FreezeRedis,
        Fault::KillSubscriptions,
        Fault::PauseClients,
        Fault::DelayReplies,
        Fault::BlackHole,
        Fault::DropConnections,
        Fault::ScriptFlush,
    ];
    // When the last fault that moved the lock to another server completed.
    let mut moved_at: Option<Instant> = None;
    // `HoldersAndWaiters`: the side whose turn it is, the last kill of a waiter.
    let mut aim = if scenario.workers > 0 {
        Side::Rust
    } else {
        Side::Node
    };
    let mut last_waiter_kill: Option<Instant> = None;
    while Instant::now() < end {
        let fault = match scenario.fault {
            Fault::Mixed => MIXABLE[rng.random_range(0..MIXABLE.len())],
            one => one,
        };
        let pause = match fault {
            Fault::None => Duration::from_millis(200),
            Fault::FreezeHolder | Fault::KillHolder => {
                Duration::from_millis(rng.random_range(800..1600))
            }
            Fault::RestartRedis => Duration::from_millis(rng.random_range(1500..2500)),
            Fault::KillSubscriptions => Duration::from_millis(rng.random_range(400..900)),
            Fault::PauseClients => Duration::from_millis(rng.random_range(1000..2000)),
            Fault::DelayReplies => Duration::from_millis(rng.random_range(800..1500)),
            Fault::FreezeRedis => Duration::from_millis(rng.random_range(1000..2000)),
            Fault::BlackHole => Duration::from_millis(rng.random_range(1000..2000)),
            Fault::DropConnections => Duration::from_millis(rng.random_range(500..1000)),
            Fault::ScriptFlush => Duration::from_millis(rng.random_range(200..600)),
            // Dead waiters' entries live for three poll intervals (6 s): at most two of them
            // stand in the queue at once, each costing one claim window at the head.
            Fault::KillWaiter => Duration::from_millis(rng.random_range(2600..3400)),
            Fault::HoldersAndWaiters => Duration::from_millis(rng.random_range(600..1200)),
            Fault::Mixed => Duration::from_millis(rng.random_range(500..1500)),
            Fault::KillCli => Duration::from_millis(rng.random_range(1500..2500)),
            // Early: a failover takes about 11 s to settle, so a 10 s run fits one.
            Fault::SentinelFailover => Duration::from_millis(rng.random_range(500..1500)),
            Fault::ClusterReshard => Duration::from_millis(rng.random_range(300..1000)),
        };
        // The schedule's pacing, not a wait for a condition.
        thread::sleep(pause.min(end.saturating_duration_since(Instant::now())));
        if Instant::now() >= end {
            break;
        }
        match fault {
            Fault::None | Fault::Mixed => {}
            Fault::FreezeHolder => {
                if let Some(i) = run.holder(&deployment) {
                    run.freeze(i, scenario.ttl * 3 / 2)?;
                }
            }
            Fault::KillHolder => {
                if let Some(i) = run.holder(&deployment) {
                    run.kill_and_replace(i)?;
                }
            }
            Fault::RestartRedis => {
                deployment.server()?.try_restart()?;
                run.fault("restart", "redis")?;
            }
            Fault::KillSubscriptions => {
                deployment
                    .server()?
                    .try_cmd(&["CLIENT", "KILL", "TYPE", "pubsub"])?;
                run.fault("client-kill-pubsub", "redis")?;
            }
            Fault::PauseClients => {
                // Longer than the library's 3 s response timeout.
                let ms = rng.random_range(3200..3800).to_string();
                deployment
                    .server()?
                    .try_cmd(&["CLIENT", "PAUSE", &ms, "ALL"])?;
                run.fault("client-pause", "redis")?;
                thread::sleep(Duration::from_millis(ms.parse()?));
            }
            Fault::DelayReplies => {
                if let Some(proxy) = deployment.proxy() {
                    let delay = scenario.ttl * rng.random_range(12..20) / 10;
                    proxy.set_reply_delay(delay);
                    run.fault("delay-replies", &format!("{} ms", delay.as_millis()))?;
                    thread::sleep(Duration::from_millis(rng.random_range(300..900)));
                    proxy.set_reply_delay(Duration::ZERO);
                    run.fault("delay-off", "proxy")?;
                }
            }
            Fault::FreezeRedis => {
                let pid = Pid::from_raw(i32::try_from(deployment.server()?.pid())?);
                kill(pid, Signal::SIGSTOP)?;
                run.fault("stop", "redis")?;
                thread::sleep(scenario.ttl * 3 / 2);
                kill(pid, Signal::SIGCONT)?;
                run.fault("cont", "redis")?;
            }
            Fault::BlackHole => {
                if let Some(proxy) = deployment.proxy() {
                    proxy.set_black_hole(true);
                    run.fault("black-hole", "proxy")?;
                    // Past the library's 3 s response timeout.
                    thread::sleep(Duration::from_millis(rng.random_range(3200..3800)));
                    proxy.set_black_hole(false);
                    run.fault("black-hole-off", "proxy")?;
                }
            }
            Fault::DropConnections => {
                if let Some(proxy) = deployment.proxy() {
                    proxy.drop_connections();
                    run.fault("drop-connections", "proxy")?;
                }
            }
            Fault::KillCli => {
                let ttl = format!("{}ms", scenario.ttl.as_millis());
                let url = deployment
                    .url()
                    .ok_or("the kill-cli fault needs the standalone topology")?;
                let mut cli = Command::new(cli_bin(worker_bin)?)
                    .args(["--url", &url, "--namespace", &run.namespace])
                    .args(["run", LOCK, "--ttl", &ttl, "--wait", "10s"])
                    .args(["--", "sleep", "0.2"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()?;
                thread::sleep(Duration::from_millis(rng.random_range(20..400)));
                cli.kill()?;
                run.fault("kill-cli", &cli.id().to_string())?;
                cli.wait()?;
            }
            Fault::ScriptFlush => {
                deployment.server()?.try_cmd(&["SCRIPT", "FLUSH"])?;
                run.fault("script-flush", "redis")?;
            }
            Fault::KillWaiter => {
                let holder = run.holder(&deployment);
                let waiters: Vec<usize> = (0..run.workers.len())
                    .filter(|i| Some(*i) != holder)
                    .collect();
                if !waiters.is_empty() {
                    let i = waiters[rng.random_range(0..waiters.len())];
                    run.kill_and_replace(i)?;
                }
            }
            Fault::HoldersAndWaiters => {
                let kill = rng.random_bool(0.5);
                let target = if rng.random_range(0..10) < 8 {
                    // The holder: on the side aimed at if it holds within a second (one side
                    // may keep the lock for a while), else whoever holds.
                    run.holder_on(&deployment, aim)
                        .or_else(|| run.holder(&deployment))
                        .map(|i| (i, kill))
                } else {
                    // A waiter of the side aimed at. A dead waiter's queue entry lives for
                    // three poll intervals (6 s) and costs the queue one unclaimed handoff
                    // when it reaches the head: one kill of a waiter per 3 s keeps at most two
                    // of them in line (as `kill-waiter` paces its kills); a waiter drawn for a
                    // kill sooner is frozen instead.
                    let kill = kill
                        && last_waiter_kill
                            .is_none_or(|t: Instant| t.elapsed() >= Duration::from_secs(3));
                    let waiter = run.waiter_on(&deployment, aim, &mut rng);
                    if kill && waiter.is_some() {
                        last_waiter_kill = Some(Instant::now());
                    }
                    waiter.map(|i| (i, kill))
                };
                if let Some((i, kill)) = target {
                    let side = run.workers[i].side;
                    if kill {
                        run.kill_and_replace(i)?;
                    } else {
                        run.freeze(i, scenario.ttl * 3 / 2)?;
                    }
                    // The aim passes to the other side once this one was hit.
                    if side == aim && scenario.workers > 0 && scenario.node_workers > 0 {
                        aim = match aim {
                            Side::Rust => Side::Node,
                            Side::Node => Side::Rust,
                        };
                    }
                }
            }
            Fault::SentinelFailover => {
                let Deployment::Sentinel(group) = &deployment else {
                    return Err("the sentinel-failover fault needs a Sentinel group".into());
                };
                // While a worker holds the lock (the replica is promoted a fraction of a second
                // after the request), as a freeze of the holder is: no holder, no failover.
                let old = group.master_index();
                let Some(holder) = run.holder(&deployment) else {
                    continue;
                };
                let holder = run.workers[holder].name.as_str();
                run.fault(
                    "sentinel-failover",
                    &format!(
                        "master: data node {old}; held by {holder}; {}",
                        wall_clock()
                    ),
                )?;
                // Blocks this thread (not the workers, which are processes) until the old
                // master is a replica of the new one, about 11 s.
                let new = group.failover();
                run.fault(
                    "failover-done",
                    &format!(
                        "master: data node {new}; held by {}; {}",
                        run.holder_name(&deployment),
                        wall_clock()
                    ),
                )?;
                moved_at = Some(Instant::now());
            }
            Fault::ClusterReshard => {
                let Deployment::Cluster(cluster) = &deployment else {
                    return Err("the cluster-reshard fault needs a Redis Cluster".into());
                };
                let (key, _) = deployment.lock_keys(&run.namespace, LOCK);
                let slot = cluster.key_slot(&key);
                let from = cluster.master_of_slot(slot);
                let others: Vec<usize> = cluster
                    .master_indexes()
                    .into_iter()
                    .filter(|m| *m != from)
                    .collect();
                let to = others[rng.random_range(0..others.len())];
                let what = format!("slot {slot}: node {from} -> node {to}");
                let migration = cluster.begin_migration(slot, to);
                run.fault(
                    "migrate-begin",
                    &format!(
                        "{what}; held by {}; {}",
                        run.holder_name(&deployment),
                        wall_clock()
                    ),
                )?;
                // The workers meet the half-moved slot: first with every key still on the
                // source (which answers, or TRYAGAIN once a script's keys are not all there),
                // then with the keys on the target (ASK, then TRYAGAIN there for a script whose
                // keys are not all there, e.g. on a free lock).
                thread::sleep(Duration::from_millis(rng.random_range(100..400)));
                migration.move_keys();
                run.fault("keys-moved", &what)?;
                thread::sleep(Duration::from_millis(rng.random_range(100..400)));
                migration.finish();
                run.fault(
                    "migrate-done",
                    &format!("{what}; held by {}", run.holder_name(&deployment)),
                )?;
                moved_at = Some(Instant::now());
            }
        }
    }

    // After the last failover or migration: progress on the server that has the lock now.
    if let Some(moved) = moved_at {
        let before = resource.accepted();
        // A condition, polled; its absence is reported by the test's progress check.
        let _progressed = redfour_test::wait_until(AFTER_MOVE_DEADLINE, || {
            resource.accepted() >= before + AFTER_MOVE_WRITES
        });
        // Then contention as usual for a while: the schedule's pacing.
        thread::sleep((moved + AFTER_MOVE_TAIL).saturating_duration_since(Instant::now()));
    }

    // Stop: every worker finishes its round (a wait ends within `wait`), stragglers are killed.
    fs::write(run.dir.join("stop"), b"")?;
    let limit = Instant::now() + scenario.wait + scenario.ttl + Duration::from_secs(5);
    for w in &mut run.workers {
        loop {
            if w.child.try_wait()?.is_some() {
                break;
            }
            if Instant::now() >= limit {
                w.child.kill()?;
                w.child.wait()?;
                run.chaos.record(What::Fault {
                    kind: "kill-at-end".to_owned(),
                    target: w.name.clone(),
                })?;
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    // Nothing of the locks may outlive the run by more than a ttl (the counter stays). With
    // Node workers about, the fair queue's turn state may stay a little longer, alone in the
    // entries hash, until that hash expires (see `turn_state`).
    let pattern = deployment.keys_pattern(&run.namespace);
    let (_, counter) = deployment.lock_keys(&run.namespace, LOCK);
    let entries = (scenario.node_workers > 0).then(|| format!("{}-waiters:{LOCK}", run.namespace));
    let left = || -> Vec<String> {
        match deployment.keys(&pattern) {
            Some(keys) => keys
                .into_iter()
                .filter(|k| *k != counter)
                .filter(|k| Some(k) != entries.as_ref() || deployment.turn_state(k).is_none())
                .collect(),
            None => vec!["(KEYS failed)".to_owned()],
        }
    };
    let gone = redfour_test::wait_until_every(
        scenario.ttl + Duration::from_secs(2),
        Duration::from_millis(20),
        || left().is_empty(),
    );
    let keys_left = if gone { Vec::new() } else { left() };
    let turn_state_left = entries
        .as_ref()
        .and_then(|k| Some((k.clone(), deployment.turn_state(k)?)));

    let events = read_dir(&run.dir)?;
    let enters = events
        .iter()
        .filter(|e| matches!(e.what, What::Enter { .. }))
        .count();
    let last_fault = events
        .iter()
        .filter(|e| matches!(&e.what, What::Fault { kind, .. } if kind != "kill-at-end"))
        .map(|e| e.t)
        .max();
    let acquired_after_faults = events
        .iter()
        .filter(|e| matches!(e.what, What::AcquireOk { .. }) && last_fault.is_none_or(|t| e.t > t))
        .count();
    let report = check(
        &events,
        Bounds {
            ttl_ns: u64::try_from(scenario.ttl.as_nanos())?,
            free_while_waiting_ns: u64::try_from(scenario.free_bound.as_nanos())?,
        },
    );
    let lost_updates = resource.lost_updates();
    let (rust, node) = (
        SideOutcome::of(&events, Side::Rust),
        SideOutcome::of(&events, Side::Node),
    );
    let mut outcome = Outcome {
        report,
        enters,
        lost_updates,
        keys_left,
        acquired_after_faults,
        turn_state_left,
        rust,
        node,
        kept: None,
    };
    if keep || !outcome.failures(scenario).is_empty() {
        // Not `*.log`: those are the event logs the checker reads.
        fs::write(run.dir.join("servers.txt"), deployment.logs())?;
        outcome.kept = Some(tmp.keep());
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_can_run_its_fault_and_names_are_unique() {
        let all = all();
        for s in &all {
            assert!(
                s.fault.applies_to(s.topology),
                "{}: {:?} on {:?}",
                s.name,
                s.fault,
                s.topology
            );
            assert_eq!(
                all.iter().filter(|o| o.name == s.name).count(),
                1,
                "{}",
                s.name
            );
            // Node redfour knows one server, and cannot renew: its workers leave the critical
            // section at their deadline, so a hold near the ttl would test nothing.
            if s.node_workers > 0 {
                assert_eq!(s.topology, Topology::Standalone, "{}", s.name);
                assert!(s.hold * 4 <= s.ttl, "{}", s.name);
            }
        }
        assert!(all.iter().any(|s| s.node_workers > 0 && s.workers > 0));
        // The faults on the one redis-server never run against a group or a cluster.
        let cluster = Topology::Cluster { masters: 3 };
        let sentinel = Topology::Sentinel {
            replicas: 1,
            sentinels: 3,
        };
        for fault in [
            Fault::RestartRedis,
            Fault::BlackHole,
            Fault::KillCli,
            Fault::Mixed,
        ] {
            assert!(!fault.applies_to(cluster) && !fault.applies_to(sentinel));
        }
        assert!(!Fault::SentinelFailover.applies_to(Topology::Standalone));
        assert!(Fault::HoldersAndWaiters.applies_to(cluster));
        assert!(!Fault::ClusterReshard.applies_to(sentinel));
        assert!(Fault::KillHolder.applies_to(cluster));
    }

    #[test]
    fn sides_are_told_by_name() {
        assert_eq!(Side::of("w12"), Some(Side::Rust));
        assert_eq!(Side::of("n3"), Some(Side::Node));
        for other in ["chaos", "resource", "w", "n", "nx1", "12345", ""] {
            assert_eq!(Side::of(other), None, "{other}");
        }
    }

    #[test]
    fn a_node_holder_is_found_by_the_last_acquisition_in_its_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("n1.log");
        assert_eq!(last_acquired(&path), None, "no log yet");
        let log = Log::open(&path, "n1").expect("log");
        log.record(What::AcquireInvoked).expect("write");
        assert_eq!(last_acquired(&path), None);
        for index in [7, 1_733_000_000_000_123] {
            log.record(What::AcquireOk { index, deadline: 5 })
                .expect("write");
            log.record(What::Enter { index }).expect("write");
        }
        log.record(What::AcquireInvoked).expect("write");
        assert_eq!(last_acquired(&path), Some(1_733_000_000_000_123));
    }

    #[test]
    fn sides_count_their_acquisitions_and_faults() {
        let ev = |who: &str, what: What| Event {
            t: 0,
            who: who.to_owned(),
            what,
        };
        let fault = |kind: &str, target: &str| What::Fault {
            kind: kind.to_owned(),
            target: target.to_owned(),
        };
        let ok = || What::AcquireOk {
            index: 1,
            deadline: 2,
        };
        let done = || What::ReleaseDone {
            index: 1,
            outcome: "released".to_owned(),
        };
        let events = [
            ev("w1", ok()),
            ev("w1", done()),
            ev("n2", ok()),
            ev("n2", done()),
            ev("n2", ok()),
            // n2 holds, w1 waits.
            ev("chaos", fault("stop", "n2")),
            ev("chaos", fault("cont", "n2")),
            ev("chaos", fault("kill", "w1")),
            ev("chaos", fault("kill-at-end", "n2")),
            ev("chaos", fault("kill-cli", "4242")),
        ];
        assert_eq!(
            SideOutcome::of(&events, Side::Rust),
            SideOutcome {
                acquisitions: 1,
                released: 1,
                took_over: 0,
                faults: 1,
                holders_hit: 0
            }
        );
        assert_eq!(
            SideOutcome::of(&events, Side::Node),
            SideOutcome {
                acquisitions: 2,
                released: 1,
                // The first, after w1's release; the second follows its own side.
                took_over: 1,
                faults: 1,
                holders_hit: 1
            }
        );
        // A holding that was not released (here: killed) passes nothing on.
        let killed = [
            ev("w1", ok()),
            ev("chaos", fault("kill", "w1")),
            ev("n2", ok()),
        ];
        assert_eq!(SideOutcome::of(&killed, Side::Node).took_over, 0);
        assert_eq!(SideOutcome::of(&killed, Side::Rust).holders_hit, 1);
    }
}
