//! Foreign or corrupt data at the lock's keys gives typed errors and is never touched; invalid
//! input is refused before anything reaches Redis.

use std::time::Duration;

use redfour::{Client, Error, ReleaseOutcome, RenewOutcome, MAX_ID_LEN, MAX_INDEX, MAX_TTL};
use redfour_test::RedisServer;

use crate::common::{self, client, dbsize, exists, pttl, strings, text};

const TTL: Duration = Duration::from_secs(10);

fn assert_corrupt(what: &str, result: Result<impl std::fmt::Debug, Error>, key: &str) {
    match result {
        Err(e) => {
            assert!(e.is_corrupt_data(), "{what}: {e:?}");
            assert_eq!(e.key(), Some(key), "{what}: {e:?}");
        }
        Ok(v) => panic!("{what}: expected a CorruptData error, got {v:?}"),
    }
}

/// Every operation on the lock key `lock:x`, each expected to answer CorruptData.
async fn every_operation_is_corrupt(locks: &Client) {
    let key = "lock:x";
    assert_corrupt("acquire_lock", locks.acquire_lock("x", TTL).await, key);
    assert_corrupt(
        "wait_acquire_lock",
        locks
            .wait_acquire_lock("x", TTL, Some(Duration::from_millis(300)))
            .await,
        key,
    );
    assert_corrupt(
        "lock().acquire()",
        locks
            .lock("x")
            .wait(Duration::from_millis(300))
            .acquire()
            .await,
        key,
    );
    assert_corrupt(
        "lock().try_acquire()",
        locks.lock("x").try_acquire().await,
        key,
    );
    assert_corrupt("release_lock", locks.release_lock("x", 5).await, key);
    assert_corrupt("renew_lock", locks.renew_lock("x", 5, TTL).await, key);
    assert_corrupt("status", locks.status("x").await, key);
}

/// Stored `index` values and the one verdict every operation gives them: held by that index, or
/// corrupt (`None`). The grammar is `parse_index` in outcome.rs and `redfour_is_index` in
/// lock.lua: plain decimal, 1 to 2^53 − 1. `status` reads the index in Rust, the other
/// operations in Lua, so this table holds both to the same answer.
const STORED_INDEXES: &[(&str, Option<i64>)] = &[
    ("1", Some(1)),
    ("5", Some(5)),
    ("1000", Some(1000)),
    // What the fencing floor (the server clock in µs) hands out, Node's writes included.
    ("1794130000000000", Some(1_794_130_000_000_000)),
    ("9007199254740991", Some(MAX_INDEX)),
    // Numbers to Lua's `tonumber` (and to Node's release), but not an index as written.
    ("1.5", None),
    ("1.0", None),
    ("0x10", None),
    ("1e3", None),
    ("5e0", None),
    (" 5", None),
    ("5 ", None),
    ("5\n", None),
    ("+5", None),
    ("05", None),
    ("inf", None),
    ("nan", None),
    // Out of range: an index is positive and exact in JavaScript.
    ("0", None),
    ("-5", None),
    ("9007199254740992", None),
    ("99999999999999999999", None),
    ("9223372036854775807", None),
    ("-9223372036854775808", None),
    // Not numbers at all.
    ("", None),
    ("abc", None),
    ("\u{0665}", None),
];

/// What the server holds at `key`, to the byte and to the millisecond of its expiry.
fn snapshot(server: &RedisServer, key: &str) -> (redis::Value, redis::Value) {
    (
        server.cmd(&["DUMP", key]),
        server.cmd(&["PEXPIRETIME", key]),
    )
}

/// Writes a lock hash with `index` as a hand (or a buggy client) would, expiring in an hour.
fn write_lock(server: &RedisServer, index: &str) {
    server.cmd(&["DEL", "lock:x"]);
    server.cmd(&["HSET", "lock:x", "index", index, "host", "elsewhere"]);
    server.cmd(&["PEXPIRE", "lock:x", "3600000"]);
}

/// Every operation on a lock hash whose index is `stored` gives the verdict of
/// [`STORED_INDEXES`]: corrupt data everywhere, untouched, or held by that index everywhere.
async fn one_verdict(server: &RedisServer, locks: &Client, stored: &str, verdict: Option<i64>) {
    let what = |op: &str| format!("index {stored:?}, {op}");
    write_lock(server, stored);
    let before = snapshot(server, "lock:x");
    let short = Duration::from_millis(50);
    let answer = |op: &str, e: Error| -> ! { panic!("{}: {e:?}", what(op)) };
    let Some(index) = verdict else {
        every_operation_is_corrupt(locks).await;
        // Whatever index the caller has: the ones Lua's `tonumber` would read there too.
        for caller in [1, 5, 16, 1000, MAX_INDEX] {
            assert_corrupt(
                &what("release"),
                locks.release_lock("x", caller).await,
                "lock:x",
            );
            assert_corrupt(
                &what("renew"),
                locks.renew_lock("x", caller, TTL).await,
                "lock:x",
            );
        }
        assert_eq!(snapshot(server, "lock:x"), before, "{}", what("changed"));
        assert_eq!(dbsize(server), 1, "{}", what("other keys written"));
        assert_eq!(locks.stats().waiters, 0);
        return;
    };
    let status = locks
        .status("x")
        .await
        .unwrap_or_else(|e| answer("status", e));
    assert!(status.held, "{}: {status:?}", what("status"));
    assert_eq!(status.index, index, "{}", what("status"));
    assert!(status.ttl.is_some_and(|t| !t.is_zero()), "{status:?}");
    let got = locks
        .acquire_lock("x", TTL)
        .await
        .unwrap_or_else(|e| answer("acquire", e));
    assert!(
        !got.success && !got.ttl.is_zero(),
        "{}: {got:?}",
        what("acquire")
    );
    let got = locks
        .wait_acquire_lock("x", TTL, Some(short))
        .await
        .unwrap_or_else(|e| answer("wait", e));
    assert!(!got.success, "{}: {got:?}", what("wait"));
    match locks.lock("x").wait(short).acquire().await {
        Err(e) => assert!(e.is_not_acquired(), "{}: {e:?}", what("lock().acquire()")),
        Ok(guard) => panic!("{}: {guard:?}", what("lock().acquire()")),
    }
    let tried = locks.lock("x").try_acquire().await;
    assert!(
        matches!(tried, Ok(None)),
        "{}: {tried:?}",
        what("try_acquire")
    );
    let other = if index > 1 { index - 1 } else { 2 };
    let renewed = locks
        .renew_lock("x", other, TTL)
        .await
        .unwrap_or_else(|e| answer("renew", e));
    assert_eq!(renewed.result, RenewOutcome::Conflict, "{}", what("renew"));
    let released = locks
        .release_lock("x", other)
        .await
        .unwrap_or_else(|e| answer("release", e));
    assert_eq!(
        released.result,
        ReleaseOutcome::Conflict,
        "{}",
        what("release")
    );
    assert_eq!(released.index, index, "{}", what("release"));
    assert_eq!(snapshot(server, "lock:x"), before, "{}", what("changed"));
    let renewed = locks
        .renew_lock("x", index, TTL)
        .await
        .unwrap_or_else(|e| answer("renew", e));
    assert_eq!(renewed.result, RenewOutcome::Renewed, "{}", what("renew"));
    let released = locks
        .release_lock("x", index)
        .await
        .unwrap_or_else(|e| answer("release", e));
    assert_eq!(
        released.result,
        ReleaseOutcome::Released,
        "{}",
        what("release")
    );
    assert!(!exists(server, "lock:x"));
}

/// Issue 10, item 8: hand-edited indexes got different answers from different operations
/// (`1e3` held by 1000 for status, held by nobody knows whom for acquire; ` 5` released by 5
/// though status called it corrupt; `0` and `-5` held by an index nobody can pass).
#[tokio::test]
async fn every_stored_index_gets_one_verdict_from_every_operation() {
    let server = RedisServer::start();
    for fair in [false, true] {
        let locks = common::builder(&server).fair(fair).build().unwrap();
        for (stored, verdict) in STORED_INDEXES {
            one_verdict(&server, &locks, stored, *verdict).await;
        }
    }
}

#[tokio::test]
async fn lock_key_holding_a_string() {
    let server = RedisServer::start();
    let locks = client(&server);
    server.cmd(&["SET", "lock:x", "foreign"]);

    every_operation_is_corrupt(&locks).await;

    assert_eq!(
        text(&server, &["GET", "lock:x"]).as_deref(),
        Some("foreign")
    );
    assert_eq!(pttl(&server, "lock:x"), -1, "an expiry was added");
    assert!(!exists(&server, "lockindex"), "the counter was touched");
    assert_eq!(locks.stats().waiters, 0);
}

#[tokio::test]
async fn lock_key_holding_a_list() {
    let server = RedisServer::start();
    let locks = client(&server);
    server.cmd(&["RPUSH", "lock:x", "a", "b"]);

    every_operation_is_corrupt(&locks).await;

    assert_eq!(
        strings(&server, &["LRANGE", "lock:x", "0", "-1"]),
        ["a", "b"]
    );
    assert_eq!(pttl(&server, "lock:x"), -1);
    assert!(!exists(&server, "lockindex"));
}

#[tokio::test]
async fn counter_that_is_not_a_number() {
    let server = RedisServer::start();
    let locks = client(&server);
    // With an expiry of its own, which must survive too.
    server.cmd(&["SET", "lockindex", "notanumber", "PX", "600000"]);

    // Each names the counter, not the lock, as the key at fault.
    let err = locks.acquire_lock("x", TTL).await.unwrap_err();
    assert!(err.is_corrupt_data(), "{err:?}");
    assert_eq!(err.key(), Some("lockindex"), "{err:?}");
    let err = locks.lock("x").try_acquire().await.unwrap_err();
    assert!(err.is_corrupt_data(), "{err:?}");
    assert_eq!(err.key(), Some("lockindex"), "{err:?}");
    let err = locks
        .lock("x")
        .wait(Duration::from_millis(300))
        .acquire()
        .await
        .unwrap_err();
    assert!(err.is_corrupt_data(), "{err:?}");
    assert_eq!(err.key(), Some("lockindex"), "{err:?}");

    assert_eq!(
        text(&server, &["GET", "lockindex"]).as_deref(),
        Some("notanumber")
    );
    let left = pttl(&server, "lockindex");
    assert!(
        left > 500_000 && left <= 600_000,
        "the counter's expiry changed: {left}"
    );
    assert!(!exists(&server, "lock:x"), "a lock was created anyway");
}

#[tokio::test]
async fn counter_that_is_too_long_a_number() {
    let server = RedisServer::start();
    let locks = client(&server);
    let digits = "1".repeat(40);
    server.cmd(&["SET", "lockindex", &digits]);

    let err = locks.acquire_lock("x", TTL).await.unwrap_err();
    assert!(err.is_corrupt_data(), "{err:?}");
    assert_eq!(
        text(&server, &["GET", "lockindex"]).as_deref(),
        Some(digits.as_str())
    );
    assert_eq!(pttl(&server, "lockindex"), -1, "an expiry was added");
    assert!(!exists(&server, "lock:x"));
}

/// A counter past 2^53 − 1 is an integer too large, not "not an integer" (issue 10).
#[tokio::test]
async fn counter_beyond_the_largest_exact_index_says_so() {
    let server = RedisServer::start();
    let locks = client(&server);
    for counter in [
        "9223372036854775807",
        "99999999999999999999",
        &"9".repeat(400),
    ] {
        server.cmd(&["SET", "lockindex", counter]);
        let err = locks.acquire_lock("x", TTL).await.unwrap_err();
        assert!(err.is_corrupt_data(), "{err:?}");
        assert_eq!(err.key(), Some("lockindex"), "{err:?}");
        assert!(err.to_string().contains("2^53-1"), "{counter}: {err}");
        assert!(
            !err.to_string().contains("not an integer"),
            "{counter}: {err}"
        );
        assert_eq!(
            text(&server, &["GET", "lockindex"]).as_deref(),
            Some(counter)
        );
        assert!(!exists(&server, "lock:x"));
    }
}

#[tokio::test]
async fn counter_that_is_a_hash() {
    let server = RedisServer::start();
    let locks = client(&server);
    server.cmd(&["HSET", "lockindex", "f", "v"]);

    let err = locks.acquire_lock("x", TTL).await.unwrap_err();
    assert!(err.is_corrupt_data(), "{err:?}");
    assert_eq!(err.key(), Some("lockindex"), "{err:?}");
    let err = locks
        .wait_acquire_lock("x", TTL, Some(Duration::from_millis(300)))
        .await
        .unwrap_err();
    assert!(err.is_corrupt_data(), "{err:?}");
    assert_eq!(err.key(), Some("lockindex"), "{err:?}");

    assert_eq!(strings(&server, &["HGETALL", "lockindex"]), ["f", "v"]);
    assert!(!exists(&server, "lock:x"));
}

#[tokio::test]
async fn counter_at_the_largest_exact_index() {
    let server = RedisServer::start();
    let locks = client(&server);
    // One below 2^53 − 1: the next index is the last one JavaScript holds exactly.
    server.cmd(&["SET", "lockindex", "9007199254740990"]);
    let last = locks.acquire_lock("x", TTL).await.unwrap();
    assert!(last.success);
    assert_eq!(last.index, (1 << 53) - 1);

    // Beyond it, refuse rather than hand out an index Node cannot read exactly.
    let err = locks.acquire_lock("y", TTL).await.unwrap_err();
    assert!(err.is_corrupt_data(), "{err:?}");
    assert!(!exists(&server, "lock:y"));
    assert_eq!(
        text(&server, &["GET", "lockindex"]).as_deref(),
        Some("9007199254740991")
    );
}

/// Someone wrote a lock without expiry: it would never go away, so every operation refuses it
/// instead of reporting it held (or waiting for it) forever; and since status calls it
/// corrupt, a release or renewal by its very index leaves it alone too (issue 10: release
/// used to delete it).
#[tokio::test]
async fn lock_hash_without_expiry() {
    let server = RedisServer::start();
    let locks = client(&server);
    server.cmd(&["HSET", "lock:x", "index", "5"]);

    every_operation_is_corrupt(&locks).await;
    assert_corrupt(
        "wait_acquire_lock, forever",
        locks.wait_acquire_lock("x", TTL, None).await,
        "lock:x",
    );
    for caller in [4, 5, 6] {
        assert_corrupt("release", locks.release_lock("x", caller).await, "lock:x");
        assert_corrupt("renew", locks.renew_lock("x", caller, TTL).await, "lock:x");
    }

    assert_eq!(strings(&server, &["HGETALL", "lock:x"]), ["index", "5"]);
    assert_eq!(pttl(&server, "lock:x"), -1);
    assert!(!exists(&server, "lockindex"));
}

#[tokio::test]
async fn lock_hash_without_index_field() {
    let server = RedisServer::start();
    let locks = client(&server);
    server.cmd(&["HSET", "lock:x", "owner", "someone"]);
    server.cmd(&["PEXPIRE", "lock:x", "60000"]);

    assert_corrupt("release_lock", locks.release_lock("x", 5).await, "lock:x");
    assert_corrupt("renew_lock", locks.renew_lock("x", 5, TTL).await, "lock:x");
    assert_corrupt("status", locks.status("x").await, "lock:x");

    assert_eq!(
        strings(&server, &["HGETALL", "lock:x"]),
        ["owner", "someone"]
    );
    let left = pttl(&server, "lock:x");
    assert!(left > 50_000 && left <= 60_000, "expiry changed: {left}");
}

#[tokio::test]
async fn lock_hash_with_a_non_numeric_index() {
    let server = RedisServer::start();
    let locks = client(&server);
    server.cmd(&["HSET", "lock:x", "index", "abc"]);
    server.cmd(&["PEXPIRE", "lock:x", "60000"]);

    assert_corrupt("release_lock", locks.release_lock("x", 5).await, "lock:x");
    assert_corrupt("renew_lock", locks.renew_lock("x", 5, TTL).await, "lock:x");
    assert_corrupt("status", locks.status("x").await, "lock:x");
    assert_eq!(
        text(&server, &["HGET", "lock:x", "index"]).as_deref(),
        Some("abc")
    );
}

#[tokio::test]
async fn invalid_input_is_refused_before_reaching_redis() {
    let server = RedisServer::start();
    let locks = client(&server);
    let too_long = "x".repeat(MAX_ID_LEN + 1);
    let beyond_max = MAX_TTL + Duration::from_millis(1);

    let mut errors: Vec<(&str, Error)> = Vec::new();
    let mut push = |what, result: Result<(), Error>| match result {
        Err(e) => errors.push((what, e)),
        Ok(()) => panic!("{what}: accepted"),
    };
    push("empty id", locks.acquire_lock("", TTL).await.map(drop));
    push(
        "id too long",
        locks.acquire_lock(&too_long, TTL).await.map(drop),
    );
    push(
        "ttl 0",
        locks.acquire_lock("x", Duration::ZERO).await.map(drop),
    );
    push(
        "ttl under 1 ms",
        locks
            .acquire_lock("x", Duration::from_micros(500))
            .await
            .map(drop),
    );
    push(
        "ttl beyond MAX_TTL",
        locks.acquire_lock("x", beyond_max).await.map(drop),
    );
    push(
        "wait: empty id",
        locks.wait_acquire_lock("", TTL, Some(TTL)).await.map(drop),
    );
    push(
        "wait: ttl 0",
        locks
            .wait_acquire_lock("x", Duration::ZERO, Some(TTL))
            .await
            .map(drop),
    );
    push(
        "release: index 0",
        locks.release_lock("x", 0).await.map(drop),
    );
    push(
        "release: index -1",
        locks.release_lock("x", -1).await.map(drop),
    );
    push(
        "release: empty id",
        locks.release_lock("", 5).await.map(drop),
    );
    push(
        "renew: index 0",
        locks.renew_lock("x", 0, TTL).await.map(drop),
    );
    push(
        "renew: ttl 0",
        locks.renew_lock("x", 5, Duration::ZERO).await.map(drop),
    );
    push(
        "renew: ttl beyond MAX_TTL",
        locks.renew_lock("x", 5, beyond_max).await.map(drop),
    );
    push("status: empty id", locks.status("").await.map(drop));
    push(
        "lock(\"\").acquire()",
        locks.lock("").acquire().await.map(drop),
    );
    push(
        "lock().ttl(0).try_acquire()",
        locks
            .lock("x")
            .ttl(Duration::ZERO)
            .try_acquire()
            .await
            .map(drop),
    );
    push(
        "lock().ttl(beyond).acquire()",
        locks.lock("x").ttl(beyond_max).acquire().await.map(drop),
    );

    for (what, e) in &errors {
        assert!(e.is_invalid_input(), "{what}: {e:?}");
    }
    assert_eq!(dbsize(&server), 0, "something reached Redis");
    assert_eq!(locks.stats().waiters, 0);

    // The bounds themselves are accepted.
    let longest = locks.acquire_lock("x", MAX_TTL).await.unwrap();
    assert!(longest.success, "{longest:?}");
    assert!(pttl(&server, "lock:x") > 1_000_000_000);
    // 1 ms is valid input; whether the lock is still held when the reply comes is up to the
    // round trip (a reply after the whole ttl is reported as won too late, and released).
    match locks.acquire_lock("y", Duration::from_millis(1)).await {
        Ok(shortest) => assert!(shortest.success, "{shortest:?}"),
        Err(e) => assert!(e.is_validity_expired(), "{e:?}"),
    }
    let longest_id = "y".repeat(MAX_ID_LEN);
    assert!(locks.acquire_lock(&longest_id, TTL).await.unwrap().success);
}

/// Foreign data at the fair queue's keys fails a release before anything is written: the
/// lock, the queue and the foreign key stay as they were (found in review: the lock used to be
/// deleted and the head waiter dropped before the failing read).
#[tokio::test]
async fn foreign_queue_entries_fail_a_release_before_any_write() {
    let server = RedisServer::start();
    let locks = common::builder(&server).fair(true).build().unwrap();
    let held = locks.acquire_lock("x", TTL).await.unwrap();
    assert!(held.success);
    server.cmd(&["RPUSH", "lock-queue:x", "someone"]);
    server.cmd(&["SET", "lock-waiters:x", "foreign"]);

    let result = locks.release_lock("x", held.index).await;
    assert!(result.is_err(), "{result:?}");
    assert_eq!(
        text(&server, &["HGET", "lock:x", "index"]),
        Some(held.index.to_string()),
        "the lock was deleted"
    );
    assert_eq!(
        strings(&server, &["LRANGE", "lock-queue:x", "0", "-1"]),
        ["someone"]
    );
    assert_eq!(
        text(&server, &["GET", "lock-waiters:x"]).as_deref(),
        Some("foreign")
    );
}

/// A release that hands the lock over takes the next index from the counter: a corrupt counter
/// fails it before any write, and the error names the counter, as an acquire's does.
#[tokio::test]
async fn a_handoff_meeting_a_corrupt_counter_names_the_counter() {
    let server = RedisServer::start();
    let locks = common::builder(&server).fair(true).build().unwrap();
    let held = locks.acquire_lock("x", TTL).await.unwrap();
    assert!(held.success);
    let waiter = common::builder(&server).fair(true).build().unwrap();
    let waiting = tokio::spawn(async move {
        waiter
            .lock("x")
            .wait(Duration::from_secs(30))
            .acquire()
            .await
    });
    assert!(
        redfour_test::wait_until_async(Duration::from_secs(10), || async {
            strings(&server, &["LRANGE", "lock-queue:x", "0", "-1"]).len() == 1
        })
        .await,
        "the waiter never queued"
    );
    server.cmd(&["SET", "lockindex", "notanumber", "PX", "600000"]);

    assert_corrupt(
        "release_lock handing over",
        locks.release_lock("x", held.index).await,
        "lockindex",
    );
    assert_eq!(
        text(&server, &["HGET", "lock:x", "index"]),
        Some(held.index.to_string()),
        "the lock changed hands"
    );
    assert_eq!(
        strings(&server, &["LRANGE", "lock-queue:x", "0", "-1"]).len(),
        1,
        "the queue changed"
    );
    assert_eq!(
        text(&server, &["GET", "lockindex"]).as_deref(),
        Some("notanumber")
    );
    waiting.abort();
}
