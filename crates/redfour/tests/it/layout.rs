//! The wire layout shared with Node redfour: key, counter and channel names per namespace,
//! the release message, holder metadata in the lock hash, and locks written by Node.

use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use redfour::ReleaseOutcome;
use redfour_test::RedisServer;

use crate::common::{self, client, exists, pttl, stored_index, strings};

const TTL: Duration = Duration::from_secs(10);

#[tokio::test]
async fn namespaces_isolate_and_follow_the_node_layout() {
    let server = RedisServer::start();
    let alpha = common::builder(&server).namespace("alpha").build().unwrap();
    let beta = common::builder(&server).namespace("beta").build().unwrap();
    assert_eq!(alpha.namespace(), "alpha");

    // A plain redis subscriber, as a Node process would listen.
    let raw = redis::Client::open(server.url()).unwrap();
    let mut pubsub = raw.get_async_pubsub().await.unwrap();
    for channel in ["alpha-release", "beta-release", "lock-release"] {
        pubsub.subscribe(channel).await.unwrap();
    }
    let mut messages = pubsub.into_on_message();

    let a = alpha
        .lock("shared-name")
        .ttl(TTL)
        .try_acquire()
        .await
        .unwrap()
        .expect("free in alpha");
    let b = beta
        .lock("shared-name")
        .ttl(TTL)
        .try_acquire()
        .await
        .unwrap()
        .expect("the same id in another namespace is another lock");

    assert_eq!(
        stored_index(&server, "alpha:shared-name"),
        Some(a.index().to_string())
    );
    assert_eq!(
        stored_index(&server, "beta:shared-name"),
        Some(b.index().to_string())
    );
    assert_eq!(
        common::text(&server, &["GET", "alphaindex"]),
        Some(a.index().to_string())
    );
    assert_eq!(
        common::text(&server, &["GET", "betaindex"]),
        Some(b.index().to_string())
    );
    assert_eq!(
        common::text(&server, &["TYPE", "alpha:shared-name"]).as_deref(),
        Some("hash")
    );
    let mut keys = strings(&server, &["KEYS", "*"]);
    keys.sort();
    assert_eq!(
        keys,
        [
            "alpha:shared-name",
            "alphaindex",
            "beta:shared-name",
            "betaindex"
        ]
    );

    assert_eq!(a.release().await.unwrap().result, ReleaseOutcome::Released);
    let msg = tokio::time::timeout(Duration::from_secs(5), messages.next())
        .await
        .expect("no release message")
        .expect("subscription closed");
    assert_eq!(msg.get_channel_name(), "alpha-release");
    assert_eq!(msg.get_payload::<String>().unwrap(), "alpha:shared-name");
    assert!(
        exists(&server, "beta:shared-name"),
        "beta's lock was touched"
    );

    assert_eq!(b.release().await.unwrap().result, ReleaseOutcome::Released);
    let msg = tokio::time::timeout(Duration::from_secs(5), messages.next())
        .await
        .expect("no release message")
        .expect("subscription closed");
    assert_eq!(msg.get_channel_name(), "beta-release");
    assert_eq!(msg.get_payload::<String>().unwrap(), "beta:shared-name");
}

#[tokio::test]
async fn a_waiter_in_another_namespace_is_not_woken() {
    let server = RedisServer::start();
    let alpha = common::builder(&server).namespace("alpha").build().unwrap();
    let beta = common::builder(&server).namespace("beta").build().unwrap();

    let held_a = alpha.acquire_lock("x", TTL).await.unwrap();
    let held_b = beta.acquire_lock("x", TTL).await.unwrap();
    assert!(held_a.success && held_b.success);

    // alpha's release frees nothing in beta.
    alpha.release_lock("x", held_a.index).await.unwrap();
    let waited = beta
        .wait_acquire_lock("x", TTL, Some(Duration::from_millis(300)))
        .await
        .unwrap();
    assert!(!waited.success, "{waited:?}");
}

#[tokio::test]
async fn status_reports_the_holder() {
    let server = RedisServer::start();
    let locks = client(&server);

    let free = locks.status("report").await.unwrap();
    assert!(!free.held, "{free:?}");
    assert_eq!(free.index, -1);
    assert_eq!(free.ttl, None);
    assert!(free.holder.is_empty());

    let before = SystemTime::now() - Duration::from_secs(2);
    let guard = locks
        .lock("report")
        .ttl(TTL)
        .description("nightly report")
        .try_acquire()
        .await
        .unwrap()
        .expect("free lock");
    let after = SystemTime::now() + Duration::from_secs(2);

    let status = locks.status("report").await.unwrap();
    assert_eq!(status.id, "report");
    assert!(status.held);
    assert_eq!(status.index, guard.index());
    let ttl = status.ttl.expect("remaining ttl");
    assert!(ttl > Duration::from_secs(9) && ttl <= TTL, "{status:?}");
    assert!(status.host().is_some_and(|h| !h.is_empty()), "{status:?}");
    assert_eq!(status.pid(), Some(std::process::id()));
    assert_eq!(status.description(), Some("nightly report"));
    let acquired_at = status.acquired_at().expect("acquired_at");
    assert!(
        acquired_at > before && acquired_at < after,
        "{status:?}: acquired_at {acquired_at:?}"
    );
    assert!(!status.holder.contains_key("index"));

    // Seen from another client too, without changing anything.
    let other = client(&server).status("report").await.unwrap();
    assert_eq!(other.index, guard.index());
    assert!(pttl(&server, "lock:report") <= 10_000);

    guard.release().await.unwrap();
    assert!(!locks.status("report").await.unwrap().held);
}

/// A lock taken by Node redfour: a hash with only `index`, and an expiry.
#[tokio::test]
async fn interoperates_with_a_lock_written_by_node() {
    let server = RedisServer::start();
    let locks = client(&server);
    server.cmd(&["HSET", "lock:node", "index", "7"]);
    server.cmd(&["PEXPIRE", "lock:node", "10000"]);

    let status = locks.status("node").await.unwrap();
    assert!(status.held && status.index == 7, "{status:?}");
    assert!(status.holder.is_empty(), "{status:?}");
    assert_eq!(status.host(), None);

    let attempt = locks.acquire_lock("node", TTL).await.unwrap();
    assert!(!attempt.success);
    assert!(attempt.ttl > Duration::from_secs(9), "{attempt:?}");

    // Node's holder releases it the Node way (its index), and a Rust waiter is woken.
    let waiter = tokio::spawn({
        let locks = locks.clone();
        async move {
            locks
                .wait_acquire_lock("node", TTL, Some(Duration::from_secs(5)))
                .await
        }
    });
    let renewed = locks.renew_lock("node", 7, TTL).await.unwrap();
    assert!(renewed.success, "{renewed:?}");
    let released = locks.release_lock("node", 7).await.unwrap();
    assert_eq!(released.result, ReleaseOutcome::Released);
    let lock = waiter.await.unwrap().unwrap();
    assert!(lock.success, "{lock:?}");
    assert!(lock.index > 7);
}

/// Node's layout keeps Node's wire format: the shared counter `{ns}index` never expires
/// (Node redfour's never does), while the fair queue's keys (`{ns}-queue:{id}`,
/// `{ns}-waiters:{id}`), which Node never reads, expire on their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_counter_never_expires_and_the_queue_keys_do() {
    let server = RedisServer::start();
    let holder = common::builder(&server).fair(true).build().unwrap();
    let waiter = common::builder(&server).fair(true).build().unwrap();
    let held = holder
        .lock("queued")
        .ttl(TTL)
        .try_acquire()
        .await
        .unwrap()
        .expect("free lock");
    assert_eq!(
        pttl(&server, "lockindex"),
        -1,
        "Node's counter has no expiry"
    );

    let waiting = common::spawn_waiter(&waiter, "queued", TTL).await;
    assert!(
        redfour_test::wait_until_async(common::DEADLINE, || async {
            exists(&server, "lock-queue:queued") && exists(&server, "lock-waiters:queued")
        })
        .await,
        "the waiter never queued"
    );
    for key in ["lock-queue:queued", "lock-waiters:queued"] {
        let left = pttl(&server, key);
        assert!(left > 0, "`{key}` has no expiry (PTTL {left})");
    }

    // A handoff takes the next index from the counter too.
    let first = held.index();
    let (got, _) = common::hand_over(held, waiting).await;
    assert!(got.index() > first);
    assert_eq!(
        pttl(&server, "lockindex"),
        -1,
        "a handoff gave Node's counter an expiry"
    );
    assert_eq!(
        common::text(&server, &["GET", "lockindex"]),
        Some(got.index().to_string())
    );
    got.release().await.unwrap();
    for key in strings(&server, &["KEYS", "lock*"]) {
        let left = pttl(&server, &key);
        assert!(
            key == "lockindex" || left > 0,
            "`{key}` is left without an expiry (PTTL {left})"
        );
    }
}
