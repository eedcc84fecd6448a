//! Redlock over independent masters, on real servers: 3 and 5 masters, masters killed and
//! restarted, a minority cut off behind the test kit's proxy, a lost quorum.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{hand_over, int, spawn_waiter, text, Contenders};
use redfour::Client;
use redfour_test::{Proxy, RedisServer};

fn masters(n: usize) -> Vec<RedisServer> {
    (0..n).map(|_| RedisServer::start()).collect()
}

fn redlock_client(urls: impl IntoIterator<Item = String>) -> Client {
    Client::redlock(urls)
        .connect_timeout(Duration::from_millis(500))
        .response_timeout(Duration::from_secs(2))
        .reconnect_retries(0)
        .node_timeout(Duration::from_millis(300))
        .build()
        .expect("valid settings")
}

fn client_of(servers: &[RedisServer]) -> Client {
    redlock_client(servers.iter().map(RedisServer::url))
}

/// The index stored in the lock hash on `server`, if any.
fn stored_index(server: &RedisServer, id: &str) -> Option<i64> {
    text(server, &["HGET", &format!("lock:{id}"), "index"]).map(|s| s.parse().expect("a number"))
}

#[tokio::test]
async fn three_masters_one_holder_one_index_everywhere() {
    let servers = masters(3);
    let a = client_of(&servers);
    let b = client_of(&servers);
    let guard = a
        .lock("job")
        .ttl(Duration::from_secs(10))
        .try_acquire()
        .await
        .unwrap();
    let guard = guard.expect("a free lock is granted");
    assert!(b.lock("job").try_acquire().await.unwrap().is_none());
    // Every master stores the one index the holder uses.
    for server in &servers {
        assert_eq!(
            stored_index(server, "job"),
            Some(guard.index()),
            "{}",
            server.log()
        );
        let pttl = int(server, &["PTTL", "lock:job"]);
        assert!(pttl > 9_000 && pttl <= 10_000, "pttl {pttl}");
        // And its counter is at least that index.
        let counter: i64 = text(server, &["GET", "lockindex"])
            .unwrap()
            .parse()
            .unwrap();
        assert!(counter >= guard.index());
    }
    let status = b.status("job").await.unwrap();
    assert!(status.held);
    assert_eq!(status.index, guard.index());
    // The lease is counted from before the requests: validity ≤ ttl − drift.
    assert!(guard.remaining() <= Duration::from_secs(10) - Duration::from_millis(102));
    let released = guard.release().await.unwrap();
    assert_eq!(released.result, redfour::ReleaseOutcome::Released);
    for server in &servers {
        assert_eq!(int(server, &["EXISTS", "lock:job"]), 0);
    }
    assert!(!b.status("job").await.unwrap().held);
}

/// The largest index granted is adopted, and the granting masters' counters are raised to it,
/// so a later majority without the master that granted it still issues a larger index.
#[tokio::test]
async fn fencing_indexes_increase_across_majorities() {
    let mut servers = masters(3);
    // One master's counter runs far ahead of the others'.
    let ahead = 8_000_000_000_000_000_i64;
    servers[0].cmd(&["SET", "lockindex", &ahead.to_string()]);
    let client = client_of(&servers);
    let first = client
        .lock("fence")
        .try_acquire()
        .await
        .unwrap()
        .expect("granted");
    assert_eq!(first.index(), ahead + 1);
    first.release().await.unwrap();
    // Without that master, the other two still grant above it: their counters were raised.
    servers[0].stop();
    let mut last = ahead + 1;
    for _ in 0..5 {
        let guard = client
            .lock("fence")
            .try_acquire()
            .await
            .unwrap()
            .expect("granted by 2 of 3");
        assert!(guard.index() > last, "{} after {last}", guard.index());
        last = guard.index();
        guard.release().await.unwrap();
    }
    servers[0].restart();
    let guard = client.lock("fence").acquire().await.unwrap();
    assert!(guard.index() > last);
}

#[tokio::test]
async fn a_minority_down_is_tolerated_and_a_majority_down_is_a_clear_error() {
    let mut servers = masters(5);
    let client = client_of(&servers);
    servers[1].stop();
    servers[3].stop();
    let guard = client
        .lock("five")
        .try_acquire()
        .await
        .unwrap()
        .expect("3 of 5 grant");
    assert_eq!(
        guard.renew().await.unwrap().result,
        redfour::RenewOutcome::Renewed
    );
    // A third master down: the lock can neither be renewed nor taken.
    servers[4].stop();
    let err = guard.renew().await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(err.to_string().contains("quorum"), "{err}");
    drop(guard);
    let err = client.lock("other").try_acquire().await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(
        err.to_string()
            .contains("2 of 5 masters answered, and a majority is 3"),
        "{err}"
    );
    assert!(client.ping().await.is_err());
    // A bounded wait keeps trying, then reports the quorum loss.
    let started = Instant::now();
    let err = client
        .lock("other")
        .wait(Duration::from_millis(800))
        .acquire()
        .await
        .unwrap_err();
    assert!(err.is_unavailable() || err.is_not_acquired(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Masters back (empty): the quorum is back.
    servers[1].restart();
    servers[4].restart();
    let guard = client.lock("other").acquire().await.unwrap();
    guard.release().await.unwrap();
    client.ping().await.unwrap();
}

/// A master that stops answering (black-holed, not refused) costs one node timeout and is
/// outvoted; the lease still counts from before the requests.
#[tokio::test]
async fn a_partitioned_minority_is_outvoted() {
    let servers = masters(3);
    let proxies: Vec<Proxy> = servers
        .iter()
        .map(|s| {
            let addr: SocketAddr = format!("127.0.0.1:{}", s.port()).parse().unwrap();
            Proxy::start(addr).unwrap()
        })
        .collect();
    let client = redlock_client(proxies.iter().map(Proxy::url));
    client.ping().await.unwrap();
    proxies[2].set_black_hole(true);
    let started = Instant::now();
    let guard = client
        .lock("cut")
        .ttl(Duration::from_secs(5))
        .try_acquire()
        .await
        .unwrap()
        .expect("2 of 3 grant");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "took {took:?}");
    // validity = ttl − elapsed − drift: counted from before the requests, not from the answer.
    let drift = Duration::from_millis(52);
    assert!(guard.deadline() <= Instant::now() + Duration::from_secs(5) - drift);
    assert!(guard.deadline() >= started + Duration::from_secs(5) - drift);
    assert_eq!(stored_index(&servers[0], "cut"), Some(guard.index()));
    assert_eq!(stored_index(&servers[1], "cut"), Some(guard.index()));
    // Another client cannot take it while two masters hold it.
    let other = redlock_client(proxies.iter().map(Proxy::url));
    assert!(other.lock("cut").try_acquire().await.unwrap().is_none());
    // Two masters cut off: no quorum.
    proxies[1].set_black_hole(true);
    let err = other.lock("cut2").try_acquire().await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    proxies[1].set_black_hole(false);
    proxies[2].set_black_hole(false);
    guard.release().await.unwrap();
}

/// A waiter is woken by the holder's release (a notice from any master), long before the ttl.
#[tokio::test]
async fn waiters_are_woken_by_a_release() {
    let servers = masters(3);
    let holder = client_of(&servers);
    let waiter = Client::redlock(servers.iter().map(RedisServer::url))
        .max_poll_interval(Duration::from_secs(30))
        .build()
        .unwrap();
    let guard = holder
        .lock("wake")
        .ttl(Duration::from_secs(30))
        .acquire()
        .await
        .unwrap();
    let waiting = spawn_waiter(&waiter, "wake", Duration::from_secs(20)).await;
    let (got, took) = hand_over(guard, waiting).await;
    assert!(took < Duration::from_secs(3), "woken after {took:?}");
    assert!(!got.acquired_immediately());
}

/// Contention on 3 masters: at most one holder at a time, indexes strictly increase.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contention_keeps_exclusion() {
    let servers = masters(3);
    let contenders = Contenders::start((0..4).map(|_| client_of(&servers)).collect(), "busy");
    assert!(
        contenders.progress(40, Duration::from_secs(60)).await,
        "no progress"
    );
    assert!(contenders.stop().await >= 40);
}

#[test]
fn bad_settings_are_refused() {
    let err = Client::redlock(Vec::<String>::new()).build().unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
    let err = Client::redlock(["redis://127.0.0.1:1"])
        .replica_acks(1, Duration::from_millis(10))
        .build()
        .unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
    let err =
        Client::builder_with_topology(redfour::Topology::Standalone, ["redis://a", "redis://b"])
            .build()
            .unwrap_err();
    assert!(err.to_string().contains("takes one"), "{err}");
}

/// The drift margin is configurable: validity = ttl − elapsed − (share × ttl + fixed).
#[tokio::test]
async fn the_drift_margin_is_configurable() {
    let servers = masters(3);
    let client = Client::redlock(servers.iter().map(RedisServer::url))
        .clock_drift(0.1, Duration::from_millis(100))
        .build()
        .unwrap();
    let started = Instant::now();
    let guard = client
        .lock("drift")
        .ttl(Duration::from_secs(5))
        .try_acquire()
        .await
        .unwrap()
        .expect("free");
    let margin = Duration::from_millis(600);
    assert!(guard.deadline() <= Instant::now() + Duration::from_secs(5) - margin);
    assert!(guard.deadline() >= started + Duration::from_secs(5) - margin);
    guard.release().await.unwrap();
    for share in [-0.1, 0.5, f64::NAN] {
        let err = Client::redlock(["redis://127.0.0.1:1"])
            .clock_drift(share, Duration::ZERO)
            .build()
            .unwrap_err();
        assert!(err.is_invalid_input(), "{share}: {err}");
    }
}

/// Foreign data at the key on the masters is `CorruptData`, not a retryable quorum loss: a
/// wait does not spin on it.
#[tokio::test]
async fn foreign_data_is_corrupt_data_not_a_lost_quorum() {
    let servers = masters(3);
    for server in &servers {
        server.cmd(&["SET", "lock:job", "not a lock"]);
    }
    let client = client_of(&servers);
    let err = client.lock("job").try_acquire().await.unwrap_err();
    assert!(err.is_corrupt_data(), "{err:?}");
    let started = Instant::now();
    let err = client
        .lock("job")
        .wait(Duration::from_secs(5))
        .acquire()
        .await
        .unwrap_err();
    assert!(err.is_corrupt_data(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    for server in &servers {
        assert_eq!(
            text(server, &["GET", "lock:job"]).as_deref(),
            Some("not a lock")
        );
    }
}

/// Foreign data on one master and another master down still leave a majority possible once
/// the second is back: that is a lost quorum (retryable), not a lasting error.
#[tokio::test]
async fn foreign_data_on_a_minority_is_not_lasting() {
    let mut servers = masters(3);
    servers[0].cmd(&["SET", "lock:job", "not a lock"]);
    servers[1].stop();
    let client = client_of(&servers);
    let err = client.lock("job").try_acquire().await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    servers[1].restart();
    // (The third master's grant from the failed attempt is released in the background.)
    let guard = client
        .lock("job")
        .wait(Duration::from_secs(5))
        .acquire()
        .await;
    assert!(
        guard.is_ok(),
        "2 of 3 grant once the second master is back: {guard:?}"
    );
}
