//! A worker process: loops acquire → enter → hold → one fenced write → exit → release on one
//! lock, recording every step, until its stop file appears. Faults hit it from outside
//! (`SIGKILL`, `SIGSTOP`); it never knows it is being tested.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::events::{instant_ns, Log, What};
use crate::resource::ResourceClient;
use crate::BoxError;

/// How the Redis deployment a worker uses is laid out (the library's [`redfour::Topology`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum WorkerTopology {
    /// One server: `--url` once.
    #[default]
    Standalone,
    /// Redis Sentinel: `--url` of every sentinel, and `--service`.
    Sentinel,
    /// Redis Cluster: `--url` of every seed node.
    Cluster,
}

/// What a worker does, from its command line.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerConfig {
    /// The Redis URL: the server's (standalone), or, repeated, every sentinel's or seed node's.
    #[arg(long = "url", required = true)]
    pub urls: Vec<String>,
    /// How the deployment at `--url` is laid out.
    #[arg(long, value_enum, default_value_t = WorkerTopology::Standalone)]
    pub topology: WorkerTopology,
    /// The name the sentinels monitor the master under (`--topology sentinel`).
    #[arg(long)]
    pub service: Option<String>,
    /// After each acquire, wait until this many replicas acknowledged it
    /// (`ClientBuilder::replica_acks`); off when absent.
    #[arg(long)]
    pub replica_acks: Option<u32>,
    /// How long to wait for the replicas' acknowledgement, ms.
    #[arg(long, default_value_t = 500)]
    pub replica_ack_timeout_ms: u64,
    /// The lock namespace.
    #[arg(long)]
    pub namespace: String,
    /// The lock id.
    #[arg(long)]
    pub lock: String,
    /// The lock's ttl, ms.
    #[arg(long)]
    pub ttl_ms: u64,
    /// How long to stay in the critical section, ms.
    #[arg(long)]
    pub hold_ms: u64,
    /// How long one wait for the lock may take, ms.
    #[arg(long)]
    pub wait_ms: u64,
    /// The resource server, `host:port`.
    #[arg(long)]
    pub resource: String,
    /// The log file to append to.
    #[arg(long)]
    pub log: PathBuf,
    /// This worker's name in the log.
    #[arg(long)]
    pub who: String,
    /// The fair queue's claim window, ms (the library's default when absent).
    #[arg(long)]
    pub claim_window_ms: Option<u64>,
    /// Every Nth round is a one-shot attempt (`try_acquire`) instead of a wait.
    #[arg(long)]
    pub one_shot_every: Option<u64>,
    /// Think time: how long to pause after each release before the next round, ms.
    #[arg(long, default_value_t = 0)]
    pub think_ms: u64,
    /// The worker stops (after its current round) once this file exists.
    #[arg(long)]
    pub stop_file: PathBuf,
}

/// Runs the worker until its stop file appears.
pub fn run(cfg: WorkerConfig) -> Result<(), BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(rounds(cfg))
}

async fn rounds(cfg: WorkerConfig) -> Result<(), BoxError> {
    let log = Log::open(&cfg.log, cfg.who.clone())?;
    let builder = match cfg.topology {
        WorkerTopology::Standalone => {
            let [url] = &cfg.urls[..] else {
                return Err(format!(
                    "the standalone topology takes one --url, not {}",
                    cfg.urls.len()
                )
                .into());
            };
            redfour::Client::builder(url.clone())
        }
        WorkerTopology::Sentinel => {
            let service = cfg
                .service
                .clone()
                .ok_or("--topology sentinel needs --service")?;
            redfour::Client::builder_with_topology(
                redfour::Topology::Sentinel { service },
                cfg.urls.clone(),
            )
        }
        WorkerTopology::Cluster => {
            redfour::Client::builder_with_topology(redfour::Topology::Cluster, cfg.urls.clone())
        }
    };
    let mut builder = builder.namespace(cfg.namespace.clone());
    if let Some(ms) = cfg.claim_window_ms {
        builder = builder.claim_window(Duration::from_millis(ms));
    }
    if let Some(n) = cfg.replica_acks {
        builder = builder.replica_acks(n, Duration::from_millis(cfg.replica_ack_timeout_ms));
    }
    let locks = builder.build()?;
    let mut resource = ResourceClient::connect(&cfg.resource)?;
    let ttl = Duration::from_millis(cfg.ttl_ms);
    let hold = Duration::from_millis(cfg.hold_ms);
    // How often the lease deadline is looked at while holding, to log renewals.
    let look = (ttl / 10).clamp(Duration::from_millis(1), Duration::from_millis(50));

    let mut round = 0u64;
    while !cfg.stop_file.exists() {
        round += 1;
        let one_shot = cfg
            .one_shot_every
            .is_some_and(|n| n > 0 && round.is_multiple_of(n));
        log.record(What::AcquireInvoked)?;
        let builder = locks.lock(cfg.lock.clone()).ttl(ttl).keep_alive(true);
        let acquired = if one_shot {
            match builder.try_acquire().await {
                Ok(Some(guard)) => Ok(guard),
                Ok(None) => {
                    log.record(What::AcquireFailed {
                        reason: "held by someone else".to_owned(),
                    })?;
                    // A little think time before the next round, as a polling client has.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                Err(e) => Err(e),
            }
        } else {
            builder
                .wait(Duration::from_millis(cfg.wait_ms))
                .acquire()
                .await
        };
        let guard = match acquired {
            Ok(guard) => guard,
            // Won too late is known to be released: as good as not acquired.
            Err(e) if e.is_not_acquired() || e.is_validity_expired() => {
                log.record(What::AcquireFailed {
                    reason: e.to_string(),
                })?;
                continue;
            }
            Err(e) => {
                // Anything else may have reached the server: the outcome is unknown.
                log.record(What::AcquireUnknown {
                    reason: e.to_string(),
                })?;
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let index = guard.index();
        let mut deadline = guard.deadline();
        log.record(What::AcquireOk {
            index,
            deadline: instant_ns(deadline),
        })?;
        log.record(What::Enter { index })?;
        let before = resource.read_unfenced()?;

        // The critical section: time passes (faults strike here), the lease is watched.
        let lost = guard.lost();
        tokio::pin!(lost);
        let until = Instant::now() + hold;
        let mut lost_logged = false;
        loop {
            let now = Instant::now();
            if now >= until {
                break;
            }
            tokio::select! {
                why = &mut lost => {
                    log.record(What::LeaseLost { index, reason: why.to_string() })?;
                    lost_logged = true;
                    break;
                }
                _ = tokio::time::sleep(look.min(until - now)) => {}
            }
            if guard.deadline() > deadline {
                deadline = guard.deadline();
                log.record(What::Renewed {
                    index,
                    deadline: instant_ns(deadline),
                })?;
            }
        }

        // A holder frozen through its deadline finds the lease over as soon as it runs again.
        if !lost_logged {
            if let Some(why) = guard.lost_reason() {
                log.record(What::LeaseLost {
                    index,
                    reason: why.to_string(),
                })?;
            }
        }

        // The write a holder makes whatever happened meanwhile, as a process that was paused
        // would: fencing is what must stop it when it is stale.
        let accepted = resource.write(index, &cfg.who)?;
        log.record(What::WriteAnswered { index, accepted })?;
        resource.set_unfenced(before + 1)?;
        log.record(What::Exit { index })?;

        log.record(What::ReleaseInvoked {
            index,
            deadline: instant_ns(guard.deadline()),
        })?;
        let outcome = match guard.release().await {
            Ok(answer) => answer.result.to_string(),
            Err(e) => format!("error: {e}"),
        };
        log.record(What::ReleaseDone { index, outcome })?;
        if cfg.think_ms > 0 {
            tokio::time::sleep(Duration::from_millis(cfg.think_ms)).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        cfg: WorkerConfig,
    }

    const REST: [&str; 16] = [
        "--namespace",
        "ns",
        "--lock",
        "l",
        "--ttl-ms",
        "1",
        "--hold-ms",
        "1",
        "--wait-ms",
        "1",
        "--resource",
        "r",
        "--log",
        "x.log",
        "--who",
        "w1",
    ];

    fn parse(args: &[&str]) -> Result<WorkerConfig, clap::Error> {
        let all = ["worker"]
            .iter()
            .chain(args)
            .chain(REST.iter())
            .chain(["--stop-file", "stop"].iter());
        Cmd::try_parse_from(all).map(|c| c.cfg)
    }

    #[test]
    fn standalone_by_default_and_topologies_with_several_urls() {
        let cfg = parse(&["--url", "redis://a"]).expect("parses");
        assert_eq!(cfg.topology, WorkerTopology::Standalone);
        assert_eq!(cfg.urls, ["redis://a"]);
        assert_eq!(cfg.replica_acks, None);
        assert_eq!(cfg.think_ms, 0);
        let cfg = parse(&[
            "--topology",
            "sentinel",
            "--service",
            "svc",
            "--url",
            "redis://s1",
            "--url",
            "redis://s2",
            "--replica-acks",
            "1",
        ])
        .expect("parses");
        assert_eq!(cfg.topology, WorkerTopology::Sentinel);
        assert_eq!(cfg.urls, ["redis://s1", "redis://s2"]);
        assert_eq!(cfg.service.as_deref(), Some("svc"));
        assert_eq!(cfg.replica_acks, Some(1));
        assert!(parse(&[]).is_err(), "an address is required");
    }
}
