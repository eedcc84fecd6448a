//! Waiting for a lock: exclusion under contention, wake-ups without a release, and cancelled
//! waits and acquisitions that must leave nothing behind.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redfour::ReleaseOutcome;
use redfour_test::{wait_until_async, RedisServer};
use redis::AsyncCommands;

use crate::common::{self, client, command_calls, exists, DEADLINE};

/// 16 tasks on 4 clients each add 1 to a Redis key 200 times, with a non-atomic
/// read-modify-write (GET, yield, SET) inside the lock: any lapse of exclusion loses an
/// update, and the in-process occupancy check catches two holders at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_tasks_increment_exactly() {
    const TASKS: usize = 16;
    const ROUNDS: usize = 200;
    let server = RedisServer::start();
    let clients: Vec<redfour::Client> = (0..4).map(|_| client(&server)).collect();
    let data = redis::Client::open(server.url()).unwrap();
    let inside = Arc::new(AtomicUsize::new(0));

    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let locks = clients[t % clients.len()].clone();
        let mut conn = data.get_multiplexed_async_connection().await.unwrap();
        let inside = inside.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..ROUNDS {
                // Half the tasks use the guard API, half the Node-shaped one.
                let guard;
                let mut index = None;
                if t % 2 == 0 {
                    guard = Some(
                        locks
                            .lock("counter")
                            .ttl(Duration::from_secs(10))
                            .wait(Duration::from_secs(30))
                            .acquire()
                            .await
                            .expect("acquire"),
                    );
                } else {
                    guard = None;
                    let r = locks
                        .wait_acquire_lock(
                            "counter",
                            Duration::from_secs(10),
                            Some(Duration::from_secs(30)),
                        )
                        .await
                        .expect("wait_acquire_lock");
                    assert!(r.success, "{r:?}");
                    index = Some(r.index);
                }

                assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                let value: Option<i64> = conn.get("value").await.expect("GET");
                tokio::task::yield_now().await;
                let () = conn
                    .set("value", value.unwrap_or(0) + 1)
                    .await
                    .expect("SET");
                inside.fetch_sub(1, Ordering::SeqCst);

                let released = match (guard, index) {
                    (Some(guard), _) => guard.release().await.expect("release").result,
                    (None, Some(index)) => {
                        locks
                            .release_lock("counter", index)
                            .await
                            .expect("release_lock")
                            .result
                    }
                    (None, None) => unreachable!(),
                };
                assert_eq!(released, ReleaseOutcome::Released);
            }
        }));
    }
    let started = Instant::now();
    for task in tasks {
        task.await.unwrap();
    }
    eprintln!(
        "{} locked increments in {:?}",
        TASKS * ROUNDS,
        started.elapsed()
    );

    let value = common::text(&server, &["GET", "value"]);
    assert_eq!(value.as_deref(), Some("3200"), "{}", server.log());
    assert!(!exists(&server, "lock:counter"));
    for locks in &clients {
        assert_eq!(locks.stats().waiters, 0);
    }
}

/// A holder that never releases: the waiter wakes at the holder's expiry by its fallback timer,
/// although its poll interval is 10 s.
#[tokio::test]
async fn waiter_is_woken_by_the_holders_expiry() {
    let server = RedisServer::start();
    let holder = client(&server);
    let waiter = common::slow_poll_client(&server);

    let held = holder
        .acquire_lock("abandoned", Duration::from_millis(800))
        .await
        .unwrap();
    assert!(held.success);

    let started = Instant::now();
    let lock = waiter
        .wait_acquire_lock(
            "abandoned",
            Duration::from_secs(5),
            Some(Duration::from_secs(8)),
        )
        .await
        .unwrap();
    let took = started.elapsed();

    assert!(lock.success, "{lock:?}");
    assert!(!lock.immediate, "{lock:?}");
    assert!(lock.index > held.index);
    assert!(
        took >= Duration::from_millis(650),
        "acquired after {took:?}, before the holder's expiry"
    );
    assert!(
        took < Duration::from_millis(800 + 700),
        "acquired {took:?} after a holder with ttl 800 ms: the expiry timer did not fire"
    );
}

/// 50 waiters on a held lock, cancelled by abort or by a timeout, leave no registration
/// behind, and none of them takes the lock once it is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_waits_leave_no_registrations_and_no_locks() {
    let server = RedisServer::start();
    let holder = client(&server);
    let waiters = client(&server);

    let held = holder
        .acquire_lock("busy", Duration::from_secs(30))
        .await
        .unwrap();
    assert!(held.success);

    let mut tasks = Vec::new();
    for i in 0..50 {
        let waiters = waiters.clone();
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                waiters
                    .wait_acquire_lock("busy", Duration::from_secs(30), None)
                    .await
                    .map(|r| r.index)
            } else {
                waiters
                    .lock("busy")
                    .ttl(Duration::from_secs(30))
                    .acquire()
                    .await
                    .map(|g| g.index())
            }
        }));
    }
    assert!(
        wait_until_async(DEADLINE, || async { waiters.stats().waiters == 50 }).await,
        "registrations: {}",
        waiters.stats().waiters
    );
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        let err = task.await.expect_err("the wait cannot have succeeded");
        assert!(err.is_cancelled(), "{err:?}");
    }
    assert_eq!(waiters.stats().waiters, 0);

    // Waits dropped by a timeout, in this task.
    for _ in 0..10 {
        let wait = waiters.lock("busy").ttl(Duration::from_secs(30)).acquire();
        let timed_out = tokio::time::timeout(Duration::from_millis(20), wait).await;
        assert!(timed_out.is_err(), "{timed_out:?}");
        assert_eq!(waiters.stats().waiters, 0);
    }

    let released = holder.release_lock("busy", held.index).await.unwrap();
    assert_eq!(released.result, ReleaseOutcome::Released);
    // Nobody is left to take the lock: it stays free. (A forgotten waiter would take it at
    // once, woken by the release notice.)
    let taken = wait_until_async(Duration::from_millis(500), || async {
        exists(&server, "lock:busy")
    })
    .await;
    assert!(!taken, "a cancelled waiter took the lock");
}

/// Acquisitions dropped mid-flight, many times, against a free lock with a long ttl: every
/// attempt that won on the server after its caller was gone is released in the background.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_acquires_do_not_leave_the_lock_held() {
    let server = RedisServer::start();
    let locks = client(&server);
    locks.ping().await.unwrap();

    let mut completed_wins = 0u64;
    for i in 0..200u64 {
        // 0 to 900 µs: from "sent but never read" to "answer arrived, not read yet".
        let budget = Duration::from_micros((i % 10) * 100);
        let attempt = locks.acquire_lock("flaky", Duration::from_secs(30));
        match tokio::time::timeout(budget, attempt).await {
            Ok(Ok(r)) if r.success => {
                completed_wins += 1;
                let released = locks.release_lock("flaky", r.index).await.unwrap();
                assert_eq!(released.result, ReleaseOutcome::Released);
            }
            Ok(Ok(_held_by_a_dropped_attempt)) => {}
            Ok(Err(e)) => panic!("{e:?}"),
            Err(_elapsed) => {}
        }
    }

    // Every win (one HSET each) is released (one PUBLISH each), and the lock is free.
    let all_released = wait_until_async(DEADLINE, || async {
        !exists(&server, "lock:flaky")
            && command_calls(&server, "hset") == command_calls(&server, "publish")
    })
    .await;
    let wins = command_calls(&server, "hset");
    let releases = command_calls(&server, "publish");
    eprintln!("{wins} wins ({completed_wins} read by their caller), {releases} releases");
    assert!(
        all_released,
        "wins {wins}, releases {releases}, lock key present: {}",
        exists(&server, "lock:flaky")
    );
    assert!(
        wins > completed_wins,
        "no attempt won after its caller was gone ({wins} wins, all read): the test proved nothing"
    );
    assert_eq!(locks.stats().waiters, 0);
}

/// What a waiter holds while it waits: the future of its acquire (plus a registration of a
/// few hundred bytes in the client). Thousands of waiters in one process must fit in 2 KiB
/// each (the bench's `waiters` scenario measures the whole); an acquire attempt's own state
/// (some 2.5 KB) is boxed while it runs, so it is not part of these futures. The bounds leave
/// room for other compilers; a future that again holds an attempt inline exceeds them.
#[test]
fn the_futures_a_waiter_holds_stay_small() {
    // Building a client opens no connection, and futures do nothing until polled.
    let client = redfour::Client::new("redis://127.0.0.1:1/").unwrap();
    let ttl = Duration::from_secs(1);
    let sizes = [
        (
            "wait_acquire_lock",
            std::mem::size_of_val(&client.wait_acquire_lock("x", ttl, None)),
            1024,
        ),
        (
            "lock().acquire()",
            std::mem::size_of_val(&client.lock("x").acquire()),
            1024,
        ),
        (
            "acquire_lock",
            std::mem::size_of_val(&client.acquire_lock("x", ttl)),
            512,
        ),
        (
            "release_lock",
            std::mem::size_of_val(&client.release_lock("x", 1)),
            512,
        ),
    ];
    for (what, size, bound) in sizes {
        assert!(
            size <= bound,
            "the future of {what} is {size} bytes (at most {bound})"
        );
    }
}
