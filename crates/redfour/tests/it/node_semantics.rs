//! The cases of Node redfour's own test suite, through the Node-shaped API
//! (`acquire_lock`, `wait_acquire_lock`, `release_lock`, `renew_lock`).

use std::time::{Duration, Instant};

use redfour::{ReleaseOutcome, RenewOutcome};
use redfour_test::RedisServer;

use crate::common::{self, client, exists, pttl, stored_index};

#[tokio::test]
async fn release_only_with_the_valid_index() {
    let server = RedisServer::start();
    let locks = client(&server);

    let lock = locks
        .acquire_lock("testLock", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(lock.success, "{lock:?}");
    assert!(lock.immediate, "{lock:?}");
    assert!(lock.index > 0, "{lock:?}");
    assert_eq!(lock.id, "testLock");
    assert_eq!(lock.ttl, Duration::from_secs(10));
    assert_eq!(
        stored_index(&server, "lock:testLock"),
        Some(lock.index.to_string())
    );

    // Someone else trying meanwhile learns the holder's remaining ttl.
    let other = locks
        .acquire_lock("testLock", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(!other.success, "{other:?}");
    assert_eq!(other.index, -1);
    assert!(
        other.ttl > Duration::from_secs(9) && other.ttl <= Duration::from_secs(10),
        "{other:?}"
    );

    // A wrong index is a conflict, and the lock stays held.
    let wrong = locks
        .release_lock("testLock", lock.index + 1)
        .await
        .unwrap();
    assert!(!wrong.success, "{wrong:?}");
    assert_eq!(wrong.result, ReleaseOutcome::Conflict);
    assert_eq!(
        wrong.index, lock.index,
        "a conflict names the holder's index"
    );
    assert!(exists(&server, "lock:testLock"));
    assert!(
        !locks
            .acquire_lock("testLock", Duration::from_secs(10))
            .await
            .unwrap()
            .success
    );

    // The right index releases it.
    let released = locks.release_lock("testLock", lock.index).await.unwrap();
    assert!(released.success, "{released:?}");
    assert_eq!(released.result, ReleaseOutcome::Released);
    assert_eq!(released.result.as_str(), "released");
    assert_eq!(released.index, lock.index);
    assert!(!exists(&server, "lock:testLock"));

    // Releasing again finds nothing: `expired`, which still counts as success.
    let again = locks.release_lock("testLock", lock.index).await.unwrap();
    assert!(again.success, "{again:?}");
    assert_eq!(again.result, ReleaseOutcome::Expired);
    assert_eq!(again.index, -1);

    // And the lock is free for the next holder, with a greater index.
    let next = locks
        .acquire_lock("testLock", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(next.success && next.index > lock.index, "{next:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_acquires_after_a_release() {
    let server = RedisServer::start();
    let holder = client(&server);
    // Only the release notice can explain a wake-up right after the release.
    let waiter = common::slow_poll_client(&server);

    let held = holder
        .acquire_lock("testLock", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(held.success, "{held:?}");

    let releaser = tokio::spawn({
        let holder = holder.clone();
        async move {
            // The test is about a release that comes later: let time pass.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let released_at = Instant::now();
            let r = holder.release_lock("testLock", held.index).await;
            (released_at, r)
        }
    });

    let started = Instant::now();
    let lock = waiter
        .wait_acquire_lock(
            "testLock",
            Duration::from_secs(10),
            Some(Duration::from_secs(5)),
        )
        .await
        .unwrap();
    let took = started.elapsed();
    let (released_at, release) = releaser.await.unwrap();
    assert_eq!(release.unwrap().result, ReleaseOutcome::Released);

    assert!(lock.success, "{lock:?}");
    assert!(!lock.immediate, "{lock:?}");
    assert!(lock.index > held.index, "{lock:?} after {held:?}");
    assert!(took >= Duration::from_millis(1400), "took {took:?}");
    let after_release = released_at.elapsed();
    assert!(
        after_release < Duration::from_secs(2),
        "acquired {after_release:?} after the release: the notice did not wake the waiter"
    );
}

#[tokio::test]
async fn wait_gives_up_when_the_wait_runs_out() {
    let server = RedisServer::start();
    let locks = client(&server);

    let held = locks
        .acquire_lock("testLock", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(held.success);

    let started = Instant::now();
    let lock = locks
        .wait_acquire_lock(
            "testLock",
            Duration::from_secs(10),
            Some(Duration::from_millis(500)),
        )
        .await
        .unwrap();
    let took = started.elapsed();

    assert!(!lock.success, "{lock:?}");
    assert!(!lock.immediate, "{lock:?}");
    assert_eq!(lock.index, -1);
    // The holder's remaining ttl, as the server saw it at the last attempt: after the wait,
    // and before now.
    let remaining_now = Duration::from_millis(pttl(&server, "lock:testLock") as u64);
    assert!(
        lock.ttl <= Duration::from_millis(10_000 - 490) && lock.ttl >= remaining_now,
        "{lock:?}, remaining now {remaining_now:?}"
    );
    assert!(
        took >= Duration::from_millis(490) && took < Duration::from_millis(1200),
        "took {took:?}"
    );
    // The holder is untouched.
    assert_eq!(
        stored_index(&server, "lock:testLock"),
        Some(held.index.to_string())
    );

    // The same through the guard API: a typed NotAcquired error carrying the holder's ttl.
    let err = locks
        .lock("testLock")
        .wait(Duration::from_millis(200))
        .acquire()
        .await
        .unwrap_err();
    assert!(err.is_not_acquired(), "{err:?}");
    assert_eq!(err.key(), Some("lock:testLock"));
    let holder_ttl = err.holder_ttl().expect("holder ttl");
    assert!(holder_ttl > Duration::from_secs(8), "{err:?}");
}

#[tokio::test]
async fn immediate_acquisition_through_wait() {
    let server = RedisServer::start();
    let locks = client(&server);

    let lock = locks
        .wait_acquire_lock(
            "testLock",
            Duration::from_secs(10),
            Some(Duration::from_secs(5)),
        )
        .await
        .unwrap();
    assert!(lock.success, "{lock:?}");
    assert!(lock.immediate, "{lock:?}");
    assert!(lock.index > 0);
    assert_eq!(lock.ttl, Duration::from_secs(10));

    // Waiting forever (None, or zero as in Node) also returns at once on a free lock.
    for wait in [None, Some(Duration::ZERO)] {
        let id = format!("free-{}", wait.is_some());
        let lock = locks
            .wait_acquire_lock(&id, Duration::from_secs(10), wait)
            .await
            .unwrap();
        assert!(lock.success && lock.immediate, "{lock:?}");
    }
}

#[tokio::test]
async fn construction_from_an_existing_redis_client() {
    let server = RedisServer::start();
    let redis_client = redfour::redis::Client::open(server.url()).unwrap();
    let locks = redfour::Client::from_redis_client(redis_client)
        .build()
        .unwrap();
    assert_eq!(locks.namespace(), "lock");
    assert!(
        locks.address().contains(&server.port().to_string()),
        "{}",
        locks.address()
    );

    let lock = locks
        .acquire_lock("testLock", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(lock.success, "{lock:?}");
    assert!(exists(&server, "lock:testLock"));
    let waited = locks
        .wait_acquire_lock(
            "testLock",
            Duration::from_secs(10),
            Some(Duration::from_millis(100)),
        )
        .await
        .unwrap();
    assert!(!waited.success);
    let released = locks.release_lock("testLock", lock.index).await.unwrap();
    assert_eq!(released.result, ReleaseOutcome::Released);
    assert!(!exists(&server, "lock:testLock"));
}

#[tokio::test]
async fn renew_with_valid_invalid_and_missing_lock() {
    let server = RedisServer::start();
    let locks = client(&server);

    let lock = locks
        .acquire_lock("testLock", Duration::from_secs(1))
        .await
        .unwrap();
    assert!(lock.success);
    let before = pttl(&server, "lock:testLock");
    assert!(before > 0 && before <= 1000, "PTTL {before}");

    // Valid index: the expiry is reset, here upwards.
    let renewed = locks
        .renew_lock("testLock", lock.index, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(renewed.success, "{renewed:?}");
    assert_eq!(renewed.result, RenewOutcome::Renewed);
    assert_eq!(renewed.result.as_str(), "renewed");
    assert_eq!(renewed.index, lock.index);
    let after = pttl(&server, "lock:testLock");
    assert!(after > 9000 && after <= 10_000, "PTTL {after}");

    // Invalid index: conflict, and the expiry is untouched.
    let conflict = locks
        .renew_lock("testLock", lock.index + 1, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(!conflict.success, "{conflict:?}");
    assert_eq!(conflict.result, RenewOutcome::Conflict);
    assert_eq!(conflict.index, -1);
    assert!(pttl(&server, "lock:testLock") <= 10_000);

    // Missing lock.
    locks.release_lock("testLock", lock.index).await.unwrap();
    let missing = locks
        .renew_lock("testLock", lock.index, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(!missing.success, "{missing:?}");
    assert_eq!(missing.result, RenewOutcome::Missing);
    assert_eq!(missing.index, -1);
    assert!(
        !exists(&server, "lock:testLock"),
        "renew must not recreate a lock"
    );
}
