//! Observing locks: `Client::list` on one server, on a cluster and with Redlock (locks,
//! waiters, Node-shaped holders, foreign keys, keys that are not locks), and a waiter's place in
//! the queue from `Client::wait_progress`. Node redfour itself holds a lock in
//! `node_interop::a_node_holder_is_listed`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::{command_calls, exists, int, text, DEADLINE};
use redfour::{Client, Listing, ListingKind};
use redfour_test::{wait_until_async, RedisCluster, RedisServer, SentinelGroup};

/// A client with the fair queue, whatever `REDFOUR_TEST_FAIR` says: these tests count queues.
fn fair_client(server: &RedisServer) -> Client {
    Client::builder(server.url())
        .connect_timeout(Duration::from_secs(1))
        .fair(true)
        .build()
        .expect("valid settings")
}

fn by_id(listings: Vec<Listing>) -> BTreeMap<String, Listing> {
    listings.into_iter().map(|l| (l.id.clone(), l)).collect()
}

/// Spawns a waiter on `id` in its own client and returns once it stands in the queue
/// `queue` at place `place`.
async fn queue_waiter(
    server: &RedisServer,
    id: &str,
    queue: &str,
    place: i64,
) -> (
    Client,
    tokio::task::JoinHandle<redfour::Result<redfour::LockGuard>>,
) {
    let client = fair_client(server);
    let waiter = {
        let client = client.clone();
        let id = id.to_owned();
        tokio::spawn(async move {
            client
                .lock(id)
                .wait(Duration::from_secs(30))
                .acquire()
                .await
        })
    };
    assert!(
        wait_until_async(DEADLINE, || async {
            int(server, &["LLEN", queue]) == place
        })
        .await,
        "the waiter never queued at place {place}"
    );
    (client, waiter)
}

#[tokio::test]
async fn lists_locks_waiters_and_foreign_keys_and_nothing_else() {
    let server = RedisServer::start();
    let locks = fair_client(&server);
    assert_eq!(locks.list().await.unwrap(), Vec::new(), "nothing held");

    let a = locks
        .lock("a")
        .ttl(Duration::from_secs(30))
        .description("nightly report")
        .acquire()
        .await
        .unwrap();
    let bc = locks.lock("b:c").acquire().await.unwrap();
    let (_waiter_client, waiter) = queue_waiter(&server, "a", "lock-queue:a", 1).await;
    // Node redfour's wire format: an index and an expiry, nothing about the holder.
    server.cmd(&["HSET", "lock:node", "index", "5"]);
    server.cmd(&["PEXPIRE", "lock:node", "30000"]);
    // Foreign data where locks are kept, each left as it is.
    server.cmd(&["SET", "lock:string", "x"]);
    server.cmd(&["RPUSH", "lock:list", "x"]);
    server.cmd(&["HSET", "lock:no-index", "owner", "me"]);
    server.cmd(&["HSET", "lock:no-expiry", "index", "3"]);
    server.cmd(&["HSET", "lock:bad-index", "index", "1e3"]);
    server.cmd(&["PEXPIRE", "lock:bad-index", "30000"]);
    let long = "d".repeat(5000);
    server.cmd(&["HSET", "lock:long", "index", "9", "description", &long]);
    server.cmd(&["PEXPIRE", "lock:long", "30000"]);
    // A name that is not UTF-8 can hold no lock (ids are text): foreign, and not read.
    let mut conn = server.connection();
    redis::cmd("SET")
        .arg(b"lock:\xff".as_slice())
        .arg("x")
        .exec(&mut conn)
        .unwrap();
    // Not in the namespace, or not where a lock is kept.
    let other_ns = Client::builder(server.url())
        .namespace("locks")
        .build()
        .unwrap();
    let elsewhere = other_ns.lock("x").acquire().await.unwrap();
    server.cmd(&["SET", "lockx", "y"]);
    assert!(exists(&server, "lockindex") && exists(&server, "lock-waiters:a"));

    let listed = by_id(locks.list().await.unwrap());
    assert_eq!(
        listed.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "a",
            "b:c",
            "bad-index",
            "list",
            "lock:\u{fffd}",
            "long",
            "no-expiry",
            "no-index",
            "node",
            "string"
        ]
    );
    let unreadable = &listed["lock:\u{fffd}"];
    assert_eq!(unreadable.kind, ListingKind::Foreign);
    assert!(unreadable.foreign.as_deref().unwrap().contains("UTF-8"));
    let lock = &listed["a"];
    assert_eq!(lock.kind, ListingKind::Lock);
    assert_eq!(lock.key, "lock:a");
    assert_eq!(lock.index, Some(a.index()));
    assert!(lock.ttl.unwrap() <= Duration::from_secs(30), "{lock:?}");
    assert!(lock.held_for.unwrap() < Duration::from_secs(10), "{lock:?}");
    assert_eq!(lock.waiters, Some(1));
    let holder = lock.holder.as_ref().expect("this library's holder");
    assert_eq!(holder.pid, Some(std::process::id()));
    assert_eq!(holder.description.as_deref(), Some("nightly report"));
    assert!(holder.host.as_deref().is_some_and(|h| !h.is_empty()));
    assert_eq!(listed["b:c"].index, Some(bc.index()));
    assert_eq!(listed["b:c"].waiters, Some(0));
    assert_eq!(listed["b:c"].holder.as_ref().unwrap().description, None);

    let node = &listed["node"];
    assert_eq!((node.kind, node.index), (ListingKind::Lock, Some(5)));
    assert_eq!((&node.holder, node.held_for), (&None, None), "{node:?}");
    let long_holder = listed["long"].holder.as_ref().unwrap();
    assert_eq!(long_holder.description.as_deref(), Some("… (5000 bytes)"));

    for (id, why) in [
        ("string", "a string, not a hash"),
        ("list", "a list, not a hash"),
        ("no-index", "without an index"),
        ("no-expiry", "without expiry"),
        ("bad-index", "not an integer"),
    ] {
        let foreign = &listed[id];
        assert_eq!(foreign.kind, ListingKind::Foreign, "{foreign:?}");
        assert!(
            foreign.foreign.as_deref().unwrap().contains(why),
            "{foreign:?}"
        );
        assert_eq!(
            (foreign.index, foreign.ttl, foreign.waiters),
            (None, None, None)
        );
    }
    // Read, never touched; found with SCAN, never KEYS, and no hash read whole.
    assert_eq!(text(&server, &["GET", "lock:string"]).as_deref(), Some("x"));
    assert_eq!(int(&server, &["PTTL", "lock:no-expiry"]), -1);
    assert_eq!(
        text(&server, &["HGET", "lock:long", "description"]),
        Some(long)
    );
    assert_eq!(command_calls(&server, "keys"), 0);
    assert_eq!(command_calls(&server, "hgetall"), 0);
    assert!(command_calls(&server, "scan") >= 2);

    waiter.abort();
    elsewhere.release().await.unwrap();
    bc.release().await.unwrap();
    a.release().await.unwrap();
}

/// Thousands of keys, most of them not locks: every lock is listed once, in several `SCAN`
/// steps, and nothing else is.
#[tokio::test]
async fn a_large_namespace_is_listed_whole_in_steps() {
    let server = RedisServer::start();
    // 3,000 locks in Node's format, 1,000 foreign strings where locks are kept, 3,000 keys
    // of other namespaces; written by the server itself in one call.
    let script = "for i = 1, 3000 do \
                    redis.call('HSET', 'lock:held-' .. i, 'index', tostring(i)) \
                    redis.call('PEXPIRE', 'lock:held-' .. i, 600000) \
                    redis.call('SET', 'other:' .. i, 'x') \
                  end \
                  for i = 1, 1000 do redis.call('SET', 'lock:odd-' .. i, 'x') end \
                  return 1";
    server.cmd(&["EVAL", script, "0"]);
    let locks = fair_client(&server);
    let listed = locks.list().await.unwrap();
    assert_eq!(listed.len(), 4000);
    let held: Vec<&Listing> = listed
        .iter()
        .filter(|l| l.kind == ListingKind::Lock)
        .collect();
    assert_eq!(held.len(), 3000);
    assert!(held
        .iter()
        .all(|l| l.id.starts_with("held-") && l.index.is_some()));
    let mut indexes: Vec<i64> = held.iter().filter_map(|l| l.index).collect();
    indexes.sort_unstable();
    indexes.dedup();
    assert_eq!(indexes.len(), 3000, "each lock once");
    assert!(
        command_calls(&server, "scan") >= 7,
        "7,000 keys need several steps"
    );
}

#[tokio::test]
async fn unreachable_redis_is_unavailable() {
    let mut server = RedisServer::start();
    let url = server.url();
    server.stop();
    let locks = Client::builder(url)
        .connect_timeout(Duration::from_millis(300))
        .reconnect_retries(0)
        .build()
        .unwrap();
    let err = locks.list().await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
}

#[tokio::test]
async fn a_cluster_is_listed_on_every_master() {
    let cluster = RedisCluster::start(3, 0);
    let locks = Client::cluster(cluster.seed_urls())
        .connect_timeout(Duration::from_secs(1))
        .fair(true)
        .build()
        .unwrap();
    let mut guards = Vec::new();
    let mut owners = std::collections::BTreeSet::new();
    for n in 0..12 {
        let id = format!("job-{n}");
        owners.insert(cluster.master_of_slot(cluster.key_slot(&format!("{{lock:{id}}}"))));
        guards.push(locks.lock(id).acquire().await.unwrap());
    }
    assert_eq!(owners.len(), 3, "12 locks spread over the 3 masters");
    let waiter_client = Client::cluster(cluster.seed_urls())
        .fair(true)
        .build()
        .unwrap();
    let waiter = {
        let client = waiter_client.clone();
        tokio::spawn(async move {
            client
                .lock("job-0")
                .wait(Duration::from_secs(30))
                .acquire()
                .await
        })
    };
    let queue = "{lock:job-0}:queue";
    let owner = &cluster.nodes()[cluster.master_of_slot(cluster.key_slot(queue))];
    assert!(
        wait_until_async(DEADLINE, || async { int(owner, &["LLEN", queue]) == 1 }).await,
        "the waiter never queued"
    );
    let odd = "{lock:odd";
    cluster.nodes()[cluster.master_of_slot(cluster.key_slot(odd))].cmd(&["SET", odd, "x"]);

    let listed = by_id(locks.list().await.unwrap());
    let ids: Vec<&str> = listed.keys().map(String::as_str).collect();
    let mut expected: Vec<String> = (0..12).map(|n| format!("job-{n}")).collect();
    expected.push("odd".to_owned());
    expected.sort();
    assert_eq!(
        ids, expected,
        "locks and the foreign key; no counter, no queue"
    );
    for (n, guard) in guards.iter().enumerate() {
        let lock = &listed[&format!("job-{n}")];
        assert_eq!(lock.kind, ListingKind::Lock);
        assert_eq!(lock.index, Some(guard.index()));
        assert_eq!(lock.waiters, Some(u64::from(n == 0)), "{lock:?}");
    }
    assert_eq!(listed["odd"].kind, ListingKind::Foreign);
    assert_eq!(listed["odd"].key, odd);

    let progress = waiter_client.wait_progress("job-0").await.unwrap();
    assert_eq!(progress.place, Some(1));
    assert_eq!(progress.lock.unwrap().index, Some(guards[0].index()));
    waiter.abort();
    for guard in guards {
        guard.release().await.unwrap();
    }
}

#[tokio::test]
async fn a_sentinel_master_is_listed() {
    let group = SentinelGroup::start(0, 1);
    let locks = Client::sentinel(group.sentinel_urls(), group.service())
        .build()
        .unwrap();
    let guard = locks.lock("job").acquire().await.unwrap();
    let listed = locks.list().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (listed[0].id.as_str(), listed[0].index),
        ("job", Some(guard.index()))
    );
    assert!(exists(group.master(), "lock:job"));
    guard.release().await.unwrap();
    assert_eq!(locks.list().await.unwrap(), Vec::new());
}

#[tokio::test]
async fn redlock_lists_what_a_majority_holds() {
    let mut servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let locks = Client::redlock(servers.iter().map(RedisServer::url))
        .connect_timeout(Duration::from_millis(500))
        .reconnect_retries(0)
        .build()
        .unwrap();
    let a = locks.lock("a").acquire().await.unwrap();
    let hold = |server: &RedisServer, id: &str, index: &str| {
        let key = format!("lock:{id}");
        server.cmd(&["HSET", &key, "index", index]);
        server.cmd(&["PEXPIRE", &key, "30000"]);
    };
    hold(&servers[0], "one-master", "7");
    hold(&servers[0], "two-masters", "8");
    hold(&servers[1], "two-masters", "8");
    hold(&servers[0], "two-indexes", "9");
    hold(&servers[1], "two-indexes", "10");
    servers[2].cmd(&["SET", "lock:odd", "x"]);

    let listed = by_id(locks.list().await.unwrap());
    assert_eq!(
        listed.keys().map(String::as_str).collect::<Vec<_>>(),
        ["a", "odd", "two-masters"]
    );
    assert_eq!(listed["a"].index, Some(a.index()));
    assert_eq!(listed["a"].waiters, None, "Redlock has no queue");
    assert_eq!(listed["two-masters"].index, Some(8));
    assert_eq!(listed["odd"].kind, ListingKind::Foreign);
    let progress = locks.wait_progress("a").await.unwrap();
    assert_eq!(
        (progress.lock.unwrap().index, progress.place),
        (Some(a.index()), None)
    );

    servers[2].stop();
    let listed = by_id(locks.list().await.unwrap());
    assert!(
        listed.contains_key("a") && !listed.contains_key("odd"),
        "{listed:?}"
    );
    servers[1].stop();
    let err = locks.list().await.unwrap_err();
    assert!(err.is_quorum_lost(), "{err:?}");
}

/// Three waiters queue one after the other behind a holder: each client reads its own
/// waiter's place, and the places move up as the lock is handed on.
#[tokio::test]
async fn each_waiter_reads_its_place_in_the_queue() {
    let server = RedisServer::start();
    let locks = fair_client(&server);
    let held = locks
        .lock("job")
        .description("deploy")
        .acquire()
        .await
        .unwrap();
    let mut waiters = Vec::new();
    for place in 1..=3 {
        waiters.push(queue_waiter(&server, "job", "lock-queue:job", place).await);
    }
    for (n, (client, _)) in waiters.iter().enumerate() {
        let progress = client.wait_progress("job").await.unwrap();
        assert_eq!(progress.place, Some(n as u64 + 1));
        let lock = progress.lock.expect("held");
        assert_eq!(lock.index, Some(held.index()));
        assert_eq!(lock.waiters, Some(3));
        let holder = lock.holder.expect("recorded");
        assert_eq!(holder.description.as_deref(), Some("deploy"));
    }
    // A client that does not wait has no place.
    assert_eq!(locks.wait_progress("job").await.unwrap().place, None);
    assert!(locks
        .wait_progress("")
        .await
        .unwrap_err()
        .is_invalid_input());

    held.release().await.unwrap();
    let (first_client, first) = waiters.remove(0);
    let guard = tokio::time::timeout(DEADLINE, first)
        .await
        .expect("handed over in time")
        .unwrap()
        .unwrap();
    assert_eq!(first_client.wait_progress("job").await.unwrap().place, None);
    let (second_client, _) = &waiters[0];
    let progress = second_client.wait_progress("job").await.unwrap();
    assert_eq!(progress.place, Some(1));
    assert_eq!(progress.lock.unwrap().index, Some(guard.index()));
    for (_, waiter) in waiters {
        waiter.abort();
    }
    guard.release().await.unwrap();
}
