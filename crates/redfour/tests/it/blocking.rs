//! The synchronous facade against a real Redis.

use std::thread;
use std::time::{Duration, Instant};

use redfour::blocking::Client;
use redfour::ReleaseOutcome;
use redfour_test::{wait_until, RedisServer};

#[test]
fn acquire_wait_release_from_threads() {
    let server = RedisServer::start();
    let locks = Client::new(&server.url()).unwrap();
    let first = locks
        .lock("job")
        .ttl(Duration::from_secs(20))
        .acquire()
        .unwrap();
    assert!(first.acquired_immediately());

    let attempts_before = evalsha_calls(&server);
    let waiter = thread::spawn({
        let locks = locks.clone();
        move || {
            let t = Instant::now();
            let g = locks
                .lock("job")
                .ttl(Duration::from_secs(20))
                .wait(Duration::from_secs(10))
                .acquire()
                .unwrap();
            (
                g.index(),
                g.acquired_immediately(),
                t.elapsed(),
                g.release().unwrap(),
            )
        }
    });
    // Release only once the waiter is subscribed and its first attempt has run on the server.
    assert!(wait_until(Duration::from_secs(5), || {
        evalsha_calls(&server) > attempts_before && server_has_subscriber(&server)
    }));
    let first_index = first.index();
    let released = first.release().unwrap();
    assert_eq!(released.result, ReleaseOutcome::Released);
    let (index, immediate, waited, rel) = waiter.join().unwrap();
    assert!(index > first_index);
    assert!(!immediate);
    // Woken by the release notice, far sooner than the 20 s ttl.
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    assert_eq!(rel.result, ReleaseOutcome::Released);
}

fn evalsha_calls(server: &RedisServer) -> u64 {
    let info = match server.cmd(&["INFO", "commandstats"]) {
        redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        redis::Value::VerbatimString { text, .. } => text,
        other => panic!("unexpected INFO reply {other:?}"),
    };
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn server_has_subscriber(server: &RedisServer) -> bool {
    // By name, or (a fair client) by a pattern matching it alone.
    let by_name = match server.cmd(&["PUBSUB", "NUMSUB", "lock-release"]) {
        redis::Value::Array(items) => matches!(items.get(1), Some(redis::Value::Int(n)) if *n >= 1),
        _ => false,
    };
    by_name || matches!(server.cmd(&["PUBSUB", "NUMPAT"]), redis::Value::Int(n) if n >= 1)
}

#[test]
fn drop_releases_before_returning() {
    let server = RedisServer::start();
    let locks = Client::new(&server.url()).unwrap();
    let guard = locks
        .lock("d")
        .ttl(Duration::from_secs(30))
        .acquire()
        .unwrap();
    assert!(locks.status("d").unwrap().held);
    let listed = locks.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].index, Some(guard.index()));
    drop(guard);
    // No polling needed: the blocking guard releases synchronously in drop.
    assert!(!locks.status("d").unwrap().held);
    assert_eq!(locks.list().unwrap(), Vec::new());
}

#[test]
fn low_level_mapping_and_keep_alive() {
    let server = RedisServer::start();
    let locks = Client::builder(server.url())
        .namespace("sync")
        .build()
        .unwrap();
    let a = locks.acquire_lock("x", Duration::from_millis(300)).unwrap();
    assert!(a.success);
    let b = locks
        .wait_acquire_lock("x", Duration::from_secs(1), Some(Duration::from_millis(50)))
        .unwrap();
    assert!(!b.success);
    assert!(
        locks
            .renew_lock("x", a.index, Duration::from_secs(5))
            .unwrap()
            .success
    );
    assert!(locks.release_lock("x", a.index).unwrap().success);
    // `renew_lock` is no guard's renewal; the wait above left no registration.
    assert_eq!(locks.stats().renewals, 0);
    assert_eq!(locks.stats().waiters, 0);

    let g = locks
        .lock("ka")
        .ttl(Duration::from_millis(300))
        .keep_alive(true)
        .acquire()
        .unwrap();
    // The keep-alive runs on the runtime thread while this thread does nothing async.
    assert_eq!(g.wait_lost(Duration::from_millis(900)), None);
    assert!(locks.status("ka").unwrap().held);
    server.cmd(&["DEL", "sync:ka"]);
    assert_eq!(
        g.wait_lost(Duration::from_secs(2)),
        Some(redfour::LeaseLost::Missing)
    );
    let stats = locks.stats();
    assert!(stats.renewals >= 1, "{stats:?}");
    assert_eq!(stats.leases_lost, 1, "{stats:?}");
    assert_eq!(g.release().unwrap().result, ReleaseOutcome::Expired);
}

/// A blocking call made from async code panics with Tokio's own message (the facade's
/// documented `# Panics`) rather than blocking the runtime's thread.
#[test]
#[should_panic(expected = "Cannot start a runtime from within a runtime")]
fn panics_inside_a_runtime() {
    let server = RedisServer::start();
    let locks = Client::new(&server.url()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let _ = locks.ping();
    });
}

/// The queue settings reach the async client: with `fair(false)` a waiter leaves no queue on
/// the server; with the default it queues (and a claim window out of range is refused).
#[test]
fn fair_queue_settings() {
    let server = RedisServer::start();
    for fair in [false, true] {
        let ns = if fair { "fair" } else { "unfair" };
        let locks = Client::builder(server.url())
            .namespace(ns)
            .fair(fair)
            .claim_window(Duration::from_secs(2))
            .build()
            .unwrap();
        let held = locks.acquire_lock("q", Duration::from_secs(20)).unwrap();
        assert!(held.success);
        let gave_up = locks
            .wait_acquire_lock(
                "q",
                Duration::from_secs(20),
                Some(Duration::from_millis(300)),
            )
            .unwrap();
        assert!(!gave_up.success);
        // The queue is there only while a waiter waits: look while one does.
        let waiter = thread::spawn({
            let locks = locks.clone();
            move || {
                locks.wait_acquire_lock("q", Duration::from_secs(20), Some(Duration::from_secs(10)))
            }
        });
        let queue = format!("{ns}-queue:q");
        let queued = wait_until(Duration::from_secs(3), || {
            matches!(server.cmd(&["EXISTS", &queue]), redis::Value::Int(1))
        });
        assert_eq!(queued, fair, "fair({fair}): queue key present: {queued}");
        locks.release_lock("q", held.index).unwrap();
        let got = waiter.join().unwrap().unwrap();
        assert!(got.success);
        locks.release_lock("q", got.index).unwrap();
    }
    let refused = Client::builder(server.url())
        .claim_window(Duration::from_millis(1))
        .build();
    assert!(refused.unwrap_err().is_invalid_input());
}

/// The blocking facade takes the other topologies too: Redlock over three masters here.
#[test]
fn blocking_redlock_over_three_masters() {
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let locks = Client::redlock(servers.iter().map(RedisServer::url))
        .node_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let guard = locks.lock("sync").acquire().unwrap();
    for server in &servers {
        let stored = server.cmd(&["HGET", "lock:sync", "index"]);
        assert_eq!(
            stored,
            redis::Value::BulkString(guard.index().to_string().into_bytes())
        );
    }
    assert!(locks.lock("sync").try_acquire().unwrap().is_none());
    guard.release().unwrap();
    assert!(!locks.status("sync").unwrap().held);
}
