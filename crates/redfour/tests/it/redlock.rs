//! Redlock over independent masters, on real servers: 3 and 5 masters, masters killed and
//! restarted, a minority cut off behind the test kit's proxy, a lost quorum.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::{hand_over, int, spawn_waiter, text, Contenders};
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

/// A Redlock client whose masters may take `node_timeout` per step.
fn patient_client(urls: impl IntoIterator<Item = String>, node_timeout: Duration) -> Client {
    Client::redlock(urls)
        .connect_timeout(Duration::from_secs(3))
        .response_timeout(Duration::from_secs(3))
        .reconnect_retries(0)
        .node_timeout(node_timeout)
        .build()
        .expect("valid settings")
}

/// Stalls every client of `server` for `ms` (including new connections and the test kit's own
/// commands: leave that server alone until then).
fn stall(server: &RedisServer, ms: u64) {
    server.cmd(&["CLIENT", "PAUSE", &ms.to_string(), "ALL"]);
}

/// Whether the lock `id` is gone from `server` within a few seconds (polled without blocking
/// the runtime, whose background releases are awaited).
async fn released_on(server: &RedisServer, id: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if int(server, &["EXISTS", &format!("lock:{id}")]) == 0 {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The wait is a bound: a stalled master (one of three) does not stretch it, neither by the
/// node timeout of each attempt (the two others decide a held lock at once) nor by the node
/// timeout of the attempt made when the wait runs out.
#[tokio::test]
async fn a_stalled_minority_does_not_stretch_a_bounded_wait() {
    let servers = masters(3);
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let holder = client_of(&servers);
    let guard = holder
        .lock("k")
        .ttl(Duration::from_secs(30))
        .try_acquire()
        .await
        .unwrap()
        .expect("free");
    stall(&servers[2], 5_000);
    // Each master may take 3 s: without the bound, the first attempt alone takes that long.
    let waiter = patient_client(urls.clone(), Duration::from_secs(3));
    let started = Instant::now();
    let err = waiter
        .lock("k")
        .wait(Duration::from_secs(1))
        .acquire()
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(err.is_not_acquired(), "{err:?}");
    assert!(took < Duration::from_millis(1_800), "took {took:?}");
    let other = patient_client(urls, Duration::from_secs(3));
    let started = Instant::now();
    let answer = other
        .wait_acquire_lock(
            "k",
            Duration::from_millis(300),
            Some(Duration::from_secs(1)),
        )
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(!answer.success, "{answer:?}");
    assert!(took < Duration::from_millis(1_800), "took {took:?}");
    drop(guard);
}

/// An attempt that the answers in so far leave open (one master granted, one found the lock
/// held, the third is stalled) is cut off when the wait runs out, not at the node timeout;
/// the grant is released.
#[tokio::test]
async fn an_open_attempt_is_cut_off_when_the_wait_runs_out() {
    let servers = masters(3);
    // Held on the second master only (a stray lock of an earlier holder).
    let stray = Client::new(&servers[1].url()).unwrap();
    assert!(
        stray
            .acquire_lock("k", Duration::from_secs(30))
            .await
            .unwrap()
            .success
    );
    stall(&servers[2], 5_000);
    let waiter = patient_client(servers.iter().map(RedisServer::url), Duration::from_secs(3));
    let started = Instant::now();
    let err = waiter
        .lock("k")
        .wait(Duration::from_secs(1))
        .acquire()
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(err.is_not_acquired(), "{err:?}");
    assert!(took < Duration::from_millis(1_800), "took {took:?}");
    assert!(
        released_on(&servers[0], "k").await,
        "the first master's grant was kept"
    );
}

/// A stalled master (one of three) is not waited for once the two others granted the lock
/// (beyond a quarter of its validity): a short ttl is still won, by a one-shot acquire and by
/// a wait, and the lease has most of its validity left.
#[tokio::test]
async fn a_stalled_minority_does_not_eat_a_short_ttl() {
    let servers = masters(3);
    let node_timeout = Duration::from_millis(500);
    let client = patient_client(servers.iter().map(RedisServer::url), node_timeout);
    client.ping().await.unwrap();
    stall(&servers[2], 4_000);
    // Waiting for the stalled master (its node timeout) would leave a 300 ms ttl no validity:
    // an error. The bounds on the time taken say the same with room for a loaded machine.
    let ttl = Duration::from_millis(300);
    let started = Instant::now();
    let answer = client.acquire_lock("short", ttl).await.unwrap();
    assert!(answer.success, "{answer:?} after {:?}", started.elapsed());
    assert!(started.elapsed() < node_timeout, "{:?}", started.elapsed());
    let started = Instant::now();
    let answer = client
        .wait_acquire_lock("shorter", ttl, Some(Duration::from_secs(1)))
        .await
        .unwrap();
    assert!(answer.success && answer.immediate, "{answer:?}");
    assert!(started.elapsed() < node_timeout, "{:?}", started.elapsed());
    let guard = client
        .lock("guarded")
        .ttl(ttl)
        .wait(Duration::from_secs(1))
        .acquire()
        .await
        .unwrap();
    assert!(guard.remaining() > ttl / 3, "{guard:?}");
}

/// A master that grants after the attempt stopped waiting for it (the two others decided it)
/// does not keep a stray lock: the abandoned request is cleaned up behind it.
#[tokio::test]
async fn a_late_grant_of_a_stalled_master_is_released() {
    let servers = masters(3);
    let client = patient_client(
        servers.iter().map(RedisServer::url),
        Duration::from_millis(300),
    );
    client.ping().await.unwrap();
    stall(&servers[2], 1_000);
    let guard = client
        .lock("late")
        .ttl(Duration::from_secs(30))
        .try_acquire()
        .await
        .unwrap()
        .expect("2 of 3 grant");
    // Once the stall is over, the third master runs the acquire it was sent, then the cleanup.
    assert!(
        released_on(&servers[2], "late").await,
        "{}",
        servers[2].log()
    );
    assert_eq!(stored_index(&servers[0], "late"), Some(guard.index()));
    assert_eq!(stored_index(&servers[1], "late"), Some(guard.index()));
    guard.release().await.unwrap();
}

/// A majority granted the lock, but only after its validity had run out (one master slow,
/// one stalled): that is `ValidityExpired`, not "held by another", from every entry point;
/// a wait retries until its end and reports it; nothing stays held.
#[tokio::test]
async fn a_majority_granted_too_late_is_validity_expired() {
    let servers = masters(3);
    let proxies: Vec<Proxy> = servers
        .iter()
        .map(|s| {
            let addr: SocketAddr = format!("127.0.0.1:{}", s.port()).parse().unwrap();
            Proxy::start(addr).unwrap()
        })
        .collect();
    let client = patient_client(proxies.iter().map(Proxy::url), Duration::from_secs(2));
    client.ping().await.unwrap();
    proxies[1].set_reply_delay(Duration::from_millis(400));
    proxies[2].set_black_hole(true);
    let ttl = Duration::from_millis(300);

    // One id per entry point: the slow master's releases of one do not hold up the next.
    let err = client.acquire_lock("slow1", ttl).await.unwrap_err();
    assert!(err.is_validity_expired(), "{err:?}");
    assert!(!err.is_not_acquired(), "{err:?}");
    assert!(err.to_string().contains("nobody holds it"), "{err}");
    let err = client
        .lock("slow2")
        .ttl(ttl)
        .try_acquire()
        .await
        .unwrap_err();
    assert!(err.is_validity_expired(), "{err:?}");

    let started = Instant::now();
    let err = client
        .wait_acquire_lock("slow3", ttl, Some(Duration::from_secs(1)))
        .await
        .unwrap_err();
    assert!(err.is_validity_expired(), "{err:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_millis(1_800),
        "took {took:?}"
    );
    let err = client
        .lock("slow4")
        .ttl(ttl)
        .wait(Duration::from_millis(500))
        .acquire()
        .await
        .unwrap_err();
    assert!(err.is_validity_expired(), "{err:?}");

    for id in ["slow1", "slow2", "slow3", "slow4"] {
        assert!(
            released_on(&servers[0], id).await,
            "{id}: {}",
            servers[0].log()
        );
        assert!(
            released_on(&servers[1], id).await,
            "{id}: {}",
            servers[1].log()
        );
    }
    proxies[1].set_reply_delay(Duration::ZERO);
    proxies[2].set_black_hole(false);
}

/// A ttl that the drift margin eats whole (1% + 2 ms by default) can never be held with
/// Redlock: every entry point refuses it as invalid input instead of failing every time (or,
/// for a wait, succeeding by luck with a lease already over).
#[tokio::test]
async fn ttls_without_validity_are_invalid_input() {
    let servers = masters(3);
    let client = client_of(&servers);
    for ms in [1, 2] {
        let ttl = Duration::from_millis(ms);
        let err = client.acquire_lock("tiny", ttl).await.unwrap_err();
        assert!(err.is_invalid_input(), "{ms} ms: {err:?}");
        assert!(err.to_string().contains("too short for Redlock"), "{err}");
        let err = client
            .wait_acquire_lock("tiny", ttl, Some(Duration::from_millis(500)))
            .await
            .unwrap_err();
        assert!(err.is_invalid_input(), "{ms} ms: {err:?}");
        let err = client
            .lock("tiny")
            .ttl(ttl)
            .try_acquire()
            .await
            .unwrap_err();
        assert!(err.is_invalid_input(), "{ms} ms: {err:?}");
        let err = client
            .lock("tiny")
            .ttl(ttl)
            .wait(Duration::from_millis(500))
            .acquire()
            .await
            .unwrap_err();
        assert!(err.is_invalid_input(), "{ms} ms: {err:?}");
    }
    // Nothing was sent.
    for server in &servers {
        assert_eq!(int(server, &["EXISTS", "lock:tiny", "lockindex"]), 0);
    }
    // 3 ms leaves a validity (under 1 ms): valid input, held or not by the round trips.
    match client.acquire_lock("tiny", Duration::from_millis(3)).await {
        Ok(_) => {}
        Err(e) => assert!(e.is_validity_expired(), "{e:?}"),
    }
    // The margin is the configured one.
    let wide = Client::redlock(servers.iter().map(RedisServer::url))
        .clock_drift(0.1, Duration::from_millis(100))
        .build()
        .unwrap();
    let err = wide
        .acquire_lock("wide", Duration::from_millis(110))
        .await
        .unwrap_err();
    assert!(err.is_invalid_input(), "{err:?}");
    assert!(
        wide.acquire_lock("wide", Duration::from_secs(1))
            .await
            .unwrap()
            .success
    );
}
