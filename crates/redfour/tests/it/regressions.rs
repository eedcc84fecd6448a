//! Regression tests for bugs found in review: each failed before its fix.

use std::time::Duration;

use redfour_test::RedisServer;

use crate::common;

/// A malformed queue entry (a fractional ttl, a reserved field in its metadata) is dropped as
/// dead; it must not make a release fail halfway and leave a lock without expiry.
#[tokio::test]
async fn malformed_queue_entries_are_skipped() {
    let server = RedisServer::start();
    let locks = common::builder(&server).fair(true).build().unwrap();
    let far = 99_999_999_999_999_u64;
    for (i, entry) in [
        format!(r#"{{"t":1.5,"e":{far},"c":"chan","m":[]}}"#),
        format!(r#"{{"t":1000,"e":{far},"c":"chan","m":["index","7"]}}"#),
        format!(r#"{{"t":1000,"e":{far},"c":"chan","m":["host"]}}"#),
        format!(r#"{{"t":1000,"e":{far},"c":"","m":[]}}"#),
    ]
    .iter()
    .enumerate()
    {
        let id = format!("bad{i}");
        let held = locks
            .lock(&id)
            .ttl(Duration::from_secs(10))
            .acquire()
            .await
            .unwrap();
        server.cmd(&["RPUSH", &format!("lock-queue:{id}"), "tok"]);
        server.cmd(&["HSET", &format!("lock-waiters:{id}"), "tok", entry]);
        let released = held.release().await.unwrap();
        assert_eq!(
            released.result,
            redfour::ReleaseOutcome::Released,
            "{entry}"
        );
        // Nobody valid waited: the lock is gone, not handed to the bad entry.
        assert!(!common::exists(&server, &format!("lock:{id}")), "{entry}");
        let again = locks.lock(&id).try_acquire().await.unwrap();
        assert!(again.is_some(), "{entry}");
    }
}

/// A lock handed to a queued waiter never carries an attempt id: the clean-up of that
/// waiter's abandoned attempts must not be able to release it.
#[tokio::test]
async fn a_handed_over_lock_has_no_attempt_id() {
    let server = RedisServer::start();
    let holder = common::builder(&server).fair(true).build().unwrap();
    let waiter = common::builder(&server).fair(true).build().unwrap();
    let held = holder.lock("h").acquire().await.unwrap();
    assert!(common::text(&server, &["HGET", "lock:h", "attempt"]).is_some());
    let task = tokio::spawn(async move { waiter.lock("h").acquire().await });
    assert!(
        redfour_test::wait_until_async(common::DEADLINE, || async {
            common::int(&server, &["LLEN", "lock-queue:h"]) == 1
        })
        .await
    );
    held.release().await.unwrap();
    let guard = task.await.unwrap().unwrap();
    assert_eq!(common::text(&server, &["HGET", "lock:h", "attempt"]), None);
    assert_eq!(
        common::stored_index(&server, "lock:h"),
        Some(guard.index().to_string())
    );
    guard.release().await.unwrap();
}

/// A wait too long to represent is a wait forever, not a panic; so is a huge poll interval
/// refused by `build()` rather than panicking later.
#[tokio::test]
async fn huge_durations_do_not_panic() {
    let server = RedisServer::start();
    let locks = common::client(&server);
    let guard = locks.lock("d").wait(Duration::MAX).acquire().await.unwrap();
    guard.release().await.unwrap();
    let got = locks
        .wait_acquire_lock("d", Duration::from_secs(1), Some(Duration::MAX))
        .await
        .unwrap();
    assert!(got.success);
    assert!(common::builder(&server)
        .max_poll_interval(Duration::MAX)
        .build()
        .unwrap_err()
        .is_invalid_input());
}

/// The last handle of a blocking client may be dropped inside an async runtime: the drop does
/// not panic (Tokio forbids dropping a runtime there), and the client's own runtime still
/// shuts down in the background, closing its connection rather than leaking it.
#[cfg(feature = "blocking")]
#[test]
fn blocking_client_dropped_inside_a_runtime() {
    let server = RedisServer::start();
    let client_list = || common::text(&server, &["CLIENT", "LIST"]).unwrap_or_default();
    // The client's connections, told apart from this test's own (each `server.cmd` opens one,
    // whose last command is `CLIENT LIST`) by the last command the client sent.
    let pinged = || {
        client_list()
            .lines()
            .filter(|line| line.contains(" cmd=ping "))
            .count()
    };
    let locks = redfour::blocking::Client::new(&server.url()).unwrap();
    locks.ping().unwrap();
    assert_eq!(pinged(), 1, "{}", client_list());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        drop(locks);
    });
    assert!(
        redfour_test::wait_until(common::DEADLINE, || pinged() == 0),
        "the dropped client's connection is still open:\n{}",
        client_list()
    );
}
