//! Faults: Redis restarted under a waiter and a holder, the subscription killed, the script
//! cache flushed, Redis unreachable; and the check that scripts travel by `EVALSHA`.

use std::net::{Ipv4Addr, TcpListener};
use std::time::{Duration, Instant};

use redfour::{LeaseLost, ReleaseOutcome, RenewOutcome};
use redfour_test::{wait_until_async, RedisServer};

use crate::common::{
    self, client, command_calls, exists, listeners, retry_transient, stored_index, DEADLINE,
};

/// Waits until `waiter` is registered, subscribed, and has made its first attempt (seen as one
/// more `EVALSHA` than `evalsha_before`), so that a fault injected next hits a waiting task.
async fn until_waiting(server: &RedisServer, waiter: &redfour::Client, evalsha_before: u64) {
    let waiting = wait_until_async(DEADLINE, || async {
        waiter.stats().waiters == 1
            && listeners(server, "lock-release") == 1
            && command_calls(server, "evalsha") > evalsha_before
    })
    .await;
    assert!(
        waiting,
        "the waiter never started waiting\n{}",
        server.log()
    );
}

/// Redis dies and comes back empty while a task waits: the waiter reconnects, resubscribes,
/// and takes the lock (which the restart forgot), with an index greater than the lost
/// holder's. A keep-alive holder on the same server learns at its next renewal that its
/// lock is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiter_gets_the_lock_after_a_redis_restart() {
    let mut server = RedisServer::start();
    let holder = client(&server);
    let waiter = client(&server);

    let held = holder
        .acquire_lock("restart", Duration::from_secs(30))
        .await
        .unwrap();
    assert!(held.success);
    let kept = holder
        .lock("kept")
        .ttl(Duration::from_secs(3))
        .keep_alive(true)
        .try_acquire()
        .await
        .unwrap()
        .expect("free lock");
    let lost = kept.lost();

    let before = command_calls(&server, "evalsha");
    let task = tokio::spawn({
        let waiter = waiter.clone();
        async move {
            waiter
                .wait_acquire_lock(
                    "restart",
                    Duration::from_secs(10),
                    Some(Duration::from_secs(20)),
                )
                .await
        }
    });
    until_waiting(&server, &waiter, before).await;

    tokio::task::block_in_place(|| {
        server.stop();
        server.restart();
    });

    let lock = tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .expect("the waiter did not get the lock within 15 s of the restart")
        .unwrap()
        .unwrap();
    assert!(lock.success, "{lock:?}");
    assert!(!lock.immediate, "{lock:?}");
    assert!(
        lock.index > held.index,
        "fencing across a restart: {lock:?} after {held:?}"
    );
    assert_eq!(
        stored_index(&server, "lock:restart"),
        Some(lock.index.to_string())
    );
    let status = waiter.status("restart").await.unwrap();
    assert!(status.held && status.index == lock.index, "{status:?}");

    // The old holder's release no longer touches anything: the lock is the waiter's. (Its
    // connection broke in the restart: the first command on it may report that once.)
    let stale = retry_transient(|| holder.release_lock("restart", held.index)).await;
    assert_eq!(stale.result, ReleaseOutcome::Conflict);
    assert_eq!(stale.index, lock.index);

    let why = tokio::time::timeout(Duration::from_secs(5), lost)
        .await
        .expect("the keep-alive holder never learned that its lock is gone");
    assert_eq!(why, LeaseLost::Missing);
    assert!(kept.is_lost());
    assert!(
        !exists(&server, "lock:kept"),
        "a renewal recreated the lock"
    );

    let released = waiter.release_lock("restart", lock.index).await.unwrap();
    assert_eq!(released.result, ReleaseOutcome::Released);
}

/// The subscription is killed while a task waits; it comes back, and the next release wakes
/// the waiter at once (the poll interval is 10 s, the holder's ttl 30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiter_resubscribes_after_its_subscription_is_killed() {
    let server = RedisServer::start();
    let holder = client(&server);
    let waiter = common::slow_poll_client(&server);

    let held = holder
        .acquire_lock("pubsub", Duration::from_secs(30))
        .await
        .unwrap();
    let before = command_calls(&server, "evalsha");
    let task = tokio::spawn({
        let waiter = waiter.clone();
        async move {
            waiter
                .wait_acquire_lock(
                    "pubsub",
                    Duration::from_secs(10),
                    Some(Duration::from_secs(20)),
                )
                .await
        }
    });
    until_waiting(&server, &waiter, before).await;

    let killed = common::int(&server, &["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert!(killed >= 1, "no pubsub client killed");
    let resubscribed = wait_until_async(DEADLINE, || async {
        listeners(&server, "lock-release") == 1
    })
    .await;
    assert!(resubscribed, "the subscription never came back");

    let released_at = Instant::now();
    holder.release_lock("pubsub", held.index).await.unwrap();
    let lock = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the waiter was not woken after the release")
        .unwrap()
        .unwrap();
    let after = released_at.elapsed();
    assert!(lock.success && !lock.immediate, "{lock:?}");
    assert!(
        after < Duration::from_secs(2),
        "acquired {after:?} after the release"
    );
}

/// The release happens while the subscription is down, so its notice is lost: the waiter
/// still tries again as soon as it is resubscribed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_while_unsubscribed_is_not_lost() {
    let server = RedisServer::start();
    let holder = client(&server);
    let waiter = common::slow_poll_client(&server);

    let held = holder
        .acquire_lock("gap", Duration::from_secs(30))
        .await
        .unwrap();
    let before = command_calls(&server, "evalsha");
    let task = tokio::spawn({
        let waiter = waiter.clone();
        async move {
            waiter
                .wait_acquire_lock("gap", Duration::from_secs(10), None)
                .await
        }
    });
    until_waiting(&server, &waiter, before).await;

    let killed = common::int(&server, &["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert!(killed >= 1);
    let released_at = Instant::now();
    holder.release_lock("gap", held.index).await.unwrap();

    let lock = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the waiter missed a release made while it was unsubscribed")
        .unwrap()
        .unwrap();
    let after = released_at.elapsed();
    assert!(lock.success && !lock.immediate, "{lock:?}");
    assert!(
        after < Duration::from_secs(3),
        "acquired {after:?} after the release"
    );
}

/// `SCRIPT FLUSH` under a live client: every operation recovers from `NOSCRIPT`.
#[tokio::test]
async fn script_flush_is_recovered() {
    let server = RedisServer::start();
    let locks = client(&server);
    let flush = || {
        server.cmd(&["SCRIPT", "FLUSH"]);
    };

    let guard = locks
        .lock("flushed")
        .ttl(Duration::from_secs(10))
        .try_acquire()
        .await
        .unwrap()
        .expect("free lock");
    flush();
    assert_eq!(guard.renew().await.unwrap().result, RenewOutcome::Renewed);
    flush();
    assert!(locks.status("flushed").await.unwrap().held);
    flush();
    assert_eq!(
        guard.release().await.unwrap().result,
        ReleaseOutcome::Released
    );
    flush();
    let lock = locks
        .acquire_lock("flushed", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(lock.success, "{lock:?}");
    flush();
    let released = locks.release_lock("flushed", lock.index).await.unwrap();
    assert_eq!(released.result, ReleaseOutcome::Released);
    assert!(!exists(&server, "lock:flushed"));
}

/// Scripts are sent by hash: after warm-up, each acquire and release is one `EVALSHA`, and
/// the script source never travels with `EVAL`.
#[tokio::test]
async fn scripts_are_sent_with_evalsha() {
    let server = RedisServer::start();
    let locks = client(&server);
    server.cmd(&["CONFIG", "RESETSTAT"]);

    for _ in 0..50 {
        let lock = locks
            .acquire_lock("sha", Duration::from_secs(10))
            .await
            .unwrap();
        assert!(lock.success);
        let released = locks.release_lock("sha", lock.index).await.unwrap();
        assert_eq!(released.result, ReleaseOutcome::Released);
    }

    let evalsha = command_calls(&server, "evalsha");
    let eval = command_calls(&server, "eval");
    let loads = command_calls(&server, "script|load");
    eprintln!("cmdstat_evalsha calls={evalsha}, cmdstat_eval calls={eval}, cmdstat_script|load calls={loads}");
    assert!(evalsha >= 100, "cmdstat_evalsha calls={evalsha}");
    assert!(eval <= 4, "cmdstat_eval calls={eval}");
    assert!(
        loads <= 4,
        "cmdstat_script|load calls={loads}: scripts reloaded every time?"
    );
}

/// Nothing listens: every operation fails as `Unavailable`, within a few seconds.
#[tokio::test]
async fn unreachable_redis_is_unavailable() {
    let port = {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        listener.local_addr().unwrap().port()
    };
    let locks = redfour::Client::builder(format!("redis://127.0.0.1:{port}"))
        .connect_timeout(Duration::from_millis(500))
        .reconnect_retries(1)
        .build()
        .unwrap();

    let within = |started: Instant, what: &str| {
        let took = started.elapsed();
        assert!(took < Duration::from_secs(5), "{what} took {took:?}");
    };

    let started = Instant::now();
    let err = locks
        .acquire_lock("x", Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    within(started, "acquire_lock");

    let started = Instant::now();
    let err = locks.release_lock("x", 1).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    within(started, "release_lock");

    let started = Instant::now();
    let err = locks
        .renew_lock("x", 1, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    within(started, "renew_lock");

    let started = Instant::now();
    let err = locks.status("x").await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    within(started, "status");

    let started = Instant::now();
    assert!(locks.ping().await.unwrap_err().is_unavailable());
    within(started, "ping");

    // A bounded wait keeps retrying until the wait runs out, then reports the fault.
    let started = Instant::now();
    let err = locks
        .lock("x")
        .wait(Duration::from_millis(800))
        .acquire()
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    within(started, "a bounded wait");
    assert_eq!(locks.stats().waiters, 0);
}

/// The URL points at something that is not Redis (here, an HTTP server): the handshake reply
/// does not parse. That is `Unavailable` (no Redis there), not `CorruptData` (no key was read).
#[tokio::test]
async fn a_peer_that_is_not_redis_is_unavailable() {
    use tokio::io::AsyncWriteExt;

    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let http = tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let _ = socket
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    });
    let locks = redfour::Client::builder(format!("redis://127.0.0.1:{port}"))
        .connect_timeout(Duration::from_millis(500))
        .reconnect_retries(1)
        .build()
        .unwrap();

    let started = Instant::now();
    let err = locks
        .acquire_lock("x", Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert_eq!(err.key(), None, "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // Transient, so a bounded wait retries it until the wait runs out.
    let started = Instant::now();
    let err = locks
        .lock("x")
        .wait(Duration::from_millis(500))
        .acquire()
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(450));
    http.abort();
}

/// Found by the chaos suite (`restart-aof`): a release sent just after Redis restarted (with
/// its data kept) failed with a broken connection and left the lock to its ttl. A release is
/// safe to repeat, so it now tries once more on the reconnected connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_right_after_a_restart_releases() {
    let mut server =
        RedisServer::start_with_args(&["--appendonly", "yes", "--appendfsync", "always"]);
    let locks = client(&server);
    for round in 0..3 {
        let guard = locks
            .lock("durable")
            .ttl(Duration::from_secs(60))
            .try_acquire()
            .await
            .unwrap()
            .expect("free lock");
        tokio::task::block_in_place(|| server.restart());
        assert!(
            exists(&server, "lock:durable"),
            "round {round}: the lock did not survive the restart:\n{}",
            server.log()
        );
        let released = guard.release().await;
        assert!(
            matches!(&released, Ok(r) if r.result == ReleaseOutcome::Released),
            "round {round}: {released:?}"
        );
        assert!(!exists(&server, "lock:durable"), "round {round}");
    }
}

/// Replies held up for longer than the ttl (a proxy delays them): the lease counts from when
/// the acquire was sent, so a lock won that late is reported as won too late
/// (`ValidityExpired`, not "held by another": nobody holds it), and released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_won_after_its_ttl_is_not_held_and_is_released() {
    let server = RedisServer::start();
    let proxy = redfour_test::Proxy::start(
        format!("127.0.0.1:{}", server.port())
            .parse()
            .expect("address"),
    )
    .unwrap();
    let slow = redfour::Client::builder(proxy.url()).build().unwrap();
    slow.ping().await.unwrap();

    proxy.set_reply_delay(Duration::from_millis(400));
    let ttl = Duration::from_millis(200);
    let err = slow.acquire_lock("late", ttl).await.unwrap_err();
    assert!(err.is_validity_expired(), "{err:?}");
    let err = slow.lock("late").ttl(ttl).try_acquire().await.unwrap_err();
    assert!(err.is_validity_expired(), "{err:?}");
    // A wait retries until its end, and reports it as the reason.
    let err = slow
        .lock("late")
        .ttl(ttl)
        .wait(Duration::from_millis(900))
        .acquire()
        .await
        .unwrap_err();
    assert!(err.is_validity_expired(), "{err:?}");
    // Released by the library (or expired on the server): nobody holds it, and a client
    // without the delay takes it at once.
    proxy.set_reply_delay(Duration::ZERO);
    let direct = client(&server);
    let taken = direct
        .acquire_lock("late", Duration::from_secs(5))
        .await
        .unwrap();
    assert!(taken.success, "{taken:?}");

    // With a delay shorter than the ttl, the same acquire holds the lock as usual.
    direct.release_lock("late", taken.index).await.unwrap();
    proxy.set_reply_delay(Duration::from_millis(50));
    let held = slow
        .acquire_lock("late", Duration::from_secs(2))
        .await
        .unwrap();
    assert!(held.success, "{held:?}");
}

/// `stats().subscription_reconnects` counts the waiters' subscription coming back after a
/// restart of Redis, and not its first subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_a_subscription_reconnect() {
    let mut server = RedisServer::start();
    let holder = client(&server);
    let waiter = client(&server);
    let held = holder
        .acquire_lock("resubscribed", Duration::from_secs(30))
        .await
        .unwrap();
    assert!(held.success);
    let before = command_calls(&server, "evalsha");
    let task = tokio::spawn({
        let waiter = waiter.clone();
        async move {
            waiter
                .lock("resubscribed")
                .wait(Duration::from_secs(30))
                .acquire()
                .await
        }
    });
    until_waiting(&server, &waiter, before).await;
    assert_eq!(waiter.stats().subscription_reconnects, 0);

    tokio::task::block_in_place(|| {
        server.stop();
        server.restart();
    });
    assert!(
        wait_until_async(DEADLINE, || async {
            waiter.stats().subscription_reconnects == 1 && listeners(&server, "lock-release") == 1
        })
        .await,
        "no reconnect counted: {:?}\n{}",
        waiter.stats(),
        server.log()
    );
    // The restart forgot the lock: the waiter takes it.
    let guard = tokio::time::timeout(DEADLINE, task)
        .await
        .expect("the waiter got the lock")
        .unwrap()
        .unwrap();
    guard.release().await.unwrap();
    assert_eq!(
        holder.stats().subscription_reconnects,
        0,
        "the holder never subscribed"
    );
}

/// `stats().renewal_failures` counts a renewal that got no answer; `renewals` does not move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_a_failed_renewal() {
    let mut server = RedisServer::start();
    let locks = client(&server);
    let guard = locks
        .lock("unrenewed")
        .ttl(Duration::from_secs(30))
        .try_acquire()
        .await
        .unwrap()
        .expect("free lock");
    tokio::task::block_in_place(|| server.stop());
    let failed = guard.renew().await;
    assert!(failed.is_err(), "{failed:?}");
    let stats = locks.stats();
    assert_eq!(
        (stats.renewal_failures, stats.renewals),
        (1, 0),
        "{stats:?}"
    );
    assert!(!guard.is_lost(), "a failure alone does not lose the lease");
    drop(guard);
}

/// `stats().background_cleanups_pending` counts a dropped guard's release while it cannot
/// reach Redis (a proxy holds every byte), and returns to zero once it is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_a_pending_background_release() {
    let server = RedisServer::start();
    let proxy = redfour_test::Proxy::start(
        format!("127.0.0.1:{}", server.port())
            .parse()
            .expect("address"),
    )
    .unwrap();
    let locks = redfour::Client::builder(proxy.url())
        .fair(common::fair_mode())
        .build()
        .unwrap();
    let guard = locks
        .lock("dropped")
        .ttl(Duration::from_secs(30))
        .try_acquire()
        .await
        .unwrap()
        .expect("free lock");
    assert_eq!(locks.stats().background_cleanups_pending, 0);

    proxy.set_black_hole(true);
    drop(guard);
    assert_eq!(locks.stats().background_cleanups_pending, 1);
    proxy.set_black_hole(false);
    assert!(
        wait_until_async(DEADLINE, || async {
            locks.stats().background_cleanups_pending == 0
        })
        .await,
        "the background release never finished: {:?}",
        locks.stats()
    );
    assert!(!exists(&server, "lock:dropped"));
}
