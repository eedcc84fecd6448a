//! A run: a real redis-server, the resource, worker processes contending for one lock, faults
//! injected on a seeded schedule, then the checker over the merged logs and a look at what the
//! run left on the server.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redfour_test::RedisServer;

use crate::check::{check, Bounds, Report};
use crate::events::{read_dir, Log, What};
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
}

/// One scenario of the suite.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Its name on the command line.
    pub name: &'static str,
    /// What it shows, in a line.
    pub about: &'static str,
    /// Worker processes.
    pub workers: usize,
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
}

/// Every scenario.
pub fn all() -> Vec<Scenario> {
    let base = Scenario {
        name: "contention",
        about: "contention, no faults: exclusion, fencing, only-the-holder, liveness",
        workers: 5,
        ttl: Duration::from_millis(1000),
        hold: Duration::from_millis(5),
        wait: Duration::from_secs(5),
        fault: Fault::None,
        redis_args: &[],
        free_bound: Duration::from_millis(500),
        allowed: &[],
        claim_window: None,
        one_shot_every: Some(4),
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
            ..base
        },
    ]
}

/// Finds a scenario by name.
pub fn find(name: &str) -> Option<Scenario> {
    all().into_iter().find(|s| s.name == name)
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
            "critical sections {}, unfenced updates lost {}, keys left {:?}",
            self.enters, self.lost_updates, self.keys_left
        )?;
        match &self.kept {
            Some(dir) => writeln!(f, ", logs kept in {}", dir.display()),
            None => writeln!(f),
        }
    }
}

struct Worker {
    name: String,
    child: Child,
}

struct Run<'a> {
    scenario: &'a Scenario,
    worker_bin: &'a Path,
    dir: PathBuf,
    url: String,
    namespace: String,
    resource: String,
    workers: Vec<Worker>,
    spawned: usize,
    chaos: Log,
}

impl Run<'_> {
    fn spawn_worker(&mut self) -> Result<(), BoxError> {
        self.spawned += 1;
        let name = format!("w{}", self.spawned);
        let out = fs::File::create(self.dir.join(format!("{name}.out")))?;
        let child = Command::new(self.worker_bin)
            .arg("worker")
            .args(["--url", &self.url])
            .args(["--namespace", &self.namespace])
            .args(["--lock", "the-lock"])
            .args(["--ttl-ms", &self.scenario.ttl.as_millis().to_string()])
            .args(["--hold-ms", &self.scenario.hold.as_millis().to_string()])
            .args(["--wait-ms", &self.scenario.wait.as_millis().to_string()])
            .args(["--resource", &self.resource])
            .arg("--log")
            .arg(self.dir.join(format!("{name}.log")))
            .args(["--who", &name])
            .arg("--stop-file")
            .arg(self.dir.join("stop"))
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
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()?;
        self.workers.push(Worker { name, child });
        Ok(())
    }

    fn fault(&self, kind: &str, target: &str) -> Result<(), BoxError> {
        Ok(self.chaos.record(What::Fault {
            kind: kind.to_owned(),
            target: target.to_owned(),
        })?)
    }

    /// The worker holding the lock now, from the holder's pid the library writes into the
    /// lock hash.
    fn holder(&self, server: &RedisServer) -> Option<usize> {
        let key = format!("{}:the-lock", self.namespace);
        let pid = match server.try_cmd(&["HGET", &key, "pid"]).ok()? {
            redis::Value::BulkString(b) => String::from_utf8(b).ok()?.parse::<u32>().ok()?,
            _ => return None,
        };
        self.workers.iter().position(|w| w.child.id() == pid)
    }
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

/// Runs `scenario` for `duration` with the fault schedule drawn from `seed`. `worker_bin` is
/// this crate's binary (its `worker` subcommand). The logs go to a fresh directory, kept if
/// `keep` or if the run found a failure.
pub fn run(
    scenario: &Scenario,
    worker_bin: &Path,
    duration: Duration,
    seed: u64,
    keep: bool,
) -> Result<Outcome, BoxError> {
    let tmp = tempfile::Builder::new()
        .prefix("redfour-chaos-")
        .tempdir()?;
    let mut server = RedisServer::try_start_with_args(scenario.redis_args)?;
    let resource = Resource::start(Log::open(&tmp.path().join("resource.log"), "resource")?)?;
    let proxy = match scenario.fault {
        Fault::DelayReplies | Fault::BlackHole | Fault::DropConnections | Fault::Mixed => Some(
            redfour_test::Proxy::start(format!("127.0.0.1:{}", server.port()).parse()?)?,
        ),
        _ => None,
    };
    let mut run = Run {
        scenario,
        worker_bin,
        dir: tmp.path().to_owned(),
        url: proxy.as_ref().map_or_else(|| server.url(), |p| p.url()),
        namespace: format!("chaos{seed}"),
        resource: resource.addr().to_string(),
        workers: Vec::new(),
        spawned: 0,
        chaos: Log::open(&tmp.path().join("chaos.log"), "chaos")?,
    };
    for _ in 0..scenario.workers {
        run.spawn_worker()?;
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
            Fault::Mixed => Duration::from_millis(rng.random_range(500..1500)),
            Fault::KillCli => Duration::from_millis(rng.random_range(1500..2500)),
        };
        // The schedule's pacing, not a wait for a condition.
        thread::sleep(pause.min(end.saturating_duration_since(Instant::now())));
        if Instant::now() >= end {
            break;
        }
        match fault {
            Fault::None | Fault::Mixed => {}
            Fault::FreezeHolder => {
                if let Some(i) = run.holder(&server) {
                    let w = &run.workers[i];
                    signal(&w.child, Signal::SIGSTOP)?;
                    run.fault("stop", &w.name)?;
                    thread::sleep(scenario.ttl * 3 / 2);
                    signal(&w.child, Signal::SIGCONT)?;
                    run.fault("cont", &w.name)?;
                }
            }
            Fault::KillHolder => {
                if let Some(i) = run.holder(&server) {
                    let mut w = run.workers.remove(i);
                    w.child.kill()?;
                    run.fault("kill", &w.name)?;
                    w.child.wait()?;
                    run.spawn_worker()?;
                }
            }
            Fault::RestartRedis => {
                server.try_restart()?;
                run.fault("restart", "redis")?;
            }
            Fault::KillSubscriptions => {
                server.try_cmd(&["CLIENT", "KILL", "TYPE", "pubsub"])?;
                run.fault("client-kill-pubsub", "redis")?;
            }
            Fault::PauseClients => {
                // Longer than the library's 3 s response timeout.
                let ms = rng.random_range(3200..3800).to_string();
                server.try_cmd(&["CLIENT", "PAUSE", &ms, "ALL"])?;
                run.fault("client-pause", "redis")?;
                thread::sleep(Duration::from_millis(ms.parse()?));
            }
            Fault::DelayReplies => {
                if let Some(proxy) = &proxy {
                    let delay = scenario.ttl * rng.random_range(12..20) / 10;
                    proxy.set_reply_delay(delay);
                    run.fault("delay-replies", &format!("{} ms", delay.as_millis()))?;
                    thread::sleep(Duration::from_millis(rng.random_range(300..900)));
                    proxy.set_reply_delay(Duration::ZERO);
                    run.fault("delay-off", "proxy")?;
                }
            }
            Fault::FreezeRedis => {
                let pid = Pid::from_raw(i32::try_from(server.pid())?);
                kill(pid, Signal::SIGSTOP)?;
                run.fault("stop", "redis")?;
                thread::sleep(scenario.ttl * 3 / 2);
                kill(pid, Signal::SIGCONT)?;
                run.fault("cont", "redis")?;
            }
            Fault::BlackHole => {
                if let Some(proxy) = &proxy {
                    proxy.set_black_hole(true);
                    run.fault("black-hole", "proxy")?;
                    // Past the library's 3 s response timeout.
                    thread::sleep(Duration::from_millis(rng.random_range(3200..3800)));
                    proxy.set_black_hole(false);
                    run.fault("black-hole-off", "proxy")?;
                }
            }
            Fault::DropConnections => {
                if let Some(proxy) = &proxy {
                    proxy.drop_connections();
                    run.fault("drop-connections", "proxy")?;
                }
            }
            Fault::KillCli => {
                let ttl = format!("{}ms", scenario.ttl.as_millis());
                let mut cli = Command::new(cli_bin(worker_bin)?)
                    .args(["--url", &run.url, "--namespace", &run.namespace])
                    .args(["run", "the-lock", "--ttl", &ttl, "--wait", "10s"])
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
                server.try_cmd(&["SCRIPT", "FLUSH"])?;
                run.fault("script-flush", "redis")?;
            }
            Fault::KillWaiter => {
                let holder = run.holder(&server);
                let waiters: Vec<usize> = (0..run.workers.len())
                    .filter(|i| Some(*i) != holder)
                    .collect();
                if !waiters.is_empty() {
                    let i = waiters[rng.random_range(0..waiters.len())];
                    let mut w = run.workers.remove(i);
                    w.child.kill()?;
                    run.fault("kill", &w.name)?;
                    w.child.wait()?;
                    run.spawn_worker()?;
                }
            }
        }
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

    // Nothing of the locks may outlive the run by more than a ttl (the counter stays).
    let ns = run.namespace.clone();
    let left = || -> Vec<String> {
        let keys = match server.try_cmd(&["KEYS", &format!("{ns}*")]) {
            Ok(redis::Value::Array(keys)) => keys,
            _ => return vec!["(KEYS failed)".to_owned()],
        };
        keys.into_iter()
            .filter_map(|k| match k {
                redis::Value::BulkString(b) => String::from_utf8(b).ok(),
                _ => None,
            })
            .filter(|k| *k != format!("{ns}index"))
            .collect()
    };
    let gone =
        redfour_test::wait_until(scenario.ttl + Duration::from_secs(2), || left().is_empty());
    let keys_left = if gone { Vec::new() } else { left() };

    let events = read_dir(&run.dir)?;
    let enters = events
        .iter()
        .filter(|e| matches!(e.what, What::Enter { .. }))
        .count();
    let report = check(
        &events,
        Bounds {
            ttl_ns: u64::try_from(scenario.ttl.as_nanos())?,
            free_while_waiting_ns: u64::try_from(scenario.free_bound.as_nanos())?,
        },
    );
    let lost_updates = resource.lost_updates();
    let mut outcome = Outcome {
        report,
        enters,
        lost_updates,
        keys_left,
        kept: None,
    };
    if keep || !outcome.failures(scenario).is_empty() {
        outcome.kept = Some(tmp.keep());
    }
    Ok(outcome)
}
