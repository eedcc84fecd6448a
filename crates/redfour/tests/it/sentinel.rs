//! Redis Sentinel on real processes started by the test kit (a master, its replica and three
//! `redis-sentinel`s): the client follows the master the sentinels name through `SENTINEL
//! FAILOVER` and a killed master, for commands, renewals and waiters; `WAIT` acknowledgements.

use std::time::{Duration, Instant};

use crate::common::{self, hand_over, spawn_waiter, value_text, DEADLINE};
use redfour::Client;
use redfour_test::{wait_until_async, RedisServer, SentinelGroup};

fn sentinel_builder(group: &SentinelGroup) -> redfour::ClientBuilder {
    Client::sentinel(group.sentinel_urls(), group.service())
        .connect_timeout(Duration::from_secs(1))
        .response_timeout(Duration::from_secs(2))
        .fair(common::fair_mode())
}

fn stored_index(group: &SentinelGroup, id: &str) -> Option<i64> {
    value_text(
        &group
            .master()
            .cmd(&["HGET", &format!("lock:{id}"), "index"]),
    )
    .map(|s| s.parse().expect("a numeric index"))
}

fn pttl(group: &SentinelGroup, id: &str) -> i64 {
    match group.master().cmd(&["PTTL", &format!("lock:{id}")]) {
        redis::Value::Int(ms) => ms,
        other => panic!("PTTL: {other:?}"),
    }
}

/// A client of the group whose acquires wait (up to 2 s) for the replica's acknowledgement.
fn acked_client(group: &SentinelGroup) -> Client {
    sentinel_builder(group)
        .replica_acks(1, Duration::from_secs(2))
        .build()
        .expect("valid settings")
}

/// The lock `id`, taken by `client` for `ttl` and renewed in the background.
async fn hold(client: &Client, id: &str, ttl: Duration) -> redfour::LockGuard {
    client
        .lock(id)
        .ttl(ttl)
        .keep_alive(true)
        .acquire()
        .await
        .expect("acquired")
}

/// Polls until the lock's expiry on the current master moves forward (a renewal reached it).
async fn renewed_on_master(group: &SentinelGroup, id: &str) -> bool {
    let first = pttl(group, id);
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if pttl(group, id) > first {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn locks_go_to_the_master_the_sentinels_name() {
    let group = SentinelGroup::start(1, 3);
    let client = acked_client(&group);
    client.ping().await.unwrap();
    let guard = client.lock("job").acquire().await.unwrap();
    assert_eq!(stored_index(&group, "job"), Some(guard.index()));
    // Acknowledged by the replica before the acquire returned.
    let replica = group
        .servers()
        .iter()
        .enumerate()
        .find(|(i, _)| *i != group.master_index())
        .map(|(_, s)| s)
        .expect("a replica");
    let on_replica = value_text(&replica.cmd(&["HGET", "lock:job", "index"]));
    assert_eq!(on_replica, Some(guard.index().to_string()));
    let status = client.status("job").await.unwrap();
    assert_eq!(status.index, guard.index());
    guard.release().await.unwrap();
    assert!(!client.status("job").await.unwrap().held);

    // More acknowledgements than there are replicas: released and reported.
    let demanding = sentinel_builder(&group)
        .replica_acks(2, Duration::from_millis(200))
        .build()
        .unwrap();
    let err = demanding.lock("job").try_acquire().await.unwrap_err();
    assert_eq!(err.kind(), redfour::ErrorKind::NotReplicated, "{err}");
    assert!(err.to_string().contains("1 of the 2 replicas"), "{err}");
    assert!(
        wait_until_async(DEADLINE, || async {
            group.master().cmd(&["EXISTS", "lock:job"]) == redis::Value::Int(0)
        })
        .await,
        "the unacknowledged lock was not released"
    );
}

/// `SENTINEL FAILOVER` while a lock is held and another client waits for it: the holder keeps
/// the lock and its renewals reach the new master; the waiter keeps waiting and gets the lock
/// when the holder releases it on the new master.
// The kit's failover blocks the test's thread: the library's tasks need worker threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_keeps_the_holder_and_the_waiter() {
    let group = SentinelGroup::start(1, 3);
    let holder = acked_client(&group);
    let waiter = sentinel_builder(&group)
        .max_poll_interval(Duration::from_secs(2))
        .build()
        .unwrap();
    let ttl = Duration::from_secs(5);
    let guard = hold(&holder, "job", ttl).await;
    let waiting = spawn_waiter(&waiter, "job", Duration::from_secs(90)).await;
    let old = group.master_index();
    let new = group.failover();
    assert_ne!(old, new);
    assert_eq!(stored_index(&group, "job"), Some(guard.index()));
    assert!(
        renewed_on_master(&group, "job").await,
        "no renewal reached the new master\n{}",
        group.logs()
    );
    assert!(!guard.is_lost(), "{:?}", guard.lost_reason());
    assert!(!waiting.is_finished(), "the waiter took a held lock");
    let (got, took) = hand_over(guard, waiting).await;
    assert!(
        took < Duration::from_secs(4),
        "waited {took:?} after the release"
    );
    assert_eq!(stored_index(&group, "job"), Some(got.index()));
    got.release().await.unwrap();
}

/// The master is killed: the sentinels promote the replica (which acknowledged the lock), and
/// the holder's renewals and release go there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_is_followed() {
    let mut group = SentinelGroup::start(1, 3);
    let client = acked_client(&group);
    let ttl = Duration::from_secs(8);
    let guard = hold(&client, "job", ttl).await;
    let old = group.kill_master();
    let new = group.wait_for_new_master(old);
    assert_ne!(old, new);
    // Acknowledged before the acquire returned, so the promoted replica has it.
    assert_eq!(stored_index(&group, "job"), Some(guard.index()));
    assert!(
        renewed_on_master(&group, "job").await,
        "no renewal reached the new master\n{}",
        group.logs()
    );
    assert!(!guard.is_lost(), "{:?}", guard.lost_reason());
    let other = sentinel_builder(&group).build().unwrap();
    assert!(other.lock("job").try_acquire().await.unwrap().is_none());
    guard.release().await.unwrap();
    let again = other.lock("job").try_acquire().await.unwrap();
    assert!(again.expect("free again").index() > 0);
}

/// A waiter that waits through the death of the master (while the sentinels name none, their
/// answer is a transient error) gets the lock from the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_waits_through_a_killed_master() {
    let mut group = SentinelGroup::start(1, 3);
    let holder = acked_client(&group);
    let waiter = sentinel_builder(&group)
        .max_poll_interval(Duration::from_millis(500))
        .build()
        .unwrap();
    let guard = hold(&holder, "job", Duration::from_secs(8)).await;
    let waiting = spawn_waiter(&waiter, "job", Duration::from_secs(60)).await;
    let old = group.kill_master();
    group.wait_for_new_master(old);
    assert!(
        !waiting.is_finished(),
        "the waiter ended: {:?}",
        waiting.await
    );
    guard.release().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("the waiter got the lock")
        .unwrap()
        .expect("acquired after the failover");
    assert_eq!(stored_index(&group, "job"), Some(got.index()));
}

/// With `replica_acks`, a lock handed to a waiter by a fair release counts only once its claim
/// was acknowledged: without a replica, the waiter never gets it (it is passed on), and the
/// acknowledgement's `WAIT` does not hold up the client's other commands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledgements_cover_handoffs_and_do_not_block_other_commands() {
    let server = RedisServer::start();
    let plain = common::client(&server);
    let acked = common::builder(&server)
        .fair(true)
        .replica_acks(1, Duration::from_millis(1500))
        .build()
        .unwrap();
    // An acquire waiting for an acknowledgement that cannot come...
    let a = acked.clone();
    let blocked = tokio::spawn(async move { a.lock("other").try_acquire().await });
    assert!(
        wait_until_async(DEADLINE, || async {
            common::text(&server, &["INFO", "clients"])
                .is_some_and(|info| info.contains("blocked_clients:1"))
        })
        .await,
        "the acquire never waited"
    );
    // ...does not hold up a status on the same client.
    let started = Instant::now();
    assert!(!acked.status("unrelated").await.unwrap().held);
    assert!(
        started.elapsed() < Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );
    let err = blocked.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), redfour::ErrorKind::NotReplicated, "{err}");

    // A handoff to a waiter that asks for acknowledgements is not a lock until acknowledged.
    let guard = plain
        .lock("job")
        .ttl(Duration::from_secs(30))
        .acquire()
        .await
        .unwrap();
    let waiting = spawn_waiter(&acked, "job", Duration::from_secs(3)).await;
    guard.release().await.unwrap();
    let result = waiting.await.unwrap();
    assert!(
        result.is_err(),
        "acquired without an acknowledgement: {result:?}"
    );
    assert!(
        wait_until_async(DEADLINE, || async {
            !plain.status("job").await.unwrap().held
        })
        .await,
        "the unacknowledged handoff was not passed on"
    );
}

#[test]
fn bad_settings_are_refused() {
    let err = Client::sentinel(Vec::<String>::new(), "svc")
        .build()
        .unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
    let err = Client::sentinel(["redis://127.0.0.1:1"], "")
        .build()
        .unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
}

/// A master with a password behind sentinels without one: the client logs in to the master
/// (and to the promoted replica after a failover) with `master_credentials`; without them it
/// gets a clear authentication error. The password never shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_with_its_own_password() {
    let group = SentinelGroup::start_with_password(1, 3, "m4ster-secret");
    let anonymous = sentinel_builder(&group).build().unwrap();
    let err = anonymous.ping().await.unwrap_err();
    assert!(!err.is_invalid_input(), "{err:?}");
    let client = sentinel_builder(&group)
        .master_credentials(None, "m4ster-secret")
        .build()
        .unwrap();
    assert!(!format!("{client:?}").contains("m4ster-secret"));
    let guard = client.lock("job").acquire().await.unwrap();
    assert_eq!(stored_index(&group, "job"), Some(guard.index()));
    guard.release().await.unwrap();
    let new = group.failover();
    assert_eq!(group.master_index(), new);
    let guard = client.lock("job").acquire().await.unwrap();
    assert_eq!(stored_index(&group, "job"), Some(guard.index()));
    guard.release().await.unwrap();
    for topology in [redfour::Topology::Cluster, redfour::Topology::Redlock] {
        let err = Client::builder_with_topology(topology, ["redis://127.0.0.1:1"])
            .master_credentials(None, "x")
            .build()
            .unwrap_err();
        assert!(err.is_invalid_input(), "{err}");
    }
}

/// A user whose ACL lacks `WAIT`: the acquire won by the script is released and the refusal
/// reported (not taken for corrupt data), with nothing left behind.
#[tokio::test]
async fn a_refused_wait_releases_the_lock() {
    let server = RedisServer::start();
    server.cmd(&[
        "ACL", "SETUSER", "nowait", "on", ">pw", "~*", "&*", "+@all", "-wait",
    ]);
    let client = Client::builder(format!("redis://nowait:pw@127.0.0.1:{}/", server.port()))
        .replica_acks(1, Duration::from_millis(100))
        .build()
        .unwrap();
    let err = client.lock("job").try_acquire().await.unwrap_err();
    assert_eq!(err.kind(), redfour::ErrorKind::AccessDenied, "{err:?}");
    assert!(!err.is_corrupt_data());
    assert_eq!(server.cmd(&["EXISTS", "lock:job"]), redis::Value::Int(0));
}

/// A mistyped service name: every sentinel answers that it does not know it, so a wait without
/// a limit (by a library user who did not `ping` first) ends within seconds with
/// `UnknownService`. With one of the sentinels unreachable, that one might know the name: the
/// error stays transient, and a bounded wait keeps trying to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mistyped_service_ends_a_wait_without_limit_at_once() {
    let group = SentinelGroup::start(0, 2);
    let typo = format!("{}-typo", group.service());
    let builder = |urls: Vec<String>| {
        Client::sentinel(urls, typo.as_str())
            .connect_timeout(Duration::from_secs(1))
            .response_timeout(Duration::from_secs(2))
            .fair(common::fair_mode())
            .build()
            .unwrap()
    };
    let locks = builder(group.sentinel_urls());
    let started = Instant::now();
    let err = tokio::time::timeout(DEADLINE, locks.lock("x").acquire())
        .await
        .expect("still waiting")
        .unwrap_err();
    let took = started.elapsed();
    assert!(err.is_unknown_service(), "{err:?}");
    assert!(!err.is_transient(), "{err:?}");
    assert!(err.to_string().contains(&typo), "{err}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    let err = tokio::time::timeout(
        DEADLINE,
        locks.wait_acquire_lock("x", Duration::from_secs(1), None),
    )
    .await
    .expect("still waiting")
    .unwrap_err();
    assert!(err.is_unknown_service(), "{err:?}");

    // A sentinel that cannot be reached.
    let mut gone = RedisServer::start();
    let gone_url = gone.url();
    gone.stop();
    let mut urls = group.sentinel_urls();
    urls.push(gone_url);
    let locks = builder(urls);
    let started = Instant::now();
    let err = locks
        .lock("x")
        .wait(Duration::from_secs(2))
        .acquire()
        .await
        .unwrap_err();
    assert!(err.is_unavailable() && err.is_transient(), "{err:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "gave up early: {err:?}"
    );
}

/// The master's password wrong (the sentinels' is right): a wait without a limit ends within
/// seconds with `AccessDenied`, and the password shows nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_master_password_ends_a_wait_without_limit_at_once() {
    let group = SentinelGroup::start_with_password(0, 1, "m4ster-secret");
    let locks = sentinel_builder(&group)
        .master_credentials(None, "wr0ng-secret")
        .build()
        .unwrap();
    let started = Instant::now();
    let err = tokio::time::timeout(DEADLINE, locks.lock("x").acquire())
        .await
        .expect("still waiting")
        .unwrap_err();
    assert!(err.is_access_denied(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "{err:?}");
    assert!(!format!("{err:?}").contains("wr0ng-secret"), "{err:?}");
}
