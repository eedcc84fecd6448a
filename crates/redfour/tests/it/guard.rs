//! The held lock: its lease deadline on the monotonic clock, keep-alive, the `lost()` signal,
//! explicit renewal, release on drop, and a release that finds someone else's lock.

use std::time::{Duration, Instant};

use redfour::{LeaseLost, ReleaseOutcome, RenewOutcome};
use redfour_test::RedisServer;

use crate::common::{client, exists, pttl, stored_index, wait_gone, DEADLINE};

/// The documented drift margin: 1% of the ttl plus 2 ms.
fn drift(ttl: Duration) -> Duration {
    ttl / 100 + Duration::from_millis(2)
}

#[tokio::test]
async fn deadline_is_counted_from_the_send_minus_drift() {
    let server = RedisServer::start();
    let locks = client(&server);
    let ttl = Duration::from_secs(2);

    let before = Instant::now();
    let guard = locks
        .lock("deadline")
        .ttl(ttl)
        .try_acquire()
        .await
        .unwrap()
        .expect("free lock");
    let after = Instant::now();

    let deadline = guard.deadline();
    assert!(
        deadline >= before + ttl - drift(ttl),
        "deadline {:?} before the earliest possible send",
        (before + ttl).saturating_duration_since(deadline)
    );
    assert!(
        deadline <= after + ttl - drift(ttl),
        "deadline later than the answer + ttl - drift"
    );
    assert!(deadline <= Instant::now() + ttl);
    assert!(guard.remaining() <= ttl - drift(ttl));
    assert_eq!(guard.ttl(), ttl);
    assert_eq!(guard.id(), "deadline");
    assert!(guard.acquired_immediately());
    assert!(!guard.is_lost());
    assert_eq!(guard.lost_reason(), None);
    assert_eq!(
        stored_index(&server, "lock:deadline"),
        Some(guard.index().to_string())
    );
    assert_eq!(
        guard.release().await.unwrap().result,
        ReleaseOutcome::Released
    );
}

#[tokio::test]
async fn renew_moves_the_deadline() {
    let server = RedisServer::start();
    let locks = client(&server);
    let guard = locks
        .lock("renewed")
        .ttl(Duration::from_secs(1))
        .try_acquire()
        .await
        .unwrap()
        .expect("free lock");
    let first = guard.deadline();

    let before = Instant::now();
    let renewed = guard.renew().await.unwrap();
    assert_eq!(renewed.result, RenewOutcome::Renewed);
    assert_eq!(renewed.index, guard.index());
    assert!(
        guard.deadline() > first,
        "a renewal did not move the deadline"
    );

    // A longer ttl for one renewal moves it further, and the server's expiry with it.
    let longer = Duration::from_secs(10);
    let renewed = guard.renew_with(longer).await.unwrap();
    assert!(renewed.success, "{renewed:?}");
    assert!(guard.deadline() >= before + longer - drift(longer));
    assert!(guard.deadline() <= Instant::now() + longer);
    assert!(pttl(&server, "lock:renewed") > 9000);

    // Bad input changes nothing.
    let deadline = guard.deadline();
    assert!(guard
        .renew_with(Duration::ZERO)
        .await
        .unwrap_err()
        .is_invalid_input());
    assert_eq!(guard.deadline(), deadline);
}

#[tokio::test]
async fn keep_alive_holds_a_short_lease_for_long() {
    let server = RedisServer::start();
    let locks = client(&server);
    let guard = locks
        .lock("kept")
        .ttl(Duration::from_millis(300))
        .keep_alive(true)
        .acquire()
        .await
        .unwrap();

    // The test is about time passing: more than three ttls.
    tokio::time::sleep(Duration::from_secs(1)).await;

    assert!(!guard.is_lost(), "{:?}", guard.lost_reason());
    assert!(exists(&server, "lock:kept"), "{}", server.log());
    let left = pttl(&server, "lock:kept");
    assert!(left > 0 && left <= 300, "PTTL {left}");
    assert!(guard.remaining() > Duration::ZERO);
    assert_eq!(
        stored_index(&server, "lock:kept"),
        Some(guard.index().to_string())
    );
    // Still ours: another client cannot take it.
    assert!(client(&server)
        .lock("kept")
        .try_acquire()
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        guard.release().await.unwrap().result,
        ReleaseOutcome::Released
    );
    assert!(!exists(&server, "lock:kept"));
}

#[tokio::test]
async fn lost_fires_missing_when_the_key_is_deleted() {
    let server = RedisServer::start();
    let locks = client(&server);
    let guard = locks
        .lock("deleted")
        .ttl(Duration::from_millis(300))
        .keep_alive(true)
        .acquire()
        .await
        .unwrap();
    let lost = guard.lost();

    server.cmd(&["DEL", "lock:deleted"]);
    let why = tokio::time::timeout(Duration::from_secs(2), lost)
        .await
        .expect("lost() did not fire");
    assert_eq!(why, LeaseLost::Missing);
    assert!(guard.is_lost());
    assert_eq!(guard.lost_reason(), Some(LeaseLost::Missing));
    assert!(!exists(&server, "lock:deleted"), "keep-alive recreated it");
    assert_eq!(
        guard.release().await.unwrap().result,
        ReleaseOutcome::Expired
    );
}

#[tokio::test]
async fn lost_fires_conflict_when_another_holder_took_it() {
    let server = RedisServer::start();
    let locks = client(&server);
    let guard = locks
        .lock("stolen")
        .ttl(Duration::from_millis(300))
        .keep_alive(true)
        .acquire()
        .await
        .unwrap();

    server.cmd(&["DEL", "lock:stolen"]);
    let thief = client(&server)
        .acquire_lock("stolen", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(thief.success);

    let why = tokio::time::timeout(Duration::from_secs(2), guard.lost())
        .await
        .expect("lost() did not fire");
    assert_eq!(why, LeaseLost::Conflict);
    assert_eq!(
        stored_index(&server, "lock:stolen"),
        Some(thief.index.to_string())
    );
}

#[tokio::test]
async fn lost_fires_expired_at_the_deadline_without_keep_alive() {
    let server = RedisServer::start();
    let locks = client(&server);
    let guard = locks
        .lock("lapsing")
        .ttl(Duration::from_millis(300))
        .acquire()
        .await
        .unwrap();
    let deadline = guard.deadline();

    let why = tokio::time::timeout(Duration::from_secs(2), guard.lost())
        .await
        .expect("lost() did not fire");
    let fired = Instant::now();
    assert_eq!(why, LeaseLost::Expired);
    assert!(fired >= deadline, "fired before the deadline");
    assert!(
        fired < deadline + Duration::from_millis(200),
        "fired {:?} after the deadline",
        fired - deadline
    );
    assert!(guard.is_lost());
    assert_eq!(guard.lost_reason(), Some(LeaseLost::Expired));
    assert_eq!(guard.remaining(), Duration::ZERO);
}

#[tokio::test]
async fn dropping_a_guard_releases_it_in_the_background() {
    let server = RedisServer::start();
    let locks = client(&server);
    let guard = locks
        .lock("dropped")
        .ttl(Duration::from_secs(30))
        .keep_alive(true)
        .acquire()
        .await
        .unwrap();
    assert!(exists(&server, "lock:dropped"));

    drop(guard);
    assert!(
        wait_gone(&server, "lock:dropped", DEADLINE).await,
        "the dropped guard's lock is still there"
    );
    // Released, not expired: a waiter can take it at once.
    assert!(locks.lock("dropped").try_acquire().await.unwrap().is_some());
}

#[tokio::test]
async fn release_after_someone_else_took_the_lock_is_a_conflict() {
    let server = RedisServer::start();
    let locks = client(&server);
    let other = client(&server);
    let guard = locks
        .lock("taken")
        .ttl(Duration::from_secs(10))
        .acquire()
        .await
        .unwrap();

    // The lease ended (simulated by deleting the key) and another holder took the lock.
    server.cmd(&["DEL", "lock:taken"]);
    let theirs = other
        .lock("taken")
        .ttl(Duration::from_secs(10))
        .try_acquire()
        .await
        .unwrap()
        .expect("free after the delete");

    let released = guard.release().await.unwrap();
    assert!(!released.success, "{released:?}");
    assert_eq!(released.result, ReleaseOutcome::Conflict);
    assert_eq!(released.index, theirs.index());
    assert_eq!(
        stored_index(&server, "lock:taken"),
        Some(theirs.index().to_string()),
        "the other holder's lock was touched"
    );
    assert!(pttl(&server, "lock:taken") > 9000);
    assert_eq!(
        theirs.release().await.unwrap().result,
        ReleaseOutcome::Released
    );
}

#[tokio::test]
async fn a_guard_from_a_wait_was_not_immediate() {
    let server = RedisServer::start();
    let locks = client(&server);
    let first = locks
        .lock("queue")
        .ttl(Duration::from_millis(200))
        .acquire()
        .await
        .unwrap();
    let second = locks
        .lock("queue")
        .wait(Duration::from_secs(5))
        .acquire()
        .await
        .unwrap();
    assert!(first.acquired_immediately());
    assert!(!second.acquired_immediately());
    assert!(second.index() > first.index());
    // The first guard's lease is over, and its release leaves the second alone.
    assert!(first.is_lost());
    assert_eq!(
        first.release().await.unwrap().result,
        ReleaseOutcome::Conflict
    );
    assert!(exists(&server, "lock:queue"));
}

/// `renew_with` sets the guard's ttl: `ttl()` reports it, and keep-alive renews with it from
/// then on (it used to go on with the acquire's ttl, silently undoing `renew_with`).
#[tokio::test]
async fn renew_with_sets_the_ttl_that_keep_alive_renews_with() {
    let server = RedisServer::start();
    let locks = client(&server);
    let short = Duration::from_millis(300);
    let long = Duration::from_secs(3);
    let guard = locks
        .lock("renewed-longer")
        .ttl(short)
        .keep_alive(true)
        .acquire()
        .await
        .unwrap();
    assert_eq!(guard.ttl(), short);

    let renewed = guard.renew_with(long).await.unwrap();
    assert_eq!(renewed.result, RenewOutcome::Renewed);
    assert_eq!(guard.ttl(), long);

    // The next keep-alive renewal (a third of the new ttl later) keeps the new ttl.
    let renewals = locks.stats().renewals;
    assert!(
        redfour_test::wait_until_async(DEADLINE, || async { locks.stats().renewals > renewals })
            .await,
        "keep-alive never renewed: {:?}",
        locks.stats()
    );
    let left = pttl(&server, "lock:renewed-longer");
    assert!(
        left > short.as_millis() as i64,
        "keep-alive renewed with the acquire's ttl: PTTL {left} ms"
    );
    assert_eq!(guard.ttl(), long);
    assert!(!guard.is_lost(), "{:?}", guard.lost_reason());

    // And `renew` renews with it too.
    assert_eq!(guard.renew().await.unwrap().result, RenewOutcome::Renewed);
    assert!(pttl(&server, "lock:renewed-longer") > short.as_millis() as i64);
    guard.release().await.unwrap();
}

/// `stats().renewals` counts the guard's successful renewals, explicit and keep-alive.
#[tokio::test]
async fn stats_count_renewals() {
    let server = RedisServer::start();
    let locks = client(&server);
    assert_eq!(locks.stats(), redfour::Stats::default());
    let guard = locks
        .lock("counted")
        .ttl(Duration::from_secs(5))
        .try_acquire()
        .await
        .unwrap()
        .expect("free lock");
    assert_eq!(locks.stats().renewals, 0);
    guard.renew().await.unwrap();
    assert_eq!(locks.stats().renewals, 1);
    // Clones share the counters.
    assert_eq!(locks.clone().stats().renewals, 1);

    let kept = locks
        .lock("counted-kept")
        .ttl(Duration::from_millis(300))
        .keep_alive(true)
        .acquire()
        .await
        .unwrap();
    assert!(
        redfour_test::wait_until_async(DEADLINE, || async { locks.stats().renewals >= 3 }).await,
        "keep-alive renewals not counted: {:?}",
        locks.stats()
    );
    let stats = locks.stats();
    assert_eq!((stats.renewal_failures, stats.leases_lost), (0, 0));
    kept.release().await.unwrap();
    guard.release().await.unwrap();
}

/// `stats().leases_lost` counts a lease lost by deleting the key, once per guard.
#[tokio::test]
async fn stats_count_a_lease_lost_once() {
    let server = RedisServer::start();
    let locks = client(&server);
    let guard = locks
        .lock("counted-lost")
        .ttl(Duration::from_millis(300))
        .keep_alive(true)
        .acquire()
        .await
        .unwrap();
    assert_eq!(locks.stats().leases_lost, 0);

    server.cmd(&["DEL", "lock:counted-lost"]);
    let why = tokio::time::timeout(DEADLINE, guard.lost())
        .await
        .expect("lost() did not fire");
    assert_eq!(why, LeaseLost::Missing);
    assert_eq!(locks.stats().leases_lost, 1);

    // Later renewals that find it missing again, and the deadline passing, count no more.
    assert_eq!(guard.renew().await.unwrap().result, RenewOutcome::Missing);
    tokio::time::timeout(DEADLINE, guard.lost())
        .await
        .expect("lost() resolves again");
    assert_eq!(locks.stats().leases_lost, 1);
    drop(guard);
}
