//! Redis Cluster on real servers started by the test kit: the hash-tag layout on many slots,
//! sharded notices between clients, a busy lock's slot resharded mid-run, and `CLUSTER
//! FAILOVER` under a held lock.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::common::{fair_mode, hand_over, spawn_waiter, value_text, Contenders, DEADLINE};
use redfour::Client;
use redfour_test::{wait_until_async, RedisCluster};

fn cluster_builder(cluster: &RedisCluster) -> redfour::ClientBuilder {
    Client::cluster(cluster.seed_urls())
        .connect_timeout(Duration::from_secs(1))
        .response_timeout(Duration::from_secs(3))
        .fair(fair_mode())
}

fn cluster_client(cluster: &RedisCluster) -> Client {
    cluster_builder(cluster).build().expect("valid settings")
}

/// Runs a command on the master that serves `key`.
fn on_owner(cluster: &RedisCluster, key: &str, args: &[&str]) -> redis::Value {
    let owner = cluster.master_of_slot(cluster.key_slot(key));
    cluster.nodes()[owner].cmd(args)
}

fn stored_index(cluster: &RedisCluster, id: &str) -> Option<i64> {
    let key = format!("{{lock:{id}}}");
    value_text(&on_owner(cluster, &key, &["HGET", &key, "index"]))
        .map(|s| s.parse().expect("a numeric index"))
}

#[tokio::test]
async fn locks_on_many_slots_keep_every_key_in_one_slot() {
    let cluster = RedisCluster::start(3, 0);
    let a = cluster_client(&cluster);
    let b = cluster_client(&cluster);
    let mut owners = BTreeSet::new();
    let mut guards = Vec::new();
    for n in 0..30 {
        let id = format!("job-{n}");
        let guard = a.lock(&id).try_acquire().await.unwrap().expect("free");
        assert!(b.lock(&id).try_acquire().await.unwrap().is_none());
        let key = format!("{{lock:{id}}}");
        owners.insert(cluster.master_of_slot(cluster.key_slot(&key)));
        assert_eq!(stored_index(&cluster, &id), Some(guard.index()));
        // The counter is the lock's own, beside it.
        let counter = format!("{key}:index");
        let stored = value_text(&on_owner(&cluster, &counter, &["GET", &counter]));
        assert_eq!(stored, Some(guard.index().to_string()));
        guards.push(guard);
    }
    assert_eq!(owners.len(), 3, "30 locks should spread over the 3 masters");
    for guard in guards {
        assert_eq!(
            guard.release().await.unwrap().result,
            redfour::ReleaseOutcome::Released
        );
    }
    assert!(!b.status("job-7").await.unwrap().held);
    // Fencing indexes increase per lock.
    let mut last = 0;
    for _ in 0..5 {
        let guard = a.lock("fenced").acquire().await.unwrap();
        assert!(guard.index() > last);
        last = guard.index();
        guard.release().await.unwrap();
    }
}

/// A waiter in another client (its own connections and subscription) is woken by the release,
/// long before the holder's ttl or its own poll interval.
#[tokio::test]
async fn waiters_in_other_clients_are_woken_on_each_slot() {
    let cluster = RedisCluster::start(3, 0);
    let holder = cluster_client(&cluster);
    let waiter = cluster_builder(&cluster)
        .max_poll_interval(Duration::from_secs(30))
        .build()
        .unwrap();
    for id in ["alpha", "beta", "gamma", "delta"] {
        let guard = holder
            .lock(id)
            .ttl(Duration::from_secs(30))
            .acquire()
            .await
            .unwrap();
        let waiting = spawn_waiter(&waiter, id, Duration::from_secs(20)).await;
        let (got, took) = hand_over(guard, waiting).await;
        assert!(took < Duration::from_secs(3), "{id}: woken after {took:?}");
        got.release().await.unwrap();
        assert!(wait_until_async(DEADLINE, || async { waiter.stats().waiters == 0 }).await);
    }
}

/// Three clients contend for one lock while its slot moves to another master (keys migrated
/// under them: `ASK`, `TRYAGAIN`, then `MOVED`): never two holders, indexes keep increasing,
/// every round completes, and a waiter is still woken by a release afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_lock_survives_resharding() {
    let cluster = RedisCluster::start(3, 0);
    let key = "{lock:busy}";
    let slot = cluster.key_slot(key);
    let source = cluster.master_of_slot(slot);
    let target = (source + 1) % 3;
    let contenders = Contenders::start((0..3).map(|_| cluster_client(&cluster)).collect(), "busy");
    assert!(
        contenders.progress(20, Duration::from_secs(30)).await,
        "no progress before the migration"
    );
    // As `redis-cli --cluster reshard` does: mark the slot, move its keys, hand the slot over,
    // all while the contenders run. Meanwhile a script whose keys are split between the nodes,
    // or missing on the importing node, gets TRYAGAIN (or ASK) and is retried.
    let migration = cluster.begin_migration(slot, target);
    migration.move_keys();
    migration.finish();
    assert_eq!(cluster.master_of_slot(slot), target);
    assert!(
        contenders.progress(20, Duration::from_secs(30)).await,
        "no progress after the migration"
    );
    contenders.stop().await;
    // The lock's keys live on the new master now.
    let queued = cluster.nodes()[target].cmd(&["EXISTS", "{lock:busy}:index"]);
    assert_eq!(queued, redis::Value::Int(1));

    // Notices still arrive: the waiter's sharded subscription follows the slot.
    let holder = cluster_client(&cluster);
    let waiter = cluster_builder(&cluster)
        .max_poll_interval(Duration::from_secs(30))
        .build()
        .unwrap();
    let guard = holder
        .lock("busy")
        .ttl(Duration::from_secs(30))
        .acquire()
        .await
        .unwrap();
    let waiting = spawn_waiter(&waiter, "busy", Duration::from_secs(20)).await;
    let (_got, took) = hand_over(guard, waiting).await;
    assert!(took < Duration::from_secs(3), "woken after {took:?}");
}

/// `CLUSTER FAILOVER` of the master that holds a lock (acknowledged by its replica first):
/// the holder keeps it, its renewals go to the new master, and it can release there.
// The kit's failover blocks the test's thread: the library's tasks need worker threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lock_survives_a_cluster_failover() {
    let cluster = RedisCluster::start(3, 1);
    let client = cluster_builder(&cluster)
        .replica_acks(1, Duration::from_secs(2))
        .build()
        .unwrap();
    // Renewals every third of the ttl: a failover must not stall them for two thirds of it.
    let ttl = Duration::from_secs(5);
    let guard = client
        .lock("steady")
        .ttl(ttl)
        .keep_alive(true)
        .acquire()
        .await
        .unwrap();
    let key = "{lock:steady}";
    let slot = cluster.key_slot(key);
    let master = cluster.master_of_slot(slot);
    let replica = cluster
        .replica_indexes()
        .into_iter()
        .find(|r| cluster.master_of(*r) == Some(master))
        .expect("every master has a replica");
    cluster.failover(replica);
    assert_eq!(cluster.master_of_slot(slot), replica);
    assert_eq!(stored_index(&cluster, "steady"), Some(guard.index()));
    // Renewals (every third of the ttl) reach the new master: its expiry moves forward.
    let pttl = |cluster: &RedisCluster| match on_owner(cluster, key, &["PTTL", key]) {
        redis::Value::Int(ms) => ms,
        other => panic!("PTTL: {other:?}"),
    };
    let first = pttl(&cluster);
    let mut renewed = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if pttl(&cluster) > first {
            renewed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        renewed,
        "no renewal reached the new master\n{}",
        cluster.logs()
    );
    // A whole ttl after the failover the lease is still held: renewed on the new master.
    tokio::time::sleep(ttl).await;
    assert!(!guard.is_lost(), "{:?}", guard.lost_reason());
    let other = cluster_client(&cluster);
    assert!(other.lock("steady").try_acquire().await.unwrap().is_none());
    assert_eq!(
        guard.release().await.unwrap().result,
        redfour::ReleaseOutcome::Released
    );
    let _again = other
        .lock("steady")
        .try_acquire()
        .await
        .unwrap()
        .expect("free again");
}

#[test]
fn cluster_namespaces_cannot_hold_braces() {
    let err = Client::cluster(["redis://127.0.0.1:1"])
        .namespace("a{b}")
        .build()
        .unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
    assert!(err.to_string().contains("hash tag"), "{err}");
}

/// The README's ACL rule for a cluster: the standalone rule, plus sharded pub/sub, the
/// `{NS:` key and channel patterns, and `cluster|slots` for the cluster client's slot map.
#[tokio::test]
async fn a_user_with_the_documented_cluster_rule_can_do_everything() {
    let cluster = RedisCluster::start(3, 0);
    let rule = "resetkeys ~{lock:* resetchannels &{lock:* -@all \
        +ping +evalsha +script|load +hmget +cluster|slots \
        +time +type +exists +pttl +hget +hgetall +hset +hdel +hexists +pexpire +set +del \
        +rpush +lindex +lpop +lrem +spublish +ssubscribe +sunsubscribe";
    for node in cluster.nodes() {
        let mut args = vec!["ACL", "SETUSER", "locker", "reset", "on", ">locker-pw"];
        args.extend(rule.split_whitespace());
        node.cmd(&args);
    }
    let urls: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|n| format!("redis://locker:locker-pw@127.0.0.1:{}/", n.port()))
        .collect();
    let holder = Client::cluster(urls.clone()).build().unwrap();
    let waiter = Client::cluster(urls)
        .max_poll_interval(Duration::from_secs(30))
        .build()
        .unwrap();
    holder.ping().await.unwrap();
    let guard = holder
        .lock("acl")
        .ttl(Duration::from_secs(30))
        .acquire()
        .await
        .unwrap();
    assert_eq!(
        guard.renew().await.unwrap().result,
        redfour::RenewOutcome::Renewed
    );
    assert!(holder.status("acl").await.unwrap().held);
    let waiting = spawn_waiter(&waiter, "acl", Duration::from_secs(20)).await;
    let (got, took) = hand_over(guard, waiting).await;
    assert!(
        took < Duration::from_secs(3),
        "woken by the notice, after {took:?}"
    );
    got.release().await.unwrap();
    // Nothing was refused along the way.
    for node in cluster.nodes() {
        let redis::Value::Array(log) = node.cmd(&["ACL", "LOG"]) else {
            panic!("ACL LOG");
        };
        assert!(log.is_empty(), "refused: {log:?}");
    }
}

/// Every key of namespace `ns` on master `node`, with its PTTL (SCAN, then PTTL each).
fn keys_with_pttl(node: &redfour_test::RedisServer, ns: &str) -> Vec<(String, i64)> {
    let pattern = format!("{{{ns}:*");
    let mut cursor = "0".to_owned();
    let mut found = Vec::new();
    loop {
        let reply = node.cmd(&["SCAN", &cursor, "MATCH", &pattern, "COUNT", "1000"]);
        let redis::Value::Array(parts) = reply else {
            panic!("SCAN answered {reply:?}");
        };
        let [next, redis::Value::Array(keys)] = &parts[..] else {
            panic!("SCAN answered {parts:?}");
        };
        for key in keys {
            let key = value_text(key).expect("a key name");
            let pttl = match node.cmd(&["PTTL", &key]) {
                redis::Value::Int(ms) => ms,
                other => panic!("PTTL {key}: {other:?}"),
            };
            found.push((key, pttl));
        }
        cursor = value_text(next).expect("a cursor");
        if cursor == "0" {
            return found;
        }
    }
}

/// The cluster layout leaves nothing behind for good: once every lock is released (or dropped,
/// or handed over, or waited for in vain) and its ttl has passed, every key of the namespace
/// left on any master expires, the per-lock fencing counters `{NS:ID}:index` included (they used
/// to stay forever, one per lock id ever used).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_of_a_namespace_is_left_without_an_expiry() {
    const NS: &str = "leak";
    const IDS: usize = 12;
    let ttl = Duration::from_secs(1);
    let cluster = RedisCluster::start(3, 0);
    let a = cluster_builder(&cluster).namespace(NS).build().unwrap();
    let b = cluster_builder(&cluster).namespace(NS).build().unwrap();

    for n in 0..IDS {
        let guard = a
            .lock(format!("id-{n}"))
            .ttl(ttl)
            .try_acquire()
            .await
            .unwrap();
        guard.expect("free lock").release().await.unwrap();
    }
    // Handed over to a waiter in another client (with the fair queue: its queue keys).
    let held = a
        .lock("handed")
        .ttl(ttl)
        .try_acquire()
        .await
        .unwrap()
        .expect("free lock");
    let waiting = spawn_waiter(&b, "handed", Duration::from_secs(10)).await;
    let (got, _) = hand_over(held, waiting).await;
    got.release().await.unwrap();
    // A waiter that gives up, then a holder that lets go.
    let held = a
        .lock("given-up")
        .ttl(ttl)
        .try_acquire()
        .await
        .unwrap()
        .expect("free lock");
    let gave_up = b
        .lock("given-up")
        .ttl(ttl)
        .wait(Duration::from_millis(300))
        .acquire()
        .await;
    assert!(gave_up.is_err(), "{gave_up:?}");
    held.release().await.unwrap();
    // A guard dropped (released in the background), and one left to expire on the server.
    drop(
        a.lock("dropped")
            .ttl(ttl)
            .try_acquire()
            .await
            .unwrap()
            .expect("free lock"),
    );
    let expired = a.acquire_lock("expired", ttl).await.unwrap();
    assert!(expired.success);
    assert!(a.settle(DEADLINE).await && b.settle(DEADLINE).await);

    // Every lock is gone (the last one at the end of its ttl).
    let masters = cluster.master_indexes();
    let locks_left = || {
        masters
            .iter()
            .flat_map(|&m| keys_with_pttl(&cluster.nodes()[m], NS))
            .filter(|(key, _)| key.ends_with('}'))
            .collect::<Vec<_>>()
    };
    assert!(
        wait_until_async(DEADLINE, || async { locks_left().is_empty() }).await,
        "locks left: {:?}",
        locks_left()
    );

    let mut counters = 0;
    for &m in &masters {
        for (key, pttl) in keys_with_pttl(&cluster.nodes()[m], NS) {
            // -2: it expired between SCAN and PTTL.
            assert!(
                pttl > 0 || pttl == -2,
                "master {m}: `{key}` has no expiry (PTTL {pttl})"
            );
            if key.ends_with("}:index") && pttl > 0 {
                counters += 1;
                assert!(pttl <= 3_600_000, "`{key}` lives for {pttl} ms");
            }
        }
    }
    // One counter per lock id (they outlive the locks, so that indexes keep increasing).
    assert_eq!(counters, IDS + 4, "counters found");
}
