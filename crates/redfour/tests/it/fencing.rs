//! The fencing index: strictly increasing across acquisitions, also after the counter key
//! was lost or reset, and always exact in a JavaScript number (below 2^53).

use std::time::Duration;

use redfour_test::RedisServer;

use crate::common::{client, stored_index, text};

const TTL: Duration = Duration::from_secs(10);
const JS_EXACT: i64 = 1 << 53;

#[tokio::test]
async fn indexes_strictly_increase_across_acquisitions() {
    let server = RedisServer::start();
    let a = client(&server);
    let b = client(&server);

    let mut last = 0;
    for round in 0..40 {
        // Two clients, several locks of one namespace: one sequence of indexes.
        let (locks, id) = match round % 4 {
            0 => (&a, "one"),
            1 => (&b, "two"),
            2 => (&b, "one"),
            _ => (&a, "three"),
        };
        let lock = locks.acquire_lock(id, TTL).await.unwrap();
        assert!(lock.success, "{lock:?}");
        assert!(lock.index > last, "index {} after {last}", lock.index);
        assert!(lock.index < JS_EXACT, "{lock:?}");
        // Stored in plain decimal, in the hash and in the counter, as Node reads them.
        let key = format!("lock:{id}");
        assert_eq!(stored_index(&server, &key), Some(lock.index.to_string()));
        assert_eq!(
            text(&server, &["GET", "lockindex"]),
            Some(lock.index.to_string())
        );
        last = lock.index;
        locks.release_lock(id, lock.index).await.unwrap();
    }

    // The guard API draws from the same sequence.
    let guard = a.lock("one").ttl(TTL).try_acquire().await.unwrap().unwrap();
    assert!(guard.index() > last);
}

#[tokio::test]
async fn index_keeps_increasing_after_the_counter_is_deleted() {
    let server = RedisServer::start();
    let locks = client(&server);

    let first = locks.acquire_lock("x", TTL).await.unwrap();
    locks.release_lock("x", first.index).await.unwrap();
    // As after a restart without persistence: the counter is gone.
    server.cmd(&["DEL", "lockindex"]);

    let second = locks.acquire_lock("x", TTL).await.unwrap();
    assert!(second.success);
    assert!(
        second.index > first.index,
        "{} after {} with the counter lost",
        second.index,
        first.index
    );
    assert!(second.index < JS_EXACT);

    // Losing the counter while the lock is held changes nothing for the holder.
    server.cmd(&["DEL", "lockindex"]);
    let released = locks.release_lock("x", second.index).await.unwrap();
    assert!(released.success, "{released:?}");
    let third = locks.acquire_lock("x", TTL).await.unwrap();
    assert!(third.index > second.index);
}

#[tokio::test]
async fn index_keeps_increasing_after_the_counter_is_reset() {
    let server = RedisServer::start();
    let locks = client(&server);

    let first = locks.acquire_lock("x", TTL).await.unwrap();
    locks.release_lock("x", first.index).await.unwrap();
    server.cmd(&["SET", "lockindex", "5"]);
    let second = locks.acquire_lock("x", TTL).await.unwrap();
    assert!(second.index > first.index, "{second:?} after {first:?}");

    // A negative counter is a number too, and still floored.
    server.cmd(&["SET", "lockindex", "-7"]);
    let third = locks.acquire_lock("y", TTL).await.unwrap();
    assert!(third.index > second.index, "{third:?} after {second:?}");
    assert!(third.index < JS_EXACT);
}

#[tokio::test]
async fn a_counter_ahead_of_the_clock_is_followed() {
    let server = RedisServer::start();
    let locks = client(&server);

    // Written by an old Node client that counted from 1 for years, or moved ahead by hand:
    // the next index continues from it.
    let ahead: i64 = 8_000_000_000_000_000;
    server.cmd(&["SET", "lockindex", &ahead.to_string()]);
    let lock = locks.acquire_lock("x", TTL).await.unwrap();
    assert_eq!(lock.index, ahead + 1);
    let next = locks.acquire_lock("y", TTL).await.unwrap();
    assert_eq!(next.index, ahead + 2);
}
