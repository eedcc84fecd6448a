//! Every scenario of the suite for a few seconds each, with a fixed seed, against real
//! redis-server processes and worker processes. One at a time: they share two cores, and their
//! bounds are about timing.
//!
//! `REDFOUR_CHAOS_SECONDS` sets the fault time per scenario (default 10).
//!
//! `mixed_fleet` needs `node` and `npm ci` in `interop/`; without them it prints why and
//! passes, unless `REDFOUR_REQUIRE_NODE` is set (CI sets it).

use std::io::Write as _;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use redfour_chaos::scenario::{self, Outcome, Scenario};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn run(name: &str) -> (Scenario, Outcome) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scenario = scenario::find(name).expect("a scenario of that name");
    let seconds = std::env::var("REDFOUR_CHAOS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let outcome = scenario::run(
        &scenario,
        Path::new(env!("CARGO_BIN_EXE_redfour-chaos")),
        Duration::from_secs(seconds),
        1,
        false,
    )
    .expect("the run itself failed");
    println!("{name}: {outcome}");
    let failures = outcome.failures(&scenario);
    assert!(
        failures.is_empty(),
        "{name} broke its promises:\n{}\n{outcome}",
        failures.join("\n")
    );
    (scenario, outcome)
}

/// At least `at_least` faults of `kind` were injected.
fn assert_faults(o: &Outcome, kind: &str, at_least: usize) {
    assert!(
        o.report.faults.get(kind).is_some_and(|n| *n >= at_least),
        "{o}"
    );
}

/// The work went on after the last topology change, and no fenced update was lost.
fn assert_went_on(o: &Outcome) {
    assert!(
        o.acquired_after_faults >= scenario::AFTER_MOVE_WRITES,
        "{o}"
    );
    assert_eq!(
        o.lost_updates, 0,
        "exclusion held, so no update is lost: {o}"
    );
}

#[test]
fn contention() {
    let (_, o) = run("contention");
    assert!(o.report.acquisitions >= 50, "{o}");
    assert_eq!(o.report.writes_rejected, 0, "{o}");
    assert_eq!(
        o.lost_updates, 0,
        "exclusion held, so no update is lost: {o}"
    );
    assert_eq!(
        o.report.releases.get("released"),
        Some(&o.report.acquisitions),
        "{o}"
    );
}

#[test]
fn freeze_holder() {
    let (_, o) = run("freeze-holder");
    assert_faults(&o, "stop", 2);
    // The frozen holder wakes after someone else wrote: fencing stops its write, its lease is
    // reported lost, its release finds someone else's lock.
    assert!(o.report.writes_rejected >= 1, "{o}");
    assert!(o.report.leases_lost >= 1, "{o}");
    assert!(
        o.report.releases.get("conflict").is_some_and(|n| *n >= 1),
        "{o}"
    );
    // What fencing protects against: the unfenced counter lost the frozen holders' updates.
    assert!(o.lost_updates >= 1, "{o}");
}

#[test]
fn kill_holder() {
    let (_, o) = run("kill-holder");
    assert_faults(&o, "kill", 2);
    assert!(o.report.acquisitions >= 20, "{o}");
}

#[test]
fn restart_volatile() {
    let (_, o) = run("restart-volatile");
    assert_faults(&o, "restart", 2);
    // Holders learn at their next renewal that the restart forgot their lock.
    assert!(o.report.leases_lost >= 1, "{o}");
    // F and R held (checked by `run`); V may not: the checker reports such overlaps.
    println!(
        "exclusion violations the checker found: {}",
        o.report.of('V').count()
    );
}

#[test]
fn restart_aof() {
    let (_, o) = run("restart-aof");
    assert_faults(&o, "restart", 2);
    // With every write on disk before the reply, the locks survive: no lease is lost.
    assert_eq!(o.report.leases_lost, 0, "{o}");
    assert_eq!(o.report.of('V').count(), 0, "{o}");
    // A release that met the restart gets through on the reconnected connection.
    assert_eq!(o.report.releases.get("error"), None, "{o}");
}

#[test]
fn pause_clients() {
    let (_, o) = run("pause-clients");
    assert_faults(&o, "client-pause", 2);
    // Attempts caught by a pause time out and say so; none of them made a second holder (V,
    // checked by `run`) or left the lock taken past its ttl (A).
    assert!(o.report.acquire_unknown >= 1, "{o}");
}

#[test]
fn kill_waiter() {
    let (_, o) = run("kill-waiter");
    assert_faults(&o, "kill", 2);
    assert!(o.report.acquisitions >= 50, "{o}");
}

#[test]
fn kill_subscriptions() {
    let (_, o) = run("kill-subscriptions");
    assert_faults(&o, "client-kill-pubsub", 4);
    assert!(o.report.acquisitions >= 50, "{o}");
}

#[test]
fn delay_replies() {
    let (_, o) = run("delay-replies");
    assert_faults(&o, "delay-replies", 2);
    // Exclusion held although replies came after the ttl (checked by `run`), and the work
    // went on between the delays.
    assert!(o.report.acquisitions >= 10, "{o}");
    // No lock was handed to a worker with its lease already over (the library releases a lock
    // won too late and answers as if it were held).
    assert_eq!(o.report.acquired_expired, 0, "{o}");
}

#[test]
fn freeze_redis() {
    let (_, o) = run("freeze-redis");
    assert_faults(&o, "stop", 2);
    assert!(o.report.acquisitions >= 10, "{o}");
}

#[test]
fn black_hole() {
    let (_, o) = run("black-hole");
    assert_faults(&o, "black-hole", 1);
    assert!(o.report.acquisitions >= 10, "{o}");
}

#[test]
fn drop_connections() {
    let (_, o) = run("drop-connections");
    assert_faults(&o, "drop-connections", 4);
    assert!(o.report.acquisitions >= 50, "{o}");
}

#[test]
fn script_flush() {
    let (_, o) = run("script-flush");
    assert_faults(&o, "script-flush", 8);
    assert!(o.report.acquisitions >= 100, "{o}");
    assert_eq!(o.report.releases.get("error"), None, "{o}");
}

#[test]
fn mixed() {
    let (_, o) = run("mixed");
    let faults: usize = o.report.faults.values().sum();
    assert!(faults >= 4, "{o}");
    assert!(o.report.acquisitions >= 10, "{o}");
}

/// Needs the `redfour` binary, which a workspace build makes next to this crate's; without it
/// the test is skipped, unless `REDFOUR_REQUIRE_CLI` is set (`scripts/test` sets it).
#[test]
fn kill_cli() {
    let bin = Path::new(env!("CARGO_BIN_EXE_redfour-chaos"));
    if scenario::cli_bin(bin).is_err() && std::env::var_os("REDFOUR_REQUIRE_CLI").is_none() {
        eprintln!(
            "skipped: no redfour CLI next to {} (cargo build -p redfour-cli)",
            bin.display()
        );
        return;
    }
    let (_, o) = run("kill-cli");
    assert_faults(&o, "kill-cli", 2);
    assert!(o.report.acquisitions >= 10, "{o}");
}

/// `SENTINEL FAILOVER` while a worker holds the lock, workers on the Sentinel topology with
/// `replica_acks(1, 500 ms)`. The first failover starts within 1.5 s and takes about 11 s to
/// settle (the old master is a replica again), so a 10 s run has one; the run then goes on
/// until the workers got through more critical sections.
#[test]
fn sentinel_failover() {
    let (_, o) = run("sentinel-failover");
    assert_faults(&o, "failover-done", 1);
    // Exclusion and fencing held (V and F, checked by `run`), and the work went on on the new
    // master.
    assert_went_on(&o);
}

/// The lock's hash slot moved between the three masters of a cluster, again and again, while
/// the workers contend (each migration in steps: `ASK` and `TRYAGAIN` mid-way).
#[test]
fn cluster_reshard() {
    let (_, o) = run("cluster-reshard");
    assert_faults(&o, "migrate-done", 3);
    assert!(o.report.acquisitions >= 50, "{o}");
    assert_went_on(&o);
}

/// Rust and Node redfour workers (3 + 3) on one lock, the holder (whichever side it is on) and
/// now and then a waiter frozen or killed, aiming at the sides in turn.
#[test]
fn mixed_fleet() {
    if let Err(why) = redfour_chaos::node::find() {
        assert!(
            !redfour_chaos::node::required(),
            "{} is set, but {why}",
            redfour_chaos::node::REQUIRE_NODE
        );
        // Straight to the process's stderr: the harness captures the output of passing tests,
        // and a skip nobody sees is worse than no test.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED mixed_fleet: {why}. Set {}=1 to make this a failure.",
            redfour_chaos::node::REQUIRE_NODE
        );
        return;
    }
    let (s, o) = run("mixed-fleet");
    // Faults hit both sides (the steps aim at the sides in turn), mostly holders.
    assert!(o.rust.faults >= 1 && o.node.faults >= 1, "{o}");
    assert!(o.rust.holders_hit + o.node.holders_hit >= 2, "{o}");
    assert_faults(&o, "stop", 1);
    assert_faults(&o, "kill", 1);
    assert!(o.report.writes_accepted >= 50, "{o}");
    // Both sides got the lock: each at least half its share of the workers (a quarter of the
    // holdings for 3 + 3), the bound of the library's mixed-fleet interop tests. Rust had
    // 42-52 % of the holdings in 24 runs of 10 s (debug build), Node the rest. The workers'
    // think time (20 ms) keeps a Node worker from taking back the lock it has just released
    // ahead of every waiter (RELIABILITY.md, finding 7): without it Rust had 3-53 %.
    let total = o.rust.acquisitions + o.node.acquisitions;
    for (side, got, workers) in [
        ("Rust", o.rust.acquisitions, s.workers),
        ("Node", o.node.acquisitions, s.node_workers),
    ] {
        let share = total * workers / (s.workers + s.node_workers);
        assert!(
            got * 2 >= share && got > 0,
            "{side} workers got {got} of {total} acquisitions, under half their share ({share}): {o}"
        );
    }
    // The outsiders' turns: after at least 1 in 20 releases by a Rust holder, a Node worker
    // takes the lock next (9-51 % of them in the runs measured). Without the turns (the library
    // before bcf07fe) Node waiters got it only when a fault or an expiry left it free: after
    // 0-3 % of the Rust releases, and this test failed, on this bound or the one above.
    assert!(
        o.node.took_over * 20 >= o.rust.released,
        "Node waiters took the lock after {} of {} releases by Rust workers: {o}",
        o.node.took_over,
        o.rust.released
    );
}
