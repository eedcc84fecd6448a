//! Property tests against a real Redis: ids and namespaces of any content are data, never code
//! (quotes, Lua syntax, newlines, braces, control characters, 100 kB), and ttls are accepted
//! exactly in their documented range. Each property runs its cases on one server of its own.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use redfour::{ReleaseOutcome, RenewOutcome, MAX_INDEX, MAX_TTL};
use redfour_test::RedisServer;

use crate::common::{self, dbsize, int};

/// Text that would break a script if it were spliced into Lua or a command line, mixed with
/// arbitrary Unicode.
fn hostile_text() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "'",
        "\"",
        "\\",
        "]]",
        "[[",
        "--",
        "\n",
        "\r\n",
        "\0",
        "{",
        "}",
        "{tag}",
        ":",
        "*",
        "end",
        "redis.call('FLUSHALL')",
        "'; return 1 --",
        "%s",
        "%d",
        "${ns}",
        " ",
        "\u{1F512}",
        "index",
        "-queue:",
        "-release",
    ]);
    prop::collection::vec(
        prop_oneof![pieces.prop_map(str::to_owned), any::<String>()],
        1..6,
    )
    .prop_map(|parts| parts.concat())
    .prop_filter("non-empty", |s| !s.is_empty())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Keys of the server whose names are exactly `name` (the kit's commands take text, so the
/// check goes through `EXISTS`, which takes the name as one argument).
fn exists(server: &RedisServer, name: &str) -> bool {
    int(server, &["EXISTS", name]) == 1
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(ProptestConfig {
        cases,
        ..ProptestConfig::default()
    })
}

/// Any id and namespace: acquire, status, renew, release work on exactly the keys
/// `{ns}:{id}` and `{ns}index`, and nothing else is created or removed.
#[test]
fn any_id_and_namespace_is_data() {
    let server = RedisServer::start();
    let rt = runtime();
    let result = runner(48).run(&(hostile_text(), hostile_text()), |(ns, id)| {
        // A fresh data set per case: with names like these, one case's lock key can be
        // another's counter key (`a:` + `index` = `a` + `:index`), which is Node's layout.
        server.cmd(&["FLUSHALL"]);
        server.cmd(&["SET", "bystander", "untouched"]);
        let locks = redfour::Client::builder(server.url())
            .namespace(ns.clone())
            .build()
            .unwrap();
        let key = format!("{ns}:{id}");
        rt.block_on(async {
            let got = locks
                .acquire_lock(&id, Duration::from_secs(30))
                .await
                .unwrap();
            prop_assert!(got.success, "{got:?}");
            prop_assert!(exists(&server, &key), "no key {key:?}");
            let status = locks.status(&id).await.unwrap();
            prop_assert!(status.held && status.index == got.index, "{status:?}");
            let again = locks
                .acquire_lock(&id, Duration::from_secs(30))
                .await
                .unwrap();
            prop_assert!(!again.success);
            let renewed = locks
                .renew_lock(&id, got.index, Duration::from_secs(60))
                .await
                .unwrap();
            prop_assert!(renewed.success, "{renewed:?}");
            let released = locks.release_lock(&id, got.index).await.unwrap();
            prop_assert_eq!(released.result, ReleaseOutcome::Released);
            prop_assert!(!exists(&server, &key));
            Ok(())
        })?;
        // The bystander and the counter, nothing else.
        prop_assert_eq!(dbsize(&server), 2, "keys besides the counter");
        let counter = format!("{ns}index");
        prop_assert!(exists(&server, &counter), "no counter {counter:?}");
        let bystander = common::text(&server, &["GET", "bystander"]);
        prop_assert_eq!(bystander.as_deref(), Some("untouched"));
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}\n{}", server.log());
    }
}

/// A waiter with any id is woken by the release notice (the key travels in the notice) and
/// gets the lock.
#[test]
fn waiters_with_any_id_are_woken() {
    let server = RedisServer::start();
    let rt = runtime();
    let locks = redfour::Client::builder(server.url())
        .max_poll_interval(Duration::from_secs(60))
        .build()
        .unwrap();
    let result = runner(24).run(&hostile_text(), |id| {
        rt.block_on(async {
            let held = locks
                .acquire_lock(&id, Duration::from_secs(60))
                .await
                .unwrap();
            prop_assert!(held.success);
            let waiter = tokio::spawn({
                let locks = locks.clone();
                let id = id.clone();
                async move {
                    locks
                        .lock(id)
                        .ttl(Duration::from_secs(30))
                        .wait(Duration::from_secs(20))
                        .acquire()
                        .await
                }
            });
            let registered = redfour_test::wait_until_async(Duration::from_secs(5), || {
                let n = locks.stats().waiters;
                async move { n == 1 }
            })
            .await;
            prop_assert!(registered);
            locks.release_lock(&id, held.index).await.unwrap();
            let guard = tokio::time::timeout(Duration::from_secs(10), waiter)
                .await
                .expect("not woken within 10 s (the poll interval is 60 s)")
                .unwrap()
                .unwrap();
            prop_assert!(guard.index() > held.index);
            guard.release().await.unwrap();
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("{e}\n{}", server.log());
    }
}

/// Every ttl from 1 ms to `MAX_TTL` is accepted and given back as asked; beyond it, the
/// request is refused before it reaches Redis.
#[test]
fn ttls_in_range_are_accepted_and_beyond_refused() {
    let server = RedisServer::start();
    let rt = runtime();
    let locks = redfour::Client::builder(server.url()).build().unwrap();
    let max = MAX_TTL.as_millis() as u64;
    let result = runner(64).run(&(1u64..=max, 1u64..1_000_000), |(ms, over)| {
        rt.block_on(async {
            let got = locks
                .acquire_lock("t", Duration::from_millis(ms))
                .await
                .unwrap();
            prop_assert!(got.success, "{got:?}");
            prop_assert_eq!(got.ttl, Duration::from_millis(ms));
            locks.release_lock("t", got.index).await.unwrap();
            let before = dbsize(&server);
            let err = locks
                .acquire_lock("t", MAX_TTL + Duration::from_millis(over))
                .await
                .unwrap_err();
            prop_assert!(err.is_invalid_input(), "{err:?}");
            prop_assert_eq!(dbsize(&server), before);
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("{e}\n{}", server.log());
    }
}

/// What a stored index should mean, written independently of the library's parsers: the
/// decimal text of an integer from 1 to `MAX_INDEX`, and nothing else.
fn expected_index(stored: &str) -> Option<i64> {
    let n: i64 = stored.parse().ok()?;
    ((1..=MAX_INDEX).contains(&n) && n.to_string() == stored).then_some(n)
}

/// Index texts: numbers in and out of range, and what Lua's `tonumber` or a hand might make of
/// them (signs, blanks, exponents, fractions, hex, leading zeros).
fn index_text() -> impl Strategy<Value = String> {
    prop_oneof![
        (1..=MAX_INDEX).prop_map(|n| n.to_string()),
        (MAX_INDEX - 3..=MAX_INDEX + 3).prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        "[-+ 0-9eEx.]{0,22}",
        "[0 ]{0,2}[1-9][0-9]{0,3}(e[0-9])?[ ]?",
    ]
}

/// Whatever a lock hash's index holds, `status` (parsed in Rust) and acquire, release and renew
/// (parsed in Lua) agree: held by the same index, or corrupt and left byte for byte as it was.
#[test]
fn a_stored_index_means_the_same_to_every_operation() {
    let server = RedisServer::start();
    let rt = runtime();
    let locks = common::builder(&server).build().unwrap();
    let result = runner(96).run(&index_text(), |stored| {
        server.cmd(&["DEL", "lock:x"]);
        server.cmd(&["HSET", "lock:x", "index", &stored]);
        server.cmd(&["PEXPIRE", "lock:x", "3600000"]);
        let before = (
            server.cmd(&["DUMP", "lock:x"]),
            server.cmd(&["PEXPIRETIME", "lock:x"]),
        );
        let ttl = Duration::from_secs(10);
        rt.block_on(async {
            let status = locks.status("x").await;
            let acquired = locks.acquire_lock("x", ttl).await;
            // An index other than the holder's, and one that Lua's `tonumber` might read there.
            let released = locks.release_lock("x", 5).await;
            let renewed = locks.renew_lock("x", 5, ttl).await;
            match expected_index(&stored) {
                None => {
                    for (what, corrupt) in [
                        ("status", status.err().is_some_and(|e| e.is_corrupt_data())),
                        (
                            "acquire",
                            acquired.err().is_some_and(|e| e.is_corrupt_data()),
                        ),
                        (
                            "release",
                            released.err().is_some_and(|e| e.is_corrupt_data()),
                        ),
                        ("renew", renewed.err().is_some_and(|e| e.is_corrupt_data())),
                    ] {
                        prop_assert!(corrupt, "{stored:?}: {what} is not CorruptData");
                    }
                    let after = (
                        server.cmd(&["DUMP", "lock:x"]),
                        server.cmd(&["PEXPIRETIME", "lock:x"]),
                    );
                    prop_assert_eq!(after, before, "{:?} changed", stored);
                }
                Some(index) => {
                    let status = status.unwrap();
                    prop_assert!(status.held && status.index == index, "{status:?}");
                    prop_assert!(!acquired.unwrap().success);
                    let released = released.unwrap();
                    let renewed = renewed.unwrap();
                    if index == 5 {
                        prop_assert_eq!(released.result, ReleaseOutcome::Released);
                        prop_assert_eq!(renewed.result, RenewOutcome::Missing);
                    } else {
                        prop_assert_eq!(released.result, ReleaseOutcome::Conflict);
                        prop_assert_eq!(released.index, index);
                        prop_assert_eq!(renewed.result, RenewOutcome::Conflict);
                    }
                }
            }
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("{e}\n{}", server.log());
    }
}

/// Ids of 100 kB (and up to the limit) are ordinary ids.
#[tokio::test]
async fn a_100_kb_id_is_an_ordinary_id() {
    let server = RedisServer::start();
    let locks = redfour::Client::builder(server.url()).build().unwrap();
    let id = "{'\n]]".repeat(20_000);
    assert!(id.len() >= 100_000);
    let got = locks
        .acquire_lock(&id, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(got.success);
    assert!(exists(&server, &format!("lock:{id}")));
    let status = locks.status(&id).await.unwrap();
    assert_eq!(status.index, got.index);
    let released = locks.release_lock(&id, got.index).await.unwrap();
    assert_eq!(released.result, ReleaseOutcome::Released);
}
