//! The `redfour-chaos` command: run the fault-injection scenarios, or be one of their workers.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use redfour_chaos::{scenario, worker, BoxError};

#[derive(Parser)]
#[command(name = "redfour-chaos", about = "Fault-injection suite for redfour")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Lists the scenarios.
    List,
    /// Runs one scenario and checks its history; exit status 1 when it broke a promise.
    Run {
        /// The scenario's name (see `list`).
        name: String,
        /// How long to inject faults.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// The seed of the fault schedule.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Keep the logs even when nothing failed.
        #[arg(long)]
        keep: bool,
    },
    /// Runs every scenario in turn with random seeds until the time is up.
    Soak {
        /// The total time.
        #[arg(long, default_value_t = 600)]
        seconds: u64,
        /// Seconds per run.
        #[arg(long, default_value_t = 30)]
        run_seconds: u64,
    },
    /// Re-checks the logs a kept run left in a directory.
    Check {
        /// The directory.
        dir: PathBuf,
        /// The lock's ttl in that run, ms.
        #[arg(long)]
        ttl_ms: u64,
        /// The longest the lock may stay free while someone waits, ms.
        #[arg(long, default_value_t = 1000)]
        bound_ms: u64,
    },
    /// One worker process (started by `run`).
    Worker(Box<worker::WorkerConfig>),
}

fn run_one(name: &str, seconds: u64, seed: u64, keep: bool) -> Result<bool, BoxError> {
    let scenario = scenario::find(name).ok_or_else(|| format!("no scenario `{name}`"))?;
    let me = std::env::current_exe()?;
    println!(
        "{} (seed {seed}, {seconds} s): {}",
        scenario.name, scenario.about
    );
    let outcome = scenario::run(&scenario, &me, Duration::from_secs(seconds), seed, keep)?;
    print!("{outcome}");
    let failures = outcome.failures(&scenario);
    for f in &failures {
        println!("FAILED {f}");
    }
    Ok(failures.is_empty())
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Cmd::List => {
            for s in scenario::all() {
                println!("{:<20} {}", s.name, s.about);
            }
            Ok(true)
        }
        Cmd::Run {
            name,
            seconds,
            seed,
            keep,
        } => run_one(&name, seconds, seed, keep),
        Cmd::Soak {
            seconds,
            run_seconds,
        } => {
            let end = std::time::Instant::now() + Duration::from_secs(seconds);
            let mut ok = true;
            let mut seed = std::process::id() as u64;
            // A mixed fleet needs Node: without it, its scenarios are left out, once said why.
            let node_missing = redfour_chaos::node::find().err();
            if let Some(why) = &node_missing {
                println!("skipping the scenarios with Node workers: {why}");
            }
            'soak: loop {
                for s in scenario::all() {
                    if std::time::Instant::now() >= end {
                        break 'soak;
                    }
                    if s.node_workers > 0 && node_missing.is_some() {
                        continue;
                    }
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    match run_one(s.name, run_seconds, seed % 1_000_000, false) {
                        Ok(passed) => ok &= passed,
                        Err(e) => {
                            eprintln!("{}: {e}", s.name);
                            ok = false;
                        }
                    }
                }
            }
            Ok(ok)
        }
        Cmd::Check {
            dir,
            ttl_ms,
            bound_ms,
        } => redfour_chaos::events::read_dir(&dir)
            .map_err(BoxError::from)
            .map(|events| {
                let report = redfour_chaos::check::check(
                    &events,
                    redfour_chaos::check::Bounds {
                        ttl_ns: ttl_ms * 1_000_000,
                        free_while_waiting_ns: bound_ms * 1_000_000,
                    },
                );
                print!("{report}");
                report.violations.is_empty()
            }),
        Cmd::Worker(cfg) => worker::run(*cfg).map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("redfour-chaos: {e}");
            ExitCode::from(2)
        }
    }
}
